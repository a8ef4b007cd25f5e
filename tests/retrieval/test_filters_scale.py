"""A selective metadata filter at 100,000 chunks keeps every passage it matches: 5 of 100,000
come back 5, in every mode, through the real search path and the API, although 99,995 other
passages match the query better (a filter applied after ranking would return none of them)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import date

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, text, update

from app.config import Settings
from app.db import session_scope
from app.ingest.embed import get_embedder
from app.ingest.index import ensure_live_generation
from app.main import create_app
from app.models import IN_FLIGHT, Collection, Document, IndexGeneration
from app.retrieval.filters import Filters
from app.retrieval.search import search
from app.retrieval.tokenize import tokenize
from tests.helpers import new_collection

QUERY = "parental leave policy weeks"
BIG_DOCUMENTS = 10_000  # ten chunks each, the last one five: 99,995 chunks
NEEDLES = 5


def wait_for_idle_ingestion(timeout: float = 120) -> None:
    """Nothing may be ingested while the live generation is swapped for the test's."""
    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as s:
            busy = s.execute(
                select(Document.filename, Document.status, Document.updated_at)
                .where(Document.status.in_(IN_FLIGHT))
                .limit(5)
            ).all()
        if not busy:
            return
        assert time.monotonic() < deadline, f"documents are still being ingested: {busy}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def haystack(settings: Settings) -> Iterator[dict]:
    """A live generation of 100,000 chunks written straight into Postgres (not through the
    embedder): 99,995 that match the query well (its words, vectors next to its own), and a
    document of 5 that matches it less (fewer of its words, random vectors), the only one
    labelled `needle`, a PDF, named needle-notes.pdf, uploaded in 2001. The live generation
    is put back afterwards."""
    wait_for_idle_ingestion()
    embedder = get_embedder(settings.embedding_model)
    near = embedder.encode([QUERY])[0].astype(float).tolist()
    big_text = "Parental leave policy: weeks of parental leave for each parent, section"
    tag = uuid.uuid4().hex[:8]
    with session_scope() as s:
        previous = ensure_live_generation(s, settings)
        s.execute(
            update(IndexGeneration).where(IndexGeneration.id == previous.id).values(state="retired")
        )
        s.flush()
        generation = IndexGeneration(
            embedding_model=previous.embedding_model,
            dimension=previous.dimension,
            chunk_tokens=previous.chunk_tokens,
            chunk_overlap_tokens=previous.chunk_overlap_tokens,
            state="live",
        )
        collection = Collection(name=new_collection())
        s.add_all([generation, collection])
        s.flush()
        values = {"coll": collection.id, "gen": generation.id, "tag": tag}
        s.execute(
            text(
                "INSERT INTO documents (collection_id, filename, content_type, size_bytes, sha256,"
                " status, labels) SELECT :coll, 'big-' || g || '.md', 'text/markdown', 1,"
                " md5(:tag || g) || md5(g::text), 'indexed', '{other}'"
                " FROM generate_series(0, :n - 1) g"
            ),
            {**values, "n": BIG_DOCUMENTS},
        )
        s.execute(
            text(
                "INSERT INTO documents (collection_id, filename, content_type, size_bytes, sha256,"
                " status, labels, created_at) VALUES (:coll, 'needle-notes.pdf',"
                " 'application/pdf', 1, md5(:tag) || md5(:tag), 'indexed', '{needle}',"
                " '2001-01-15T12:00:00Z')"
            ),
            values,
        )
        columns = (
            "INSERT INTO chunks (document_id, generation_id, collection_id, ordinal, text,"
            " lexemes, heading_path, char_start, char_end, embedding, embedding_model)"
        )
        s.execute(
            text(
                f"{columns} SELECT d.id, :gen, :coll, (g - 1) % 10, :text || ' ' || g,"
                " :lexemes || ' ' || g, '{}', 0, 1,"
                " (SELECT array_agg(q + (random() - 0.5) * 0.02) FROM unnest(CAST(:near AS"
                " real[])) q WHERE g > 0)::vector, :model"
                " FROM generate_series(1, :n) g JOIN documents d ON d.collection_id = :coll"
                " AND d.filename = 'big-' || ((g - 1) / 10) || '.md'"
            ),
            {
                **values,
                "text": big_text,
                "lexemes": " ".join(tokenize(big_text)),
                "near": near,
                "model": previous.embedding_model,
                "n": BIG_DOCUMENTS * 10 - NEEDLES,
            },
        )
        needle_text = "Leave notes, kept for reference"
        s.execute(
            text(
                f"{columns} SELECT d.id, :gen, :coll, g, :text || ' ' || g,"
                " :lexemes || ' ' || g, '{}', 0, 1,"
                " (SELECT array_agg(random() - 0.5) FROM generate_series(1, :dim)"
                " WHERE g >= 0)::vector, :model"
                " FROM generate_series(0, :n - 1) g JOIN documents d ON d.collection_id = :coll"
                " AND d.filename = 'needle-notes.pdf'"
            ),
            {
                **values,
                "text": needle_text,
                "lexemes": " ".join(tokenize(needle_text)),
                "dim": previous.dimension,
                "model": previous.embedding_model,
                "n": NEEDLES,
            },
        )
        s.execute(text("ANALYZE chunks"))
        s.execute(text("ANALYZE documents"))
        world = {"generation": generation.id, "previous": previous.id, "collection": collection}
    try:
        yield world
    finally:
        with session_scope() as s:
            s.execute(delete(IndexGeneration).where(IndexGeneration.id == world["generation"]))
            s.execute(delete(Collection).where(Collection.id == collection.id))
            s.flush()
            s.execute(
                update(IndexGeneration)
                .where(IndexGeneration.id == world["previous"])
                .values(state="live")
            )


NARROW = [
    {"labels": ["needle"]},
    {"file_types": ["pdf"]},
    {"document": "needle*"},
    {"uploaded_to": "2001-01-31"},
    {"uploaded_from": "2001-01-15", "uploaded_to": "2001-01-15", "labels": ["needle", "x"]},
]


@pytest.mark.slow
def test_a_filter_keeping_5_of_100000_chunks_returns_all_5(haystack: dict, settings: Settings):
    collection = haystack["collection"]
    timings: dict[str, list[float]] = {}
    with session_scope() as s:
        for mode in ("bm25", "dense", "hybrid"):
            plain = search(s, QUERY, mode=mode, k=10, settings=settings)
            assert len(plain.hits) == 10 and plain.generation_id == haystack["generation"]
            assert all(h.document != "needle-notes.pdf" for h in plain.hits), mode
            for raw in NARROW:
                filters = Filters.model_validate(raw)
                started = time.perf_counter()
                result = search(s, QUERY, mode=mode, k=10, settings=settings, filters=filters)
                timings.setdefault(mode, []).append((time.perf_counter() - started) * 1000)
                assert len(result.hits) == NEEDLES, (mode, raw, len(result.hits))
                assert {h.document for h in result.hits} == {"needle-notes.pdf"}
                scoped = search(
                    s,
                    QUERY,
                    mode=mode,
                    k=10,
                    settings=settings,
                    filters=filters,
                    collections=[collection.id],
                )
                assert len(scoped.hits) == NEEDLES
            # An upload date range that keeps nothing keeps nothing.
            none = Filters.model_validate({"uploaded_to": date(2000, 12, 31).isoformat()})
            assert search(s, QUERY, mode=mode, k=10, settings=settings, filters=none).hits == []
    print("filtered search ms (5 of 100,000 kept), median per mode:")
    for mode, ms in timings.items():
        print(f"  {mode}: {np.median(ms):.1f}")
    assert np.median(timings["bm25"]) < 1000


@pytest.mark.slow
def test_the_api_keeps_all_5_too(haystack: dict, settings: Settings, auth: dict[str, str]):
    with TestClient(create_app(settings), headers=auth) as client:
        for mode in ("bm25", "dense", "hybrid"):
            body = client.get(
                "/api/search", params={"q": QUERY, "mode": mode, "k": 10, "labels": "needle"}
            ).json()
            assert [r["document"] for r in body["results"]] == ["needle-notes.pdf"] * NEEDLES
