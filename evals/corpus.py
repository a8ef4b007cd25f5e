"""Putting an evaluation corpus into Groundwork through the real ingestion path, into a
collection of its own that is reused while the corpus and the pipeline settings are the same."""

from __future__ import annotations

import hashlib
import logging
import time

from sqlalchemy import select

from app.collections.service import collection_for_upload
from app.config import Settings
from app.db import session_scope
from app.documents.bulk import ingest_files, wait_settled
from app.ingest.detect import safe_filename
from app.models import Document, GenerationState, IndexGeneration

log = logging.getLogger("evals")
PIPELINE_VERSION = "1"  # bump when parsing or chunking changes what gets indexed


def as_file(doc_id: str, title: str, text: str) -> tuple[str, bytes]:
    """A corpus entry as the Markdown file a person would upload."""
    body = f"# {title}\n\n{text}\n" if title else f"{text}\n"
    return f"{doc_id}.md", body.encode()


def collection_name(dataset: str, fingerprint_source: bytes, settings: Settings) -> str:
    with session_scope() as s:
        live = s.scalar(
            select(IndexGeneration).where(IndexGeneration.state == GenerationState.live)
        )
        model = live.embedding_model if live else settings.embedding_model
        chunking = (
            (live.chunk_tokens, live.chunk_overlap_tokens)
            if live
            else (settings.chunk_tokens, settings.chunk_overlap_tokens)
        )
    digest = hashlib.sha256(fingerprint_source)
    digest.update(f"{model}|{chunking}|{PIPELINE_VERSION}".encode())
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in dataset)[:40]
    return f"eval-{safe}-{digest.hexdigest()[:10]}"


def ensure_corpus(
    dataset: str,
    corpus: dict[str, tuple[str, str]],
    fingerprint_source: bytes,
    settings: Settings,
) -> tuple[int, dict[str, str]]:
    """The collection id holding the corpus, and a map from file name to corpus id. Sends
    what is missing through the workers and waits until every document settles."""
    name = collection_name(dataset, fingerprint_source, settings)
    files = {doc_id: as_file(doc_id, *corpus[doc_id]) for doc_id in corpus}
    by_filename = {safe_filename(f[0]): doc_id for doc_id, f in files.items()}
    with session_scope() as s:
        collection = collection_for_upload(s, name)
        collection_id = collection.id
        have = set(
            s.scalars(
                select(Document.filename).where(
                    Document.collection_id == collection_id, Document.status == "indexed"
                )
            )
        )
    todo = [doc_id for doc_id, (filename, _) in files.items() if filename not in have]
    if not todo:
        log.info("reusing collection %s (%d documents)", name, len(files))
        return collection_id, by_filename
    log.info("ingesting %d of %d documents into %s", len(todo), len(files), name)
    started = time.perf_counter()
    sources = [(files[d][0], len(files[d][1]), lambda d=d: files[d][1]) for d in todo]
    ids = ingest_files(name, sources, settings)
    wait_settled(ids, poll_s=5, on_wait=lambda t: log.info("waiting for %d document(s)", t.pending))
    log.info("ingested %s in %.0fs", name, time.perf_counter() - started)
    return collection_id, by_filename
