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


# How many processes share this machine's cores for model work: a Celery worker with
# WORKER_CONCURRENCY=N runs N pool processes, each gets 1/N of the cores.
_process_share = 1


def share_cores(processes: int) -> None:
    global _process_share
    _process_share = max(1, processes)


def model_threads(settings: Settings) -> int:
    """Threads for a model (torch or ONNX Runtime, OCR included): TORCH_THREADS, or this
    process's share of the cores; numpy's BLAS stays at one (set in app/__init__.py)."""
    return settings.torch_threads or max(1, (os.cpu_count() or 1) // _process_share)


def configure_threads(settings: Settings) -> int:
    """Set torch's thread count. Called where a torch model loads, so processes without
    one never import torch."""
    import torch

    threads = model_threads(settings)
    torch.set_num_threads(threads)
    return threads
