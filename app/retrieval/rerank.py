"""Cross-encoder reranking (a sentence-transformers CrossEncoder), loaded once per process,
run with ONNX Runtime (exported once, `app.ingest.onnx`) or torch (RERANKER_BACKEND).

The production image bakes `cross-encoder/ms-marco-MiniLM-L-6-v2` into its model cache. Where
`RERANKER_MODEL` cannot be loaded (no package ships a cross-encoder for offline machines),
search runs without it, and `/healthz` and every search response say `off` and why."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.config import Settings, get_settings
from app.ingest import onnx
from app.runtime import configure_threads, model_threads

log = logging.getLogger(__name__)


@dataclass
class Reranker:
    name: str
    score_batch: Callable[[list[str], list[str]], np.ndarray] | None  # None: not loaded
    status: str  # "ok" or "off"
    detail: str

    @property
    def loaded(self) -> bool:
        return self.score_batch is not None

    def score(self, query: str, passages: list[str], batch_size: int = 32) -> np.ndarray:
        assert self.score_batch is not None
        scores = [
            self.score_batch([query] * len(batch), batch)
            for batch in (passages[i : i + batch_size] for i in range(0, len(passages), batch_size))
        ]
        return np.concatenate(scores).astype(np.float64).reshape(len(passages))


def _onnx_scorer(name: str, settings: Settings) -> Callable[[list[str], list[str]], np.ndarray]:
    source = onnx.model_directory(name)
    folder, meta = onnx.cached_export(
        "cross-encoder", source, settings.model_cache_path, onnx.export_cross_encoder(source)
    )
    model = onnx.OnnxModel(folder, meta, model_threads(settings))
    sigmoid = meta["activation"] == "sigmoid"

    def score(queries: list[str], passages: list[str]) -> np.ndarray:
        logits = model.run(queries, passages)[:, 0]
        return 1.0 / (1.0 + np.exp(-logits)) if sigmoid else logits

    return score


def _torch_scorer(name: str, settings: Settings) -> Callable[[list[str], list[str]], np.ndarray]:
    import transformers
    from sentence_transformers import CrossEncoder

    transformers.logging.set_verbosity_error()
    configure_threads(settings)
    model = CrossEncoder(name, device="cpu")

    def score(queries: list[str], passages: list[str]) -> np.ndarray:
        pairs = list(zip(queries, passages, strict=True))
        return np.asarray(model.predict(pairs, show_progress_bar=False), dtype=np.float32)

    return score


def load_reranker(name: str, settings: Settings) -> Reranker:
    if not name:
        return Reranker(name, None, "off", "RERANKER_MODEL is empty")
    load = _onnx_scorer if settings.reranker_backend == "onnx" else _torch_scorer
    try:
        scorer = load(name, settings)
    except Exception as err:  # noqa: BLE001 - any failure means: run without it, and say why
        reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        log.warning("reranker %s not loaded: %s", name, reason)
        return Reranker(name, None, "off", f"{name} could not be loaded: {reason}")
    return Reranker(name, scorer, "ok", f"{name} loaded ({settings.reranker_backend})")


_lock = threading.Lock()
_loaded: dict[str, Reranker] = {}


def get_reranker(name: str | None = None) -> Reranker:
    """The configured reranker, loaded on first use (a failed load is remembered)."""
    name = get_settings().reranker_model if name is None else name
    with _lock:
        if name not in _loaded:
            _loaded[name] = load_reranker(name, get_settings())
        return _loaded[name]
