"""Retrieval quality: every query through the real search path, in each mode, scored with
pytrec_eval (the reference trec_eval measures) against the data set's judgements."""

from __future__ import annotations

import logging
import time

import numpy as np
from sqlalchemy import select

from app.config import Settings
from app.db import session_scope
from app.models import Chunk, Document, EvalRun
from app.retrieval.calibration import calibrate
from app.retrieval.evaluation import fused_runs, metrics
from app.retrieval.fusion import FusionMethod, fusion_name
from app.retrieval.rerank import get_reranker
from app.retrieval.search import SearchResult, default_fusion, search
from evals.corpus import ensure_corpus
from evals.datasets import RetrievalSet

log = logging.getLogger("evals")
CHUNKS_PER_QUERY = 200  # enough chunks for 100 distinct documents (Recall@100)


def to_documents(result: SearchResult, by_filename: dict[str, str]) -> list[str]:
    """Chunk hits as corpus ids, each at the rank of its best chunk."""
    return list(dict.fromkeys(by_filename[h.document] for h in result.hits))


def modes_to_run(settings: Settings) -> list[str]:
    modes = ["bm25", "dense", "hybrid"]
    if get_reranker(settings.reranker_model).loaded:
        modes.append("hybrid+rerank")
    return modes


def run_retrieval(data: RetrievalSet, settings: Settings, limit: int | None) -> dict:
    collection_id, by_filename = ensure_corpus(
        data.name, data.corpus, data.fingerprint_source, settings
    )
    queries = list(data.queries.items())[:limit] if limit else list(data.queries.items())
    qrels = {q: data.qrels[q] for q, _ in queries}
    report: dict = {"dataset": data.name, "queries": len(queries), "modes": {}}
    with session_scope() as session:  # as the background job would: without the labels
        row = calibrate(session, collection_id, settings)
        fusion = (
            f"{fusion_name(row.method, row.dense_weight)}, from {row.queries} {row.source}"
            if row
            else f"{default_fusion(settings).name}, default"
        )
    report["default_fusion"] = fusion
    for mode in modes_to_run(settings):
        base, rerank = mode.split("+")[0], mode.endswith("+rerank")
        runs: dict[str, list[str]] = {}
        latencies = []
        with session_scope() as session:

            def timed(text: str, base: str = base, rerank: bool = rerank):
                started = time.perf_counter()
                result = search(
                    session,
                    text,
                    mode=base,  # type: ignore[arg-type]
                    k=CHUNKS_PER_QUERY,
                    collections=[collection_id],
                    rerank=rerank,
                )
                return result, (time.perf_counter() - started) * 1000

            timed(queries[0][1])  # warm-up
            for qid, text in queries:
                result, ms = timed(text)
                latencies.append(ms)
                runs[qid] = to_documents(result, by_filename)
        report["modes"][mode] = {
            **metrics(qrels, runs),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p95_ms": round(float(np.percentile(latencies, 95)), 1),
        }
        log.info("%s: %s", mode, report["modes"][mode])
    for name, scores in fusion_metrics(data, settings, limit, FIXED).items():
        report["modes"][f"hybrid, {name}"] = scores
    report["run_id"] = store_run("retrieval", data.name, len(queries), settings, report["modes"])
    return report


def store_run(kind: str, dataset: str, queries: int, settings: Settings, metrics: dict) -> int:
    recorded = {
        name: getattr(settings, name)
        for name in (
            "embedding_model",
            "reranker_model",
            "chunk_tokens",
            "chunk_overlap_tokens",
            "search_k",
            "fusion_method",
            "fusion_dense_weight",
            "fusion_depth",
            "rerank_depth",
            "hnsw_ef_search",
            "llm_model",
        )
    }
    with session_scope() as session:
        run = EvalRun(
            kind=kind, dataset=dataset, queries=queries, settings=recorded, metrics=metrics
        )
        session.add(run)
        session.flush()
        return run.id


# Fixed fusions reported beside the default (`hybrid`), from the same candidates.
FIXED: dict[str, tuple[FusionMethod, float]] = {
    "absolute 0.4": ("absolute", 0.4),
    "weighted 0.5": ("weighted", 0.5),
    "rrf": ("rrf", 0.5),
    "zscore": ("zscore", 0.5),
    "confidence": ("confidence", 0.5),
}
GRID: dict[str, tuple[FusionMethod, float]] = {
    "rrf": ("rrf", 0.5),
    "zscore": ("zscore", 0.5),
    "confidence": ("confidence", 0.5),
    **{
        f"{method} w={w / 10:.1f}": (method, w / 10)
        for method in ("weighted", "absolute")
        for w in range(11)
    },
}


def fusion_metrics(
    data: RetrievalSet,
    settings: Settings,
    limit: int | None,
    fusions: dict[str, tuple[FusionMethod, float]],
) -> dict[str, dict[str, float]]:
    """Metrics of each fusion. The candidates of each query are retrieved once, through the
    search path; each fusion then fuses them the way search does (`fuse`)."""
    collection_id, by_filename = ensure_corpus(
        data.name, data.corpus, data.fingerprint_source, settings
    )
    queries = list(data.queries.items())[:limit] if limit else list(data.queries.items())
    qrels = {q: data.qrels[q] for q, _ in queries}
    with session_scope() as session:
        chunk_doc = _chunk_documents(session, collection_id, by_filename)
        runs = fused_runs(session, dict(queries), collection_id, chunk_doc, fusions, settings)
    return {name: metrics(qrels, run) for name, run in runs.items()}


def tune_fusion(data: RetrievalSet, settings: Settings, limit: int | None) -> dict:
    """nDCG@10 of each fusion method and weight on a tuning set."""
    return fusion_metrics(data, settings, limit, GRID)


def _chunk_documents(session, collection_id: int, by_filename: dict[str, str]) -> dict[int, str]:
    rows = session.execute(
        select(Chunk.id, Document.filename)
        .join(Document, Document.id == Chunk.document_id)
        .where(Document.collection_id == collection_id)
    )
    return {chunk_id: by_filename[filename] for chunk_id, filename in rows}
