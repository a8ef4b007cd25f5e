"""Comparing generations before a switch: hybrid search in each generation over a collection
whose eval set is configured (a BEIR directory whose corpus was uploaded as `<corpus id>.md`),
scored with nDCG@10, Recall@100 and MRR@10 (pytrec_eval, the reference trec_eval measures)
and stored as an eval run the admin panel shows side by side (scored by
`app.retrieval.evaluation`, as the offline eval runner and the fusion calibration are)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import Chunk, Collection, Document, EvalRun, IndexGeneration
from app.retrieval.evaluation import fused_runs, metrics, read_judgements
from app.retrieval.lexical import BM25Index


def compare_generations(
    session: Session, collection_id: int, generation_ids: list[int], settings: Settings
) -> dict[str, dict[str, float]]:
    """Each generation's metrics on the collection's eval set, by generation id."""
    collection = session.get(Collection, collection_id)
    if collection is None or not collection.eval_set:
        raise ValueError("the collection has no eval set")
    queries, qrels = read_judgements(Path(collection.eval_set))
    results = {}
    for generation_id in generation_ids:
        generation = session.get(IndexGeneration, generation_id)
        if generation is None:
            continue
        rows = session.execute(
            select(
                Chunk.id, Chunk.document_id, Chunk.collection_id, Chunk.lexemes, Document.filename
            )
            .join(Document, Document.id == Chunk.document_id)
            .where(Chunk.generation_id == generation_id, Chunk.collection_id == collection_id)
        ).all()
        index = BM25Index()
        index.add((c, d, col, lex.split()) for c, d, col, lex, _ in rows)
        corpus_id = {c: filename.removesuffix(".md") for c, _, _, _, filename in rows}
        default = {"default": (settings.fusion_method, settings.fusion_dense_weight)}
        runs = fused_runs(
            session, queries, collection_id, corpus_id, default, settings, (generation, index)
        )["default"]
        results[str(generation_id)] = metrics(qrels, runs)
    return results


def record_comparison(
    session: Session, collection_id: int, generation_ids: list[int], settings: Settings
) -> int:
    """Compare, and store the result as an eval run for the panel; returns its id."""
    collection = session.get(Collection, collection_id)
    run = EvalRun(
        kind="compare",
        dataset=collection.name if collection else str(collection_id),
        queries=0,
        settings={"generations": generation_ids, "collection_id": collection_id},
        metrics=compare_generations(session, collection_id, generation_ids, settings),
    )
    session.add(run)
    session.flush()
    return run.id
