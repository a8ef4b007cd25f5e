"""The ingestion pipeline: parse, chunk, embed, index, for a batch of documents.

`run()` is the body of the Celery task (and what tests call directly). A task carries one
document (an upload from the browser) or a batch of small ones (a folder from the CLI, a
multi-file API call): each document is parsed and chunked on its own, then the chunks of the
whole batch are embedded together, sorted by length in batches of EMBED_BATCH_SIZE, which is
as fast as embedding gets; then each document is written in its own transaction.

`run()` owns the units of work: status changes are committed (at most every half second) so
the person who uploaded can follow them, and all of a document's chunks are written in one
final transaction. It is idempotent: an indexed document is skipped, and a document whose
advisory lock another worker holds is left to that worker. A document that fails (a file no
parser can read) fails alone; the rest of its batch goes on.

`build()` fills a generation being built beside the live one (a model or chunking change)
with a batch of already indexed documents, without touching their status.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from pathlib import PurePath

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import delete, select, update

from app.config import Settings, get_settings
from app.db import session_scope
from app.ingest.attempts import (
    TRANSIENT,
    Interrupted,
    Progress,
    WorkItem,
    begin,
    checkpoint,
    fail,
    finish_attempt,
    give_up,
    hand_back,
    locked,
    plan_of,
)
from app.ingest.chunk import chunk_document, context_prefix
from app.ingest.embed import get_embedder
from app.ingest.index import DocumentChunks, record_change, replace_chunks
from app.ingest.parse import parse
from app.ingest.structure import Limits, Parsed, ParseError, assemble, time_budget
from app.models import (
    TARGET_STATES,
    Document,
    DocumentFile,
    DocumentStatus,
    GenerationState,
    IndexGeneration,
    IngestionAttempt,
)
from app.retrieval.tokenize import tokenize

__all__ = ["TRANSIENT", "build", "give_up", "run"]

log = logging.getLogger(__name__)
EMBED_SLICE = 256  # chunks embedded between two progress updates


def run(
    document_ids: list[int], *, task_id: str | None = None, worker: str | None = None
) -> dict[int, str]:
    """Ingest documents; returns what happened to each (indexed, failed, skipped, gone,
    busy, or handed back when the worker is stopping)."""
    outcomes = dict.fromkeys(document_ids, "busy")
    with locked(document_ids) as held:
        items, begun = begin(held, task_id, worker)
        outcomes.update(begun)
        _process(items)
        outcomes.update({j.document_id: j.outcome or "failed" for j in items})
    return outcomes


def build(document_ids: list[int], generation_id: int) -> dict[int, str]:
    """Add indexed documents to a generation being built (their status does not change)."""
    outcomes = dict.fromkeys(document_ids, "busy")
    with locked(document_ids) as held:
        with session_scope() as session:
            generation = session.get(IndexGeneration, generation_id)
            if generation is None or generation.state != GenerationState.building:
                return dict.fromkeys(document_ids, "skipped")
            plan = plan_of(generation)
            rows = session.execute(
                select(
                    Document.id,
                    Document.content_type,
                    Document.filename,
                    DocumentFile.data,
                    Document.source_url,
                )
                .join(DocumentFile, DocumentFile.document_id == Document.id)
                .where(Document.id.in_(held), Document.status == DocumentStatus.indexed)
            ).all()
        items = [
            WorkItem(d, None, ct, fn, data, [plan], source_url=url) for d, ct, fn, data, url in rows
        ]
        outcomes.update(dict.fromkeys(held, "skipped"))
        _process(items)
        outcomes.update({j.document_id: j.outcome or "failed" for j in items})
    return outcomes


def _process(items: list[WorkItem]) -> None:
    settings = get_settings()
    progress = Progress()
    try:
        for item in items:
            checkpoint()
            _prepare(item, settings)
            progress([item], status=DocumentStatus.chunking, page_count=item.page_count)
        ready = [j for j in items if j.outcome is None]
        progress(
            ready, force=True, status=DocumentStatus.embedding, chunks_total=lambda j: j.chunks
        )
        _embed(ready, settings.embed_batch_size, progress)
        _write(ready)
    except Interrupted:
        hand_back(items)
    except SoftTimeLimitExceeded:
        for item in items:
            if item.outcome is None:
                limit = settings.task_time_limit_s
                fail(item, f"took longer than the {limit}s limit (TASK_TIME_LIMIT_S)")
    except TRANSIENT as err:
        with contextlib.suppress(*TRANSIENT), session_scope() as session:
            for item in items:
                if item.outcome is None and item.attempt_id is not None:
                    finish_attempt(session, item.attempt_id, "retrying", str(err)[:2000])
        raise
    except Exception as err:
        log.exception("ingesting documents %s failed", [j.document_id for j in items])
        for item in items:
            if item.outcome is None:
                fail(item, f"internal error: {type(err).__name__}: {err}")


def _prepare(item: WorkItem, settings: Settings) -> None:
    """Parse the file and chunk it for each target generation, within the document's time
    budget; a file that cannot be read, or is too big, too deep or too slow to read, fails
    alone with the reason."""
    limits = Limits(
        settings.max_pdf_pages,
        settings.max_text_chars,
        ocr_pages=settings.ocr_max_pages,
        ocr_page_s=settings.ocr_page_time_limit_s,
    )
    try:
        with time_budget(settings.document_time_limit_s):
            parsed = parse(item.content_type, item.data, item.filename, limits, item.source_url)
            _chunk(item, parsed)
    except ParseError as err:
        fail(item, str(err))
    except MemoryError:
        fail(item, "reading it needed more memory than a worker may use (WORKER_MEMORY_LIMIT_MB)")
    except RecursionError:
        fail(item, "its structure is nested too deeply to read")


def _chunk(item: WorkItem, parsed: Parsed) -> None:
    item.data = b""
    item.page_count = parsed.page_count
    item.assembled = assemble(parsed)
    item.title = parsed.title or item.source_url or PurePath(item.filename).stem
    item.ocr_confidence = parsed.ocr_confidence
    item.ocr_pages = {str(n): p.confidence for n, p in parsed.ocr.items()} or None
    item.notes = "; ".join(parsed.notes) or None
    for plan in item.plans:
        embedder = get_embedder(plan.model)
        specs = chunk_document(
            item.assembled,
            item.title,
            embedder.count_tokens,
            chunk_tokens=plan.chunk_tokens,
            overlap_tokens=plan.overlap_tokens,
            max_sequence_tokens=embedder.max_tokens,
        )
        rows, texts = [], []
        for spec in specs:
            prefix = context_prefix(item.title, spec.heading_path)
            with_context = f"{prefix}\n{spec.text}" if prefix else spec.text
            texts.append(with_context)
            rows.append(
                {
                    "ordinal": spec.ordinal,
                    "text": spec.text,
                    "lexemes": " ".join(tokenize(with_context)),
                    "heading_path": list(spec.heading_path),
                    "page_start": spec.page_start,
                    "page_end": spec.page_end,
                    "char_start": spec.start,
                    "char_end": spec.end,
                }
            )
        item.rows.append(rows)
        item.texts.append(texts)


def _embed(items: list[WorkItem], batch_size: int, progress: Progress) -> None:
    """Embed every chunk of the batch, one model at a time, in slices of EMBED_SLICE texts
    (the model sorts each slice by length, so padding stays small), telling each document how
    many of its chunks are done after each slice."""
    for item in items:
        item.vectors = [np.zeros((0, 0), dtype=np.float32) for _ in item.plans]
    done = dict.fromkeys((j.document_id for j in items), 0)
    for model in sorted({plan.model for item in items for plan in item.plans}):
        embedder = get_embedder(model)
        owners = [(j, i) for j in items for i, plan in enumerate(j.plans) if plan.model == model]
        offsets = np.cumsum([0] + [len(j.texts[i]) for j, i in owners])
        texts = [t for j, i in owners for t in j.texts[i]]
        parts = [np.zeros((0, embedder.dimension), dtype=np.float32)]
        for start in range(0, len(texts), EMBED_SLICE):
            parts.append(embedder.encode(texts[start : start + EMBED_SLICE], batch_size, "chunks"))
            embedded = start + len(parts[-1])
            for (item, _), first, last in zip(owners, offsets[:-1], offsets[1:], strict=True):
                done[item.document_id] += int(np.clip(embedded - first, 0, last - first)) - int(
                    np.clip(start - first, 0, last - first)
                )
            progress(items, chunks_done=lambda j: done[j.document_id])
            checkpoint()
        vectors = np.concatenate(parts)
        for (item, i), first, last in zip(owners, offsets[:-1], offsets[1:], strict=True):
            item.vectors[i] = vectors[first:last]


def _write(items: list[WorkItem]) -> None:
    """One transaction for the batch: each document's chunks in every target generation, the
    documents indexed, their older versions removed, and the changes noted for in-memory
    indexes. A reader sees a document's old chunks or its new ones, never both or neither.
    Outcomes are set once the transaction has committed: if it fails, the batch fails."""
    if not items:
        return
    outcomes: dict[int, str] = {}
    with session_scope() as session:
        docs = {
            d.id: d
            for d in session.scalars(
                select(Document)
                .where(Document.id.in_([j.document_id for j in items]))
                .order_by(Document.id)
                .with_for_update()
            )
        }
        generations = {
            g.id: g
            for g in session.scalars(
                select(IndexGeneration).where(
                    IndexGeneration.id.in_({p.generation_id for j in items for p in j.plans}),
                    IndexGeneration.state.in_(TARGET_STATES),  # not cancelled meanwhile
                )
            )
        }
        # Two versions of one file in the same batch (one upload with the name twice): the
        # newer replaces the older, which is removed below rather than written.
        newest = {(d.collection_id, d.filename): d.id for d in docs.values()}
        changed: list[int] = []
        chunks: dict[int, list[DocumentChunks]] = {g: [] for g in generations}
        for item in items:
            doc = docs.get(item.document_id)
            if doc is None:
                outcomes[item.document_id] = "gone"
                continue
            if item.attempt_id is not None and newest[doc.collection_id, doc.filename] != doc.id:
                outcomes[doc.id] = "superseded"  # deleted, with its attempts, by the newer
                continue
            live_chunks = 0
            for plan, rows, vectors in zip(item.plans, item.rows, item.vectors, strict=True):
                generation = generations.get(plan.generation_id)
                if generation is None:
                    continue
                if generation.state == GenerationState.live:
                    live_chunks = len(rows)
                chunks[generation.id].append(
                    DocumentChunks(doc.id, doc.collection_id, rows, vectors)
                )
            outcomes[doc.id] = "indexed"
            if item.attempt_id is None:  # building a generation: the document stays as it is
                continue
            older = list(  # earlier versions, and earlier uploads of the name that were refused
                session.scalars(
                    select(Document.id).where(
                        Document.collection_id == doc.collection_id,
                        Document.filename == doc.filename,
                        Document.id < doc.id,
                    )
                )
            )
            if older:
                session.execute(delete(Document).where(Document.id.in_(older)))
            assert item.assembled is not None
            doc.status = DocumentStatus.indexed
            doc.error = None
            doc.title = item.title
            doc.text = item.assembled.text
            doc.page_count = item.page_count
            doc.ocr_confidence = item.ocr_confidence
            doc.ocr_pages = item.ocr_pages
            doc.notes = item.notes
            doc.chunks_total = live_chunks
            doc.chunks_done = live_chunks
            doc.indexed_at = datetime.now(UTC)
            changed += [doc.id, *older]
        for generation_id, documents in chunks.items():
            replace_chunks(session, generations[generation_id], documents)
        attempts = [
            j.attempt_id
            for j in items
            if j.attempt_id is not None and outcomes.get(j.document_id) == "indexed"
        ]
        if attempts:
            session.execute(
                update(IngestionAttempt)
                .where(IngestionAttempt.id.in_(attempts))
                .values(outcome="indexed", finished_at=datetime.now(UTC))
            )
        session.flush()
        if changed:
            record_change(session, changed)
    for item in items:
        item.outcome = outcomes.get(item.document_id)
