"""Groundwork: question answering over a team's own documents, with citations."""

import os

# Library defaults that must be set before numpy, torch or huggingface are imported.
# NumPy's BLAS threads fight torch's on small machines (see DESIGN.md): numpy stays on one
# thread, torch's count is set per process in app.runtime. Models are never fetched at run
# time: they ship in packages or are baked into the image (set HF_HUB_OFFLINE=0 to allow it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# torch's OpenMP workers (libgomp) spin 300,000 rounds after each parallel region before they
# sleep, holding the second core while Postgres answers the query that follows the embedding.
# 10,000 rounds: hybrid search p95 at 100,000 chunks 46.5-52.5 -> 38.4-43.6 ms on 2 cores,
# batch embedding unchanged (README, "Quality and cost", Search).
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
