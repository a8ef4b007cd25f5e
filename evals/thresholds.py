"""Choosing the answer thresholds on a tuning set (SQuAD part 1), never on a test set.

- Abstention: the relevance score (`app.generation.answer.relevance`: the fused score without
  a reranker) of each question's best passage. The threshold is the 5th percentile over the
  answerable questions: at most 5% of questions the documents do answer are declined before
  the LLM sees them. What that declines of the unanswerable ones is reported beside it.
- Citation support: a claim (the question followed by its gold answer) against the best unit of
  its paragraph that holds the answer (supported) and against the closest unit of the same
  article's other paragraphs that does not (topical, unsupported); units are what the citation
  checker compares with (`support_units`: sentences and pairs of adjacent sentences). The
  threshold maximises Youden's J (true positive rate minus false positive rate).
"""

from __future__ import annotations

import numpy as np

from app.config import Settings
from app.db import session_scope
from app.generation.answer import relevance
from app.generation.citations import support_units
from app.ingest.embed import get_embedder
from app.retrieval.search import search
from evals.corpus import ensure_corpus
from evals.datasets import QASet


def abstention(qa: QASet, settings: Settings, limit: int | None) -> dict:
    collection_id, _ = ensure_corpus(qa.name, qa.corpus, qa.fingerprint_source, settings)
    answerable = [q for q in qa.questions if not q.impossible][:limit]
    impossible = [q for q in qa.questions if q.impossible][:limit]
    scores: dict[str, list[float]] = {"answerable": [], "unanswerable": []}
    with session_scope() as session:
        for name, questions in (("answerable", answerable), ("unanswerable", impossible)):
            for q in questions:
                result = search(session, q.text, collections=[collection_id], settings=settings)
                score = relevance(result)
                scores[name].append(float("-inf") if score is None else score)
    a, u = np.array(scores["answerable"]), np.array(scores["unanswerable"])
    threshold = float(np.percentile(a, 5))
    return {
        "score": "reranker" if settings.reranker_model and _reranked(settings) else "fused",
        "fusion": settings.fusion_method,
        "answerable": len(a),
        "unanswerable": len(u),
        "answerable_quantiles": [round(float(x), 5) for x in np.percentile(a, [5, 25, 50, 75])],
        "unanswerable_quantiles": [round(float(x), 5) for x in np.percentile(u, [5, 25, 50, 75])],
        "threshold": round(threshold, 5),
        "answerable_declined": round(float(np.mean(a < threshold)), 4),
        "unanswerable_declined": round(float(np.mean(u < threshold)), 4),
    }


def _reranked(settings: Settings) -> bool:
    from app.retrieval.rerank import get_reranker

    return get_reranker(settings.reranker_model).loaded


def citation_support(qa: QASet, settings: Settings, limit: int | None) -> dict:
    embedder = get_embedder(settings.embedding_model)
    # Every sentence of every paragraph, embedded once.
    sentences: dict[str, list[tuple[int, int, str]]] = {}
    for doc_id, (_, context) in qa.corpus.items():
        sentences[doc_id] = [(a, b, context[a:b]) for a, b in support_units(context)]
    keys = [(d, i) for d, rows in sentences.items() for i in range(len(rows))]
    vectors = embedder.encode([sentences[d][i][2] for d, i in keys], 64)
    index = {key: n for n, key in enumerate(keys)}
    by_article: dict[str, list[str]] = {}
    for doc_id in qa.corpus:
        by_article.setdefault(doc_id.split("-")[0], []).append(doc_id)

    questions = [q for q in qa.questions if not q.impossible and q.answer_starts][:limit]
    claims = embedder.encode([f"{q.text.rstrip('?')} {q.answers[0]}." for q in questions], 64)
    positive, negative = [], []
    for q, claim in zip(questions, claims, strict=True):
        start = q.answer_starts[0]
        gold = [i for i, (a, b, _) in enumerate(sentences[q.doc_id]) if a <= start < b]
        others = [
            index[(other, i)]
            for other in by_article[q.doc_id.split("-")[0]]
            if other != q.doc_id
            for i, (_, _, text) in enumerate(sentences[other])
            if q.answers[0].lower() not in text.lower()
        ]
        if not gold or not others:
            continue
        positive.append(float((vectors[[index[(q.doc_id, i)] for i in gold]] @ claim).max()))
        negative.append(float((vectors[others] @ claim).max()))
    pos, neg = np.array(positive), np.array(negative)
    candidates = np.round(np.arange(0.2, 0.9, 0.01), 2)
    youden = [float(np.mean(pos >= t) - np.mean(neg >= t)) for t in candidates]
    threshold = float(candidates[int(np.argmax(youden))])
    return {
        "claims": len(pos),
        "supported_quantiles": [round(float(x), 3) for x in np.percentile(pos, [5, 25, 50, 75])],
        "unsupported_quantiles": [round(float(x), 3) for x in np.percentile(neg, [25, 50, 75, 95])],
        "threshold": threshold,
        "true_positive_rate": round(float(np.mean(pos >= threshold)), 4),
        "false_positive_rate": round(float(np.mean(neg >= threshold)), 4),
    }
