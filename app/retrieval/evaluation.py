"""Scoring a ranking against relevance judgements: nDCG@10, Recall@100 and MRR@10 with
pytrec_eval (the reference trec_eval measures), and reading a BEIR directory's judged
queries, and ranking labelled queries under several fusions at once. Used by the generation
comparison, the fusion calibration and the eval runner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytrec_eval
from sqlalchemy.orm import Session

from app.config import Settings
from app.retrieval.fusion import FusionMethod, fuse
from app.retrieval.search import Clock, Pinned, retrieve

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


def fused_runs(
    session: Session,
    queries: dict[str, str],
    collection_id: int,
    key: dict[int, str],
    fusions: dict[str, tuple[FusionMethod, float]],
    settings: Settings,
    pinned: Pinned | None = None,
) -> dict[str, dict[str, list[str]]]:
    """Each fusion's ranking of each query, as document keys (`key`: chunk id -> document
    key; each document at its best chunk's rank). A query's candidates are retrieved once
    (both lists, FUSION_DEPTH deep, through the search path) and fused each way."""
    runs: dict[str, dict[str, list[str]]] = {name: {} for name in fusions}
    for qid, text in queries.items():
        found = retrieve(
            session,
            text,
            mode="hybrid",
            depth=settings.fusion_depth,
            collections=[collection_id],
            settings=settings,
            clock=Clock(),
            pinned=pinned,
        )
        for name, (method, weight) in fusions.items():
            ranked = (key[c] for c, _ in fuse(found.candidates, method, weight) if c in key)
            runs[name][qid] = list(dict.fromkeys(ranked))
    return runs
