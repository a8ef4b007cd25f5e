"""Per-process set-up: logging and thread counts."""

from __future__ import annotations

import logging
import os
import sys

from app.config import Settings


def configure_logging(settings: Settings) -> None:
    """Logs go to stderr, so that `--json` output on stdout stays one JSON object."""
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for noisy in ("httpx", "httpcore", "urllib3", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def configure_threads(settings: Settings) -> int:
    """Give torch one thread per core (or TORCH_THREADS); numpy's BLAS stays at one (set in
    app/__init__.py). Called where a model loads, so processes without models skip torch."""
    import torch

    threads = settings.torch_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads
