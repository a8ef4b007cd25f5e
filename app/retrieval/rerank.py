"""Cross-encoder reranking (sentence-transformers CrossEncoder), loaded once per process.

The production image bakes `cross-encoder/ms-marco-MiniLM-L-6-v2` into its model cache. Where
`RERANKER_MODEL` cannot be loaded (no package ships a cross-encoder for offline machines),
search runs without it, and `/healthz` and every search response say `off` and why."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.config import get_settings
from app.runtime import configure_threads

log = logging.getLogger(__name__)


@dataclass
class Reranker:
    name: str
    model: Any | None  # a CrossEncoder when loaded
    status: str  # "ok" or "off"
    detail: str

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def score(self, query: str, passages: list[str], batch_size: int = 32) -> np.ndarray:
        assert self.model is not None
        pairs = [(query, p) for p in passages]
        scores = self.model.predict(pairs, batch_size=batch_size, show_progress_bar=False)
        return np.asarray(scores, dtype=np.float64).reshape(len(passages))


def load_reranker(name: str) -> Reranker:
    if not name:
        return Reranker(name, None, "off", "RERANKER_MODEL is empty")
    try:
        import transformers
        from sentence_transformers import CrossEncoder

        transformers.logging.set_verbosity_error()
        configure_threads(get_settings())
        model = CrossEncoder(name if not Path(name).is_dir() else str(Path(name)), device="cpu")
    except Exception as err:  # noqa: BLE001 - any failure means: run without it, and say why
        reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        log.warning("reranker %s not loaded: %s", name, reason)
        return Reranker(name, None, "off", f"{name} could not be loaded: {reason}")
    return Reranker(name, model, "ok", f"{name} loaded")


_lock = threading.Lock()
_loaded: dict[str, Reranker] = {}


def get_reranker(name: str | None = None) -> Reranker:
    """The configured reranker, loaded on first use (a failed load is remembered)."""
    name = get_settings().reranker_model if name is None else name
    with _lock:
        if name not in _loaded:
            _loaded[name] = load_reranker(name)
        return _loaded[name]
