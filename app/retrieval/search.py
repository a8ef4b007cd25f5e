"""The one search entry point, for the chat, the API, the CLI and the evals alike.

    bm25    lexical only          dense   embeddings only
    hybrid  both, fused, then reranked by the cross-encoder when one is loaded

Every hit carries each stage's score and every result the time each stage took."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.db import any_of
from app.errors import Invalid
from app.ingest.chunk import context_prefix
from app.ingest.embed import get_embedder
from app.models import Chunk, Collection, Document, FusionCalibration, IndexGeneration
from app.monitoring.metrics import record_search
from app.retrieval import dense
from app.retrieval.filters import Filters, document_ids
from app.retrieval.fusion import Candidate, Fusion, FusionMethod, fuse
from app.retrieval.lexical import BM25Index, top_k
from app.retrieval.lexical_store import lexical_index
from app.retrieval.rerank import get_reranker
from app.retrieval.tokenize import tokenize

Mode = Literal["bm25", "dense", "hybrid"]
MODES: tuple[Mode, ...] = ("bm25", "dense", "hybrid")
MAX_QUERY_CHARS = 2000


@dataclass
class Hit:
    rank: int
    chunk_id: int
    document_id: int
    document: str  # file name
    title: str | None
    collection: str
    page_start: int | None
    page_end: int | None
    char_start: int
    char_end: int
    heading_path: list[str]
    text: str
    scores: dict[str, float | None]  # bm25, dense, fused, rerank
    generation_id: int = 0  # the index generation the chunk belongs to
    url: str | None = None  # a web page's address

    @property
    def page(self) -> int | None:
        return self.page_start

    @property
    def context(self) -> str:
        """What the models read for this chunk: title and headings, then the text."""
        prefix = context_prefix(self.title, tuple(self.heading_path))
        return f"{prefix}\n{self.text}" if prefix else self.text


@dataclass
class SearchResult:
    query: str
    mode: Mode
    hits: list[Hit]
    generation_id: int | None = None  # the live generation this search read
    timings: dict[str, float] = field(default_factory=dict)
    reranker: dict[str, str] = field(default_factory=dict)
    reranked: bool = False
    # How relevant the best passage is, on an absolute scale: the `absolute` fused score
    # (cosine and BM25 over its ceiling, weighted) of the top hit, whatever ranked it.
    relevance: float | None = None
    fusion: dict[str, object] | None = None  # hybrid: the fusion used, and where it came from
    filters: dict[str, Any] = field(default_factory=dict)  # the metadata filters applied

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "mode": self.mode,
            "generation": self.generation_id,
            "reranked": self.reranked,
            "reranker": self.reranker,
            "relevance": self.relevance,
            "fusion": self.fusion,
            "filters": self.filters,
            "timings": self.timings,
            "results": [{**asdict(h), "page": h.page} for h in self.hits],
        }


class Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.start = time.perf_counter()

    def lap(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[f"{name}_ms"] = round((now - since) * 1000, 2)
        return now


def check_query(query: str) -> str:
    query = (query or "").strip()
    if not query:
        raise Invalid("the query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise Invalid(f"the query is longer than {MAX_QUERY_CHARS} characters")
    return query


@dataclass
class Retrieved:
    """What the retrievers found for a query: each list `depth` deep, and in hybrid mode
    both scores for every candidate of their union."""

    generation: IndexGeneration | None
    bm25: list[tuple[int, float]] = field(default_factory=list)
    dense: list[tuple[int, float]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    # raw, for every candidate holding a query term (one without is BM25+'s floor, `least`)
    bm25_scores: dict[int, float] = field(default_factory=dict)


Pinned = tuple[IndexGeneration, BM25Index]


@contextmanager
def _lexical(
    session: Session, pinned: Pinned | None, database_url: str | None
) -> Iterator[tuple[IndexGeneration | None, BM25Index]]:
    """The generation to search and its BM25 index: the live one (this process's follower,
    held for the query), or one given (to evaluate a generation that is not live yet)."""
    if pinned is not None:
        yield pinned
        return
    follower = lexical_index(database_url)
    with follower.synced(session) as index:
        generation_id = follower.generation_id
        yield (session.get(IndexGeneration, generation_id) if generation_id else None), index


def retrieve(
    session: Session,
    query: str,
    *,
    mode: Mode,
    depth: int,
    collections: Sequence[int] | None,
    settings: Settings,
    clock: Clock,
    pinned: Pinned | None = None,
    documents: Sequence[int] | None = None,
) -> Retrieved:
    """`collections` and `documents` (ids; None: no restriction) say which chunks may be
    found; both retrievers apply them before ranking."""
    allowed = None if collections is None else sorted(set(collections))
    kept = None if documents is None else np.unique(np.asarray(documents, dtype=np.int64))
    t = time.perf_counter()
    with _lexical(session, pinned, settings.database_url) as (generation, index):
        total_rows = len(index)
        if kept is not None:  # (the documents are of the allowed collections already)
            allowed_rows: int | None = index.count_documents(kept.tolist())
        else:
            allowed_rows = None if allowed is None else index.count(allowed)
        if mode != "dense":
            matched = index.matches(tokenize(query), allowed, kept)
    t = clock.lap("bm25" if mode != "dense" else "generation", t)  # dense: which is live
    if generation is None:
        return Retrieved(generation=None)
    found = Retrieved(generation=generation)
    if mode != "dense":
        found.bm25 = top_k(matched.ids, matched.scores, depth)
    if mode == "bm25" or (kept is not None and not len(kept)):
        return found

    query_vector = get_embedder(generation.embedding_model).encode([query], kind="query")[0]
    t = clock.lap("embed", t)
    found.dense = dense.dense_search(
        session,
        query_vector,
        generation_id=generation.id,
        dimension=generation.dimension,
        depth=depth,
        ef_search=settings.hnsw_ef_search,
        allowed=allowed,
        allowed_rows=allowed_rows,
        total_rows=total_rows,
        documents=None if kept is None else kept.tolist(),
    )
    t = clock.lap("dense", t)
    if mode == "dense":
        return found

    # Hybrid: the union of both lists, each candidate with both of its exact scores.
    bm25_scores, dense_scores = dict(found.bm25), dict(found.dense)
    union = list(dict.fromkeys([c for c, _ in found.bm25] + [c for c, _ in found.dense]))
    missing = [c for c in union if c not in dense_scores]
    dense_scores.update(
        dense.similarities(session, query_vector, dimension=generation.dimension, chunk_ids=missing)
    )
    missing = [c for c in union if c not in bm25_scores]
    if missing:
        hit = np.isin(matched.ids, missing)
        bm25_scores.update(
            zip(matched.ids[hit].tolist(), matched.scores[hit].tolist(), strict=True)
        )
    least, span = matched.least, matched.most - matched.least
    found.bm25_scores = {c: bm25_scores[c] for c in union if c in bm25_scores}
    in_bm25, in_dense = {c for c, _ in found.bm25}, {c for c, _ in found.dense}
    found.candidates = [
        Candidate(
            c,
            (bm25_scores.get(c, least) - least) / span if span > 0 else 0.0,
            dense_scores.get(c, -1.0),
            bm25_top=c in in_bm25,
            dense_top=c in in_dense,
        )
        for c in union
    ]
    clock.lap("union", t)
    return found


def search(
    session: Session,
    query: str,
    *,
    mode: Mode = "hybrid",
    k: int | None = None,
    collections: Sequence[int] | None = None,
    rerank: bool = True,
    settings: Settings | None = None,
    filters: Filters | None = None,
) -> SearchResult:
    """Search the live index. `collections`: the collection ids that may be searched (None:
    all); `filters`: metadata filters, resolved to the documents they keep. Both apply
    before ranking, in BM25 and in SQL alike."""
    settings = settings or get_settings()
    query = check_query(query)
    if mode not in MODES:
        raise Invalid(f"mode must be one of {', '.join(MODES)}")
    k = k or settings.search_k
    clock = Clock()
    result = SearchResult(query=query, mode=mode, hits=[])
    result.reranker = {"status": "off", "detail": "reranking applies to hybrid search"}
    reranker = None
    if mode == "hybrid" and rerank:
        reranker = get_reranker(settings.reranker_model)
        result.reranker = {"status": reranker.status, "detail": reranker.detail}
    use_rerank = reranker is not None and reranker.loaded
    depth = max(settings.fusion_depth, k) if mode == "hybrid" else k
    documents = None
    if filters is not None and filters.active:
        result.filters = filters.describe()
        t = time.perf_counter()
        documents = document_ids(session, filters, collections)
        clock.lap("filters", t)
    found = retrieve(
        session,
        query,
        mode=mode,
        depth=depth,
        collections=collections,
        settings=settings,
        clock=clock,
        documents=documents,
    )
    result.generation_id = found.generation.id if found.generation else None
    t = time.perf_counter()
    fused: dict[int, float] = {}
    if mode == "hybrid":
        fusion = (
            fusion_for(session, collections, found.generation.id, settings)
            if found.generation is not None
            else default_fusion(settings)
        )
        result.fusion = fusion.to_dict()
        ranked = fuse(found.candidates, fusion.method, fusion.dense_weight)
        fused = dict(ranked)
        order = [c for c, _ in ranked]
        t = clock.lap("fusion", t)
    else:
        order = [c for c, _ in (found.bm25 if mode == "bm25" else found.dense)]

    keep = order[: max(k, settings.rerank_depth)] if use_rerank else order[:k]
    hits = _load_hits(session, keep)
    t = clock.lap("fetch", t)
    rerank_scores: dict[int, float] = {}
    if use_rerank and hits:
        assert reranker is not None
        scores = reranker.score(query, [h.context for h in hits])
        rerank_scores = {h.chunk_id: float(s) for h, s in zip(hits, scores, strict=True)}
        hits.sort(key=lambda h: (-rerank_scores[h.chunk_id], h.chunk_id))
        result.reranked = True
        clock.lap("rerank", t)
    bm25 = found.bm25_scores or dict(found.bm25)
    dense_scores = {c.chunk_id: c.dense for c in found.candidates} or dict(found.dense)
    hits = hits[:k]
    for rank, hit in enumerate(hits, start=1):
        hit.rank = rank
        hit.scores = {
            "bm25": bm25.get(hit.chunk_id) if mode != "dense" else None,
            "dense": dense_scores.get(hit.chunk_id) if mode != "bm25" else None,
            "fused": fused.get(hit.chunk_id) if mode == "hybrid" else None,
            "rerank": rerank_scores.get(hit.chunk_id) if result.reranked else None,
        }
    result.hits = hits
    if hits and mode == "hybrid":
        top = next(c for c in found.candidates if c.chunk_id == hits[0].chunk_id)
        result.relevance = fuse([top], "absolute", settings.fusion_dense_weight)[0][1]
    clock.lap("total", clock.start)
    result.timings = clock.timings
    record_search(mode, clock.timings)
    return result


def default_fusion(settings: Settings) -> Fusion:
    return Fusion(settings.fusion_method, settings.fusion_dense_weight, "default")


def fusion_for(
    session: Session, collections: Sequence[int] | None, generation_id: int, settings: Settings
) -> Fusion:
    """The fusion for a search of these collections in this generation: a single collection's
    calibration when it has one for the generation, else the default."""
    if collections is not None and len(set(collections)) == 1:
        row = session.get(FusionCalibration, next(iter(collections)))
        if row is not None and row.generation_id == generation_id:
            return Fusion(cast(FusionMethod, row.method), row.dense_weight, row.source)
    return default_fusion(settings)


def _load_hits(session: Session, chunk_ids: list[int]) -> list[Hit]:
    """The chunks with their documents, in the order given (chunks deleted since are gone)."""
    if not chunk_ids:
        return []
    rows = session.execute(
        select(Chunk, Document.filename, Document.title, Collection.name, Document.source_url)
        .join(Document, Document.id == Chunk.document_id)
        .join(Collection, Collection.id == Document.collection_id)
        .where(any_of(Chunk.id, chunk_ids))
    ).all()
    by_id = {
        chunk.id: Hit(
            rank=0,
            chunk_id=chunk.id,
            document_id=chunk.document_id,
            document=filename,
            title=title,
            collection=collection,
            page_start=chunk.page_start,
            page_end=chunk.page_end,
            char_start=chunk.char_start,
            char_end=chunk.char_end,
            heading_path=list(chunk.heading_path),
            text=chunk.text,
            scores={},
            generation_id=chunk.generation_id,
            url=url,
        )
        for chunk, filename, title, collection, url in rows
    }
    return [by_id[c] for c in chunk_ids if c in by_id]
