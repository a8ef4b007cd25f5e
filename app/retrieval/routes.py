"""Search: the JSON API (GET /api/search) and the page at /search, one code path."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup, escape
from pydantic import BaseModel, Field

from app.collections.access import search_scope
from app.collections.service import list_collections
from app.config import SEARCH_K_MAX
from app.errors import Invalid
from app.retrieval.filters import CONTENT_TYPES, FILTER_NAMES, Filters
from app.retrieval.search import MODES, Mode, search
from app.retrieval.tokenize import matched_terms, tokenize
from app.web.deps import CsrfDep, CurrentUser, SessionDep, readable
from app.web.render import TEMPLATES, render

api = APIRouter(prefix="/api", tags=["search"], dependencies=[CsrfDep])
pages = APIRouter(dependencies=[CsrfDep], include_in_schema=False)


class HitOut(BaseModel):
    rank: int
    chunk_id: int
    document_id: int
    document: str
    title: str | None
    collection: str
    page: int | None
    page_start: int | None
    page_end: int | None
    char_start: int
    char_end: int
    heading_path: list[str]
    text: str
    scores: dict[str, float | None]
    generation_id: int
    url: str | None = None  # a web page's address


class FusionOut(BaseModel):
    method: str
    dense_weight: float
    source: str  # default, eval set, feedback


class SearchOut(BaseModel):
    query: str
    mode: str
    generation: int | None
    reranked: bool
    reranker: dict[str, str]
    relevance: float | None
    fusion: FusionOut | None  # hybrid: how the two lists were fused, and why
    filters: dict[str, Any] = {}
    timings: dict[str, float]
    results: list[HitOut]


class FilterQuery(BaseModel):
    """The metadata filters as query parameters (lists repeated, or with commas)."""

    file_types: list[str] | None = Field(None, description="pdf, docx, html, markdown, text")
    document: str | None = Field(None, description="file name glob: * and ? (any case)")
    uploaded_from: str | None = Field(None, description="YYYY-MM-DD, uploaded on or after")
    uploaded_to: str | None = Field(None, description="YYYY-MM-DD, uploaded on or before")
    labels: list[str] | None = Field(None, description="any of these labels")

    def filters(self) -> Filters | None:
        return Filters.parse(**self.model_dump())


FilterParams = Annotated[FilterQuery, Query()]
SEARCH_PARAMS = frozenset({"q", "collection", "k", "mode", "rerank", *FILTER_NAMES})


def known_params_only(request: Request) -> None:
    """A misspelt filter must not be ignored silently: unknown parameters are refused."""
    unknown = sorted(set(request.query_params) - SEARCH_PARAMS)
    if unknown:
        raise Invalid(
            f"unknown parameter {unknown[0]!r}: the parameters are "
            + ", ".join(sorted(SEARCH_PARAMS))
        )


@api.get("/search", response_model=SearchOut, dependencies=[Depends(known_params_only)])
def search_api(
    session: SessionDep,
    who: CurrentUser,
    q: Annotated[str, Query(description="the question or keywords", max_length=2000)],
    filter_query: FilterParams,
    collection: Annotated[str | None, Query(description="only this collection")] = None,
    k: Annotated[int | None, Query(ge=1, le=SEARCH_K_MAX, description="passages to return")] = None,
    mode: Annotated[Mode, Query(description="bm25, dense or hybrid")] = "hybrid",
    rerank: Annotated[bool, Query(description="rerank hybrid results when loaded")] = True,
) -> dict:
    """Ranked passages with each stage's score (bm25, dense, fused, rerank) and the time
    each stage took. `reranker` says whether the cross-encoder was used, or why not. The
    metadata filters (file type, document name, upload dates, labels) narrow the passages
    before ranking; `filters` echoes those applied."""
    filters = filter_query.filters()
    allowed = search_scope(session, who.user, collection)
    return search(
        session, q, mode=mode, k=k, collections=allowed, rerank=rerank, filters=filters
    ).to_dict()


_WORD = re.compile(r"\w+", re.UNICODE)


def highlight(text: str, query: str) -> Markup:
    """The passage, escaped, with the words that match the query's stems marked."""
    stems = matched_terms(query)
    out, pos = [], 0
    for m in _WORD.finditer(text):
        word = m.group(0)
        if len(word) > 1 and set(tokenize(word)) & stems:
            out.append(escape(text[pos : m.start()]))
            out.append(Markup("<mark>") + escape(word) + Markup("</mark>"))
            pos = m.end()
    out.append(escape(text[pos:]))
    return Markup("").join(out)


TEMPLATES.env.filters["highlight"] = highlight


def without_link(q: str, collection: str, mode: str, filters: Filters, name: str, value) -> str:
    """The search page's address for the same search less one filter (a chip's ×)."""
    params = [("q", q), ("collection", collection), ("mode", mode)]
    return "/search?" + urlencode(params + filters.without(name, value).query())


@pages.get("/search", response_class=HTMLResponse)
def search_page(
    request: Request,
    session: SessionDep,
    who: CurrentUser,
    filter_query: FilterParams,
    q: str = "",
    collection: str = "",
    mode: Mode = "hybrid",
):
    visible = readable(session, who)
    filters = filter_query.filters()
    result = None
    if q.strip():
        allowed = search_scope(session, who.user, collection or None)
        result = search(session, q, mode=mode, collections=allowed, filters=filters)
    chips = []
    if filters is not None:
        chips = [
            (text, without_link(q, collection, mode, filters, name, value))
            for name, value, text in filters.chips()
        ]
    context = {
        "active": "search",
        "q": q,
        "mode": mode,
        "modes": MODES,
        "collection": collection,
        "collections": [c.name for c, _ in list_collections(session, visible)],
        "result": result,
        "filters": filters.describe() if filters else {},
        "chips": chips,
        "file_types": list(CONTENT_TYPES),
    }
    return render(request, "search.html", context, fragment="_search_results.html")
