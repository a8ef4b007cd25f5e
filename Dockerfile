# The Groundwork app image (web, worker and migrate in docker-compose.yml).
# Models are fetched here, at build time; at run time nothing is downloaded (HF_HUB_OFFLINE=1).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/opt/models

WORKDIR /srv/groundwork

# OpenCV (under the OCR engine) needs libGL and GLib; the slim image has neither.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# CPU build of torch first: a bare `torch` requirement would pull gigabytes of CUDA.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md alembic.ini ./
COPY app app
COPY worker worker
COPY evals evals
COPY migrations migrations
RUN pip install -e .

ARG EMBEDDING_MODEL=sentence-transformers/all-MiniLM-L6-v2
ARG RERANKER_MODEL=cross-encoder/ms-marco-MiniLM-L-6-v2
RUN HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 python -c "\
from sentence_transformers import CrossEncoder, SentenceTransformer; \
SentenceTransformer('${EMBEDDING_MODEL}'); CrossEncoder('${RERANKER_MODEL}')"
# Both exported to ONNX once, here (the app runs them with ONNX Runtime, without torch).
ENV MODEL_CACHE_DIR=/opt/models/onnx
RUN EMBEDDING_MODEL=${EMBEDDING_MODEL} RERANKER_MODEL=${RERANKER_MODEL} python -m app.ingest.onnx

RUN useradd --create-home --uid 1000 groundwork && mkdir -p /data && chown groundwork /data
USER groundwork
EXPOSE 8000
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
