"""How a collection's hybrid search fuses its BM25 and dense lists.

A background job tries each fusion in GRID on a collection's questions with known answers
and the collection's searches use the best (the default, FUSION_METHOD, unless another beats
it by more than TIE). The questions, by what is there:
1. an eval set an admin gave the collection;
2. answers people rated up (the question, and the passages that supported the answer);
3. no labels at all: documents' own titles as questions, each answered by the documents with
   that title. Chosen among label-free candidates by a rule written down before their results
   were seen (the README's "Choosing the fusion"). On the dev sets every fusion finds the
   documents of a title where the text repeats the title's words (SciFact, SQuAD: the default
   stays), and dense search finds them best among Wikipedia abstracts of entities
   (dbpedia-entity: dense), where dense search is also what answers people's questions best.
It runs again when the labels change, the collection grows or shrinks by a tenth, or another
generation goes live. The admin panel shows each collection's fusion and the evidence for
it; every search response names the fusion it used."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app import jobs
from app.config import Settings, get_settings
from app.db import session_scope
from app.ingest.index import live_generation
from app.models import (
    Chunk,
    Collection,
    Conversation,
    Document,
    DocumentStatus,
    FusionCalibration,
    Job,
    Message,
    MessageCitation,
)
from app.retrieval.evaluation import fused_runs, metrics, read_judgements
from app.retrieval.fusion import FusionMethod, fusion_name
from app.retrieval.search import MAX_QUERY_CHARS, default_fusion

MIN_QUERIES = 10  # questions needed before they override the default
TITLE_QUERIES = 100  # titled documents sampled (seed 0) as questions, without labels
TIE = 0.002  # nDCG@10 within this of the best: keep the default
GROWTH = 0.1  # a collection that grew or shrank by this share is calibrated again
NEW_FEEDBACK = 10  # ... and so is one with this many newly rated answers
GRID: list[tuple[FusionMethod, float]] = [
    *(("absolute", round(w / 10, 1)) for w in range(11)),
    ("rrf", 0.5),
    ("zscore", 0.5),
    ("confidence", 0.5),
]


# -- labels ----------------------------------------------------------------------------------


@dataclass
class Labels:
    source: str
    queries: dict[str, str]  # id -> text
    qrels: dict[str, dict[str, int]]  # id -> document key -> relevance
    key: dict[int, str]  # chunk id -> document key


def eval_set_labels(session: Session, collection: Collection) -> Labels | None:
    """The collection's eval set: BEIR queries and judgements over documents uploaded as
    `<corpus id>.md`."""
    if not collection.eval_set:
        return None
    queries, qrels = read_judgements(Path(collection.eval_set))
    rows = session.execute(
        select(Chunk.id, Document.filename)
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.collection_id == collection.id)
    )
    key = {chunk: filename.removesuffix(".md") for chunk, filename in rows}
    return Labels("eval set", queries, qrels, key)


def _rated(collection_id: int):
    return (
        select(Message)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.collection_id == collection_id, Message.feedback == 1)
    )


def feedback_labels(session: Session, collection_id: int) -> Labels | None:
    """Answers rated up in the collection's conversations: the question searched for, and
    the documents of the passages that supported the answer, as relevant."""
    qrels: dict[str, dict[str, int]] = {}
    queries: dict[str, str] = {}
    for message in session.scalars(_rated(collection_id)):
        cited = session.scalars(
            select(Chunk.document_id)
            .join(MessageCitation, MessageCitation.chunk_id == Chunk.id)
            .where(MessageCitation.message_id == message.id, MessageCitation.supported)
        ).all()
        if message.query and cited:
            queries[str(message.id)] = message.query
            qrels[str(message.id)] = {str(d): 1 for d in cited}
    if not queries:
        return None
    rows = session.execute(
        select(Chunk.id, Chunk.document_id).where(Chunk.collection_id == collection_id)
    )
    return Labels("feedback", queries, qrels, {chunk: str(doc) for chunk, doc in rows})


def _titled(collection_id: int):
    """A collection's indexed documents whose title came from their content (not the file
    name or address it falls back to)."""
    return select(Document.id, Document.title).where(
        Document.collection_id == collection_id,
        Document.status == DocumentStatus.indexed,
        Document.title.is_not(None),
        func.trim(Document.title) != "",
        Document.title != func.regexp_replace(Document.filename, r"\.[^.]*$", ""),
        Document.title.is_distinct_from(Document.source_url),
    )


def titled_documents(session: Session, collection_id: int) -> int:
    return _count(session, _titled(collection_id))


def title_labels(session: Session, collection_id: int) -> Labels | None:
    """Questions without labels: the titles of TITLE_QUERIES documents sampled (seed 0), each
    answered by every document carrying that title."""
    rows = session.execute(_titled(collection_id).order_by(Document.id)).all()
    if not rows:
        return None
    answers: dict[str, dict[str, int]] = {}
    for document_id, title in rows:
        answers.setdefault(title, {})[str(document_id)] = 1
    sample = random.Random(0).sample(rows, min(TITLE_QUERIES, len(rows)))
    queries = {str(d): title[:MAX_QUERY_CHARS] for d, title in sample}
    qrels = {str(d): answers[title] for d, title in sample}
    key = session.execute(
        select(Chunk.id, Chunk.document_id).where(Chunk.collection_id == collection_id)
    )
    return Labels("titles", queries, qrels, {chunk: str(doc) for chunk, doc in key})


def labels_for(session: Session, collection: Collection) -> Labels | None:
    """The collection's best questions with answers: its eval set, else its rated answers,
    else its titles; None when there are fewer than MIN_QUERIES."""
    for labels in (
        eval_set_labels(session, collection),
        feedback_labels(session, collection.id),
        title_labels(session, collection.id),
    ):
        if labels is not None and len(labels.queries) >= MIN_QUERIES:
            return labels
    return None


def expected_source(session: Session, collection: Collection, feedback: int) -> str | None:
    """Which labels `labels_for` would use, from counts alone."""
    if collection.eval_set:
        return "eval set"
    if feedback >= MIN_QUERIES:
        return "feedback"
    return "titles" if titled_documents(session, collection.id) >= MIN_QUERIES else None


# -- calibrating -----------------------------------------------------------------------------


def evaluate(
    session: Session, labels: Labels, collection_id: int, settings: Settings
) -> dict[str, float]:
    """nDCG@10 of every fusion in GRID on the labelled queries. Each query is retrieved once
    (both lists, `FUSION_DEPTH` deep, through the search path) and fused each way."""
    fusions = {fusion_name(m, w): (m, w) for m, w in GRID}
    runs = fused_runs(session, labels.queries, collection_id, labels.key, fusions, settings)
    return {name: metrics(labels.qrels, run)["ndcg@10"] for name, run in runs.items()}


def calibrate(session: Session, collection_id: int, settings: Settings) -> FusionCalibration | None:
    """Learn the collection's fusion from its labels (its eval set, else its rated answers)
    and store it, replacing the last; with too few labels, the default applies again."""
    collection = session.get(Collection, collection_id)
    live = live_generation(session)
    if collection is None or live is None:
        return None
    labels = labels_for(session, collection)
    if labels is None:
        session.execute(
            delete(FusionCalibration).where(FusionCalibration.collection_id == collection_id)
        )
        return None
    scores = evaluate(session, labels, collection_id, settings)
    default = default_fusion(settings)
    best = max(GRID, key=lambda f: scores[fusion_name(*f)])
    if scores.get(default.name, -1.0) >= scores[fusion_name(*best)] - TIE:
        best = (default.method, default.dense_weight)
    values = {
        "generation_id": live.id,
        "method": best[0],
        "dense_weight": best[1],
        "source": labels.source,
        "queries": len(labels.queries),
        "documents": documents_in(session, collection_id),
        "feedback": rated_answers(session, collection_id),
        "evidence": scores,
        "computed_at": func.now(),
    }
    row = session.get(FusionCalibration, collection_id, with_for_update=True)
    if row is None:
        row = FusionCalibration(collection_id=collection_id, **values)
        session.add(row)
    else:
        for name, value in values.items():
            setattr(row, name, value)
    session.flush()
    session.refresh(row)
    return row


def _count(session: Session, query) -> int:
    """How many rows a query returns."""
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def documents_in(session: Session, collection_id: int) -> int:
    return _count(
        session,
        select(Document.id).where(
            Document.collection_id == collection_id, Document.status == DocumentStatus.indexed
        ),
    )


def rated_answers(session: Session, collection_id: int) -> int:
    return _count(session, _rated(collection_id))


def stale(session: Session) -> list[int]:
    """Collections whose calibration is missing or out of date."""
    live = live_generation(session)
    if live is None:
        return []
    out = []
    for collection in session.scalars(select(Collection).order_by(Collection.id)):
        row = session.get(FusionCalibration, collection.id)
        feedback = rated_answers(session, collection.id)
        source = expected_source(session, collection, feedback)
        if source is None:
            if row is not None:
                out.append(collection.id)  # its questions are gone: back to the default
            continue
        if (
            row is None
            or row.source != source
            or row.generation_id != live.id
            or abs(documents_in(session, collection.id) - row.documents)
            > GROWTH * max(row.documents, 1)
            or (row.source == "feedback" and feedback - row.feedback >= NEW_FEEDBACK)
        ):
            out.append(collection.id)
    return out


RECALIBRATE_AFTER = timedelta(minutes=10)  # a calibration asked for is not asked for again


def request_calibrations(session: Session) -> list[int]:
    """Ask for a calibration of each collection whose one is missing or out of date (not
    again while one asked for in the last RECALIBRATE_AFTER may still run)."""
    since = datetime.now(UTC) - RECALIBRATE_AFTER
    asked = {
        args[0]
        for args in session.scalars(
            select(Job.args).where(Job.name == jobs.CALIBRATE_FUSION, Job.created_at > since)
        )
        if args
    }
    wanted = [c for c in stale(session) if c not in asked]
    for collection_id in wanted:
        jobs.enqueue(session, jobs.CALIBRATE_FUSION, collection_id)
    return wanted


def calibrate_job(collection_id: int) -> str:
    """The calibration job's body: what the collection's fusion is now."""
    with session_scope() as session:
        row = calibrate(session, collection_id, get_settings())
        return "default" if row is None else f"{fusion_name(row.method, row.dense_weight)}"
