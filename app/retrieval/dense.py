"""Dense retrieval: cosine distance over the live generation's chunk embeddings in pgvector.

The collection filter (and the documents the metadata filters keep) sits inside the same SQL
query. pgvector (0.6) applies a WHERE clause after the HNSW scan has picked its `ef_search`
candidates, so a filter that keeps few chunks could return fewer than asked, or none. A
filtered search therefore raises `hnsw.ef_search`
in proportion to how selective the filter is (twice `depth` allowed chunks expected among the
candidates), and runs as an exact scan over just the allowed chunks instead when they are few,
when the ef_search it would need passes EF_SEARCH_MAX (the scan would come back short), or
when the index scan did come back short. `benchmarks/search.py` measures both paths."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pgvector.sqlalchemy import Vector
from sqlalchemy import bindparam, cast, func, select, text
from sqlalchemy.orm import Session

from app.db import any_of
from app.models import Chunk

# Up to this many allowed chunks (when the filter leaves some out) an exact scan is no slower
# than the cheapest filtered HNSW scan, and loses nothing: an exact scan costs about 4 us a
# chunk, an HNSW scan at ef_search 200-400 5-10 ms (benchmarks/search.py prints both).
EXACT_SCAN_MAX_ROWS = 2_000
EF_SEARCH_MAX = 1000


def _distance(dimension: int, query: np.ndarray):
    # Must match the index expression: (embedding::vector(dim)) <=> query
    return cast(Chunk.embedding, Vector(dimension)).cosine_distance(query)


def dense_search(
    session: Session,
    query: np.ndarray,
    *,
    generation_id: int,
    dimension: int,
    depth: int,
    ef_search: int,
    allowed: Sequence[int] | None = None,
    allowed_rows: int | None = None,
    total_rows: int | None = None,
    documents: Sequence[int] | None = None,
) -> list[tuple[int, float]]:
    """The `depth` nearest chunks as (chunk id, cosine similarity), best first.

    `allowed` (collection ids) and `documents` (document ids, from metadata filters) restrict
    the chunks searched, None meaning no restriction; `allowed_rows` / `total_rows` (chunks
    allowed / in all) say how selective the restriction is; when unknown, the HNSW scan is
    tried first."""
    distance = _distance(dimension, query)
    stmt = (
        select(Chunk.id, distance.label("distance"))
        # The generation id is written into the SQL, not bound: the planner must see that the
        # query implies the partial index's predicate, also in a prepared statement's generic
        # plan (psycopg prepares a statement after five runs).
        .where(Chunk.generation_id == bindparam("generation", generation_id, literal_execute=True))
        .limit(depth)
    )
    if allowed is not None:
        if not allowed:
            return []
        stmt = stmt.where(Chunk.collection_id.in_(list(allowed)))
    if documents is not None:
        if not documents:
            return []
        stmt = stmt.where(any_of(Chunk.document_id, documents))
    ef = scan_plan(depth, ef_search, allowed_rows, total_rows)
    if ef is not None:
        # Ordered by distance alone: the HNSW index gives that order, and a second key
        # (the id, for ties) would make the planner sort a sequential scan instead.
        rows = _with_setting(session, "hnsw.ef_search", str(ef), stmt.order_by(distance))
        wanted = depth if allowed_rows is None else min(depth, allowed_rows)
        if (allowed is None and documents is None) or len(rows) >= wanted:
            return sorted(((int(i), 1.0 - float(d)) for i, d in rows), key=lambda r: (-r[1], r[0]))
    # Exact: no plain index scans (the HNSW index), bitmap scans of the filter index allowed.
    rows = _with_setting(session, "enable_indexscan", "off", stmt.order_by(distance, Chunk.id))
    return [(int(i), 1.0 - float(d)) for i, d in rows]


def scan_plan(
    depth: int, ef_search: int, allowed_rows: int | None, total_rows: int | None
) -> int | None:
    """The hnsw.ef_search of an HNSW scan, or None for an exact scan of the allowed chunks."""
    if allowed_rows is None or total_rows is None or allowed_rows >= total_rows:
        return max(ef_search, depth)  # no filter, or its selectivity unknown: try the index
    if allowed_rows <= EXACT_SCAN_MAX_ROWS:
        return None
    ef = filtered_ef(depth, ef_search, allowed_rows, total_rows)
    return ef if ef <= EF_SEARCH_MAX else None


def filtered_ef(depth: int, ef_search: int, allowed_rows: int, total_rows: int) -> int:
    """The ef_search at which twice `depth` allowed chunks are expected among the candidates."""
    return max(ef_search, depth, math.ceil(2 * depth * total_rows / max(allowed_rows, 1)))


def _with_setting(session: Session, name: str, value: str, stmt) -> list:
    """Run `stmt` with a planner setting changed for it alone (the rest of the transaction
    keeps the default)."""
    session.execute(select(func.set_config(name, value, True)))
    try:
        return list(session.execute(stmt).all())
    finally:
        session.execute(text(f"RESET {name}"))


def similarities(
    session: Session, query: np.ndarray, *, dimension: int, chunk_ids: Sequence[int]
) -> dict[int, float]:
    """Exact cosine similarity of particular chunks (to score the union of candidates)."""
    if not chunk_ids:
        return {}
    distance = _distance(dimension, query)
    rows = session.execute(select(Chunk.id, distance).where(any_of(Chunk.id, chunk_ids))).all()
    return {int(i): 1.0 - float(d) for i, d in rows}
