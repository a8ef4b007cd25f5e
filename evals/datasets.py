"""Evaluation data: BEIR directories, and SQuAD 2.0 files read as retrieval and QA sets."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from app.retrieval.evaluation import read_judgements


@dataclass
class RetrievalSet:
    name: str
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # query id -> text (only those with judgements)
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance
    fingerprint_source: bytes = b""


@dataclass
class Question:
    id: str
    text: str
    answers: list[str]
    impossible: bool
    doc_id: str  # the paragraph it was asked about
    answer_starts: list[int] = field(default_factory=list)  # offsets in the paragraph


@dataclass
class QASet:
    name: str
    corpus: dict[str, tuple[str, str]]
    questions: list[Question] = field(default_factory=list)
    fingerprint_source: bytes = b""


def load_beir(directory: Path, split: str = "test") -> RetrievalSet:
    directory = Path(directory)
    corpus_path = directory / "corpus.jsonl"
    if not corpus_path.exists():
        raise FileNotFoundError(f"{corpus_path} not found: not a BEIR directory")
    corpus = {}
    with open(corpus_path) as f:
        for line in f:
            doc = json.loads(line)
            corpus[str(doc["_id"])] = (doc.get("title") or "", doc.get("text") or "")
    queries, qrels = read_judgements(directory, split)
    return RetrievalSet(
        name=directory.name,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        fingerprint_source=corpus_path.read_bytes(),
    )


def load_squad(path: Path) -> QASet:
    """SQuAD 2.0: one document per paragraph (titled by its article)."""
    path = Path(path)
    raw = path.read_bytes()
    data = json.loads(raw)["data"]
    corpus: dict[str, tuple[str, str]] = {}
    questions: list[Question] = []
    for a, article in enumerate(data):
        title = article["title"].replace("_", " ")
        for p, paragraph in enumerate(article["paragraphs"]):
            doc_id = f"{a}-{p}"
            corpus[doc_id] = (title, paragraph["context"])
            for qa in paragraph["qas"]:
                questions.append(
                    Question(
                        id=qa["id"],
                        text=qa["question"],
                        answers=[x["text"] for x in qa.get("answers", [])],
                        impossible=bool(qa.get("is_impossible")),
                        doc_id=doc_id,
                        answer_starts=[x["answer_start"] for x in qa.get("answers", [])],
                    )
                )
    return QASet(name=path.stem, corpus=corpus, questions=questions, fingerprint_source=raw)


def squad_as_retrieval(qa: QASet) -> RetrievalSet:
    """Answerable questions, each relevant to the paragraph it was asked about."""
    answerable = [q for q in qa.questions if not q.impossible]
    return RetrievalSet(
        name=qa.name,
        corpus=qa.corpus,
        queries={q.id: q.text for q in answerable},
        qrels={q.id: {q.doc_id: 1} for q in answerable},
        fingerprint_source=qa.fingerprint_source,
    )
