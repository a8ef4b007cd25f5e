"""Ingestion throughput: the SciFact corpus written as Markdown files and sent through
`groundwork ingest --wait` in a fresh data directory (the command starts its own Postgres,
Redis and worker: store, queue, parse, chunk, embed, index, everything a person waits for),
against bare embedding of the raw abstracts in this process, in the same run: with
sentence-transformers on torch (what in-memory frameworks do) and with ONNX Runtime.
Prints one table with each time and its ratio to bare torch embedding.

    .venv/bin/python benchmarks/ingest.py [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import Settings
from app.ingest.embed import OnnxEmbedder, TorchEmbedder
from benchmarks.common import ROOT, SCIFACT, load_corpus, machine, table

BATCH = 32


def write_markdown(corpus: list[dict], folder: Path) -> None:
    folder.mkdir(parents=True)
    for doc in corpus:
        (folder / f"{doc['_id']}.md").write_text(f"# {doc['title']}\n\n{doc['text']}\n")


def through_the_cli(folder: Path, data_dir: Path, models: Path) -> tuple[float, dict]:
    """`models`: the ONNX export the bare run made, as an install has it (the Docker image
    exports at build time), so that the one-time export is not timed as ingestion."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "LLM_BASE_URL", "DATA_DIR")
    }
    env.update(DATA_DIR=str(data_dir), MODEL_CACHE_DIR=str(models), LOG_LEVEL="WARNING")
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "app.cli", "ingest", str(folder), "--wait", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=6 * 3600,
    )
    took = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"groundwork ingest failed:\n{run.stderr[-3000:]}")
    return took, json.loads(run.stdout)


def bare(embedder, texts: list[str]) -> float:
    embedder.encode(texts[:64], BATCH)  # warm up
    started = time.perf_counter()
    embedder.encode(texts, BATCH)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=SCIFACT)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    corpus = load_corpus(args.corpus, args.limit)
    raw = [f"{d['title']}\n{d['text']}" for d in corpus]
    with tempfile.TemporaryDirectory(prefix="groundwork-ingest-") as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp) / "bare")  # type: ignore[call-arg]
        torch_s = bare(TorchEmbedder(settings.embedding_model, settings), raw)
        onnx_s = bare(OnnxEmbedder(settings.embedding_model, settings), raw)
        write_markdown(corpus, Path(tmp) / "files")
        cli_s, out = through_the_cli(
            Path(tmp) / "files", Path(tmp) / "data", settings.model_cache_path
        )
    docs = out["documents"]
    indexed = sum(d["status"] == "indexed" for d in docs)
    chunks = sum(d["chunks"] for d in docs)
    n = len(corpus)
    rows = [
        ["bare sentence-transformers (torch), raw abstracts", torch_s, "1.00"],
        ["bare ONNX Runtime, raw abstracts", onnx_s, f"{onnx_s / torch_s:.2f}"],
        ["`groundwork ingest --wait`: start, store, parse, chunk, embed, index", cli_s,
         f"{cli_s / torch_s:.2f}"],
    ]  # fmt: skip
    print(f"machine: {machine()}")
    print(
        f"input: {n} abstracts from {args.corpus} written as Markdown; {indexed} indexed into "
        f"{chunks} chunks; model {settings.embedding_model}, batch {BATCH}; the command "
        f"starts its own Postgres, Redis and a worker with {settings.worker_concurrency} pool "
        "processes in a fresh data directory"
    )
    print(
        table(
            "Ingestion (ratio: time / bare torch embedding of the raw abstracts)",
            ["path", "seconds", "ratio"],
            [[name, f"{s:.1f}", ratio] for name, s, ratio in rows],
        )
    )
    print(f"documents/s through the command: {n / cli_s:.1f}; chunks/s: {chunks / cli_s:.1f}")


if __name__ == "__main__":
    main()
