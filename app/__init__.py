"""Groundwork: question answering over a team's own documents, with citations."""

import os

# Library defaults that must be set before numpy, torch or huggingface are imported.
# NumPy's BLAS threads fight torch's on small machines (see DESIGN.md): numpy stays on one
# thread, torch's count is set per process in app.runtime. Models are never fetched at run
# time: they ship in packages or are baked into the image (set HF_HUB_OFFLINE=0 to allow it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
