"""Answer quality on SQuAD 2.0: each question through the real answer path (retrieval,
abstention, the LLM, citation checking, storage), scored with SQuAD's own exact match and
token F1, how unanswerable questions are declined, citation accuracy and retrieval hit@5."""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import string

import numpy as np

from app.config import Settings
from app.generation.answer import answer, collect
from app.generation.citations import MARKER
from evals.corpus import ensure_corpus
from evals.datasets import QASet, Question
from evals.retrieval import store_run

log = logging.getLogger("evals")


# SQuAD's official normalisation (evaluate-v2.0.py): lower case, no punctuation, no articles.
def normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: list[str]) -> float:
    return max(float(normalize(prediction) == normalize(g)) for g in golds)


def token_f1(prediction: str, golds: list[str]) -> float:
    def f1(gold: str) -> float:
        p, g = normalize(prediction).split(), normalize(gold).split()
        common = collections.Counter(p) & collections.Counter(g)
        overlap = sum(common.values())
        if not p or not g:
            return float(p == g)
        if overlap == 0:
            return 0.0
        precision, recall = overlap / len(p), overlap / len(g)
        return 2 * precision * recall / (precision + recall)

    return max(f1(g) for g in golds)


def contains_answer(text: str, golds: list[str]) -> bool:
    normalized = normalize(text)
    return any(normalize(g) and normalize(g) in normalized for g in golds)


def pick_questions(qa: QASet, limit: int | None) -> list[Question]:
    """Answerable and unanswerable questions interleaved, so a limited run keeps SQuAD's mix."""
    answerable = [q for q in qa.questions if not q.impossible]
    impossible = [q for q in qa.questions if q.impossible]
    mixed = [q for pair in zip(answerable, impossible, strict=False) for q in pair]
    rest = answerable[len(impossible) :] + impossible[len(answerable) :]
    picked = mixed + rest
    return picked[:limit] if limit else picked


def score(question: Question, result: dict, by_filename: dict[str, str]) -> dict:
    declined = bool(result.get("abstained")) or "error" in result
    text = MARKER.sub("", result.get("answer", "")).strip()
    row: dict = {
        "impossible": question.impossible,
        "declined": declined,
        "error": "error" in result,
        "ttft_ms": result.get("timings", {}).get("ttft_ms"),
        "hit@5": any(
            by_filename.get(p["document"]) == question.doc_id
            for p in result.get("passages", [])[:5]
        ),
    }
    if not question.impossible:
        row["em"] = 0.0 if declined else exact_match(text, question.answers)
        row["f1"] = 0.0 if declined else token_f1(text, question.answers)
        passages = {p["n"]: p for p in result.get("passages", [])}
        supported = [c for c in result.get("citations", []) if c["supported"]]
        if supported:
            row["citation_correct"] = np.mean(
                [contains_answer(passages[c["n"]]["text"], question.answers) for c in supported]
            )
    return row


def summarize(rows: list[dict]) -> dict:
    answerable = [r for r in rows if not r["impossible"]]
    impossible = [r for r in rows if r["impossible"]]
    cited = [r["citation_correct"] for r in answerable if "citation_correct" in r]
    ttft = [r["ttft_ms"] for r in rows if r["ttft_ms"] is not None]

    def mean(values: list) -> float | None:
        return round(float(np.mean(values)), 4) if values else None

    return {
        "exact_match": mean([r["em"] for r in answerable]),
        "f1": mean([r["f1"] for r in answerable]),
        "unanswerable_declined": mean([r["declined"] for r in impossible]),
        "answerable_declined": mean([r["declined"] for r in answerable]),
        "citation_accuracy": mean(cited),
        "answers_with_supported_citation": mean([("citation_correct" in r) for r in answerable]),
        "retrieval_hit@5": mean([r["hit@5"] for r in answerable]),
        "llm_errors": sum(r["error"] for r in rows),
        "ttft_p50_ms": round(float(np.percentile(ttft, 50)), 1) if ttft else None,
        "ttft_p95_ms": round(float(np.percentile(ttft, 95)), 1) if ttft else None,
    }


def run_answers(qa: QASet, settings: Settings, limit: int | None) -> dict:
    collection_id, by_filename = ensure_corpus(qa.name, qa.corpus, qa.fingerprint_source, settings)
    questions = pick_questions(qa, limit)

    async def ask_all() -> list[dict]:
        rows = []
        for i, q in enumerate(questions, 1):
            result = await collect(
                answer(q.text, settings=settings, collections=[collection_id], source="eval")
            )
            rows.append(score(q, result, by_filename))
            if i % 25 == 0:
                log.info("%d/%d questions: %s", i, len(questions), summarize(rows))
        return rows

    rows = asyncio.run(ask_all())
    report = {
        "dataset": qa.name,
        "questions": len(rows),
        "answerable": sum(not r["impossible"] for r in rows),
        "unanswerable": sum(r["impossible"] for r in rows),
        "llm": settings.llm_model,
        "metrics": summarize(rows),
    }
    report["run_id"] = store_run("answers", qa.name, len(rows), settings, report["metrics"])
    return report
