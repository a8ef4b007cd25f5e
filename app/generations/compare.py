"""Comparing generations before a switch: hybrid search in each generation over a collection
whose eval set is configured (a BEIR directory whose corpus was uploaded as `<corpus id>.md`),
scored with nDCG@10, Recall@100 and MRR@10 (pytrec_eval, the reference trec_eval measures)
and stored as an eval run the admin panel shows side by side. The offline eval runner
(`evals/`) scores with the same `metrics` and reads BEIR judgements with `read_judgements`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytrec_eval
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import Chunk, Collection, Document, EvalRun, IndexGeneration
from app.retrieval.fusion import fuse
from app.retrieval.lexical import BM25Index
from app.retrieval.search import Clock, retrieve

MEASURES = {"ndcg_cut.10", "recall.100", "recip_rank"}


def metrics(qrels: dict[str, dict[str, int]], runs: dict[str, list[str]]) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10, averaged over the queries."""

    def as_run(limit: int) -> dict[str, dict[str, float]]:
        # trec_eval orders by score: give rank r the score 1/r.
        return {q: {d: 1.0 / r for r, d in enumerate(docs[:limit], 1)} for q, docs in runs.items()}

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, MEASURES)
    full = evaluator.evaluate(as_run(100))
    top10 = evaluator.evaluate(as_run(10))
    queries = list(qrels)
    return {
        "ndcg@10": round(float(np.mean([full[q]["ndcg_cut_10"] for q in queries])), 4),
        "recall@100": round(float(np.mean([full[q]["recall_100"] for q in queries])), 4),
        "mrr@10": round(float(np.mean([top10[q]["recip_rank"] for q in queries])), 4),
    }


def read_judgements(
    directory: Path, split: str = "test"
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """A BEIR directory's judged queries (id -> text) and relevance judgements."""
    directory = Path(directory)
    qrels: dict[str, dict[str, int]] = {}
    with open(directory / "qrels" / f"{split}.tsv") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)  # header
        for qid, did, score in reader:
            if int(score) > 0:
                qrels.setdefault(qid, {})[did] = int(score)
    queries = {}
    with open(directory / "queries.jsonl") as f:
        for line in f:
            q = json.loads(line)
            if str(q["_id"]) in qrels:
                queries[str(q["_id"])] = q["text"]
    return queries, {q: qrels[q] for q in queries}


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
        runs: dict[str, list[str]] = {}
        for qid, text in queries.items():
            found = retrieve(
                session,
                text,
                mode="hybrid",
                depth=settings.fusion_depth,
                collections=[collection_id],
                settings=settings,
                clock=Clock(),
                pinned=(generation, index),
            )
            ranked = fuse(found.candidates, settings.fusion_method, settings.fusion_dense_weight)
            runs[qid] = list(dict.fromkeys(corpus_id[c] for c, _ in ranked if c in corpus_id))
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
