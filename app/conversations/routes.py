"""Asking: the chat page at / (streamed over server-sent events), the citation side panel,
feedback, and POST /api/ask (SSE when asked for `text/event-stream`, JSON otherwise)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse
from markupsafe import Markup, escape
from pydantic import BaseModel, ConfigDict, Field

from app.accounts.service import SignedIn
from app.collections.access import can_read, search_scope
from app.collections.service import list_collections
from app.config import Settings
from app.conversations.store import own_conversation, own_message, recent_conversations
from app.errors import Invalid, NotFound
from app.generation.answer import MAX_QUESTION_CHARS, Event, answer, check_question, collect
from app.models import Document, Message
from app.retrieval.filters import CONTENT_TYPES, Filters
from app.web.deps import CsrfDep, CurrentUser, SessionDep, SettingsDep, readable
from app.web.render import TEMPLATES, render
from app.web.sse import EventStream

pages = APIRouter(dependencies=[CsrfDep], include_in_schema=False)
api = APIRouter(prefix="/api", tags=["ask"], dependencies=[CsrfDep])
CONTEXT_CHARS = 700  # surrounding text shown around a cited passage


def sse(event: Event) -> str:
    return f"event: {event.kind}\ndata: {json.dumps(event.data)}\n\n"


def scope(
    session, who: SignedIn, collection: str | None, conversation_id: int | None
) -> tuple[list[int] | None, int | None]:
    """What may be searched (collection ids, None for all) and the collection to record: what
    the person may read, narrowed to the chosen collection; a follow-up stays in its
    conversation's collection."""
    if conversation_id is not None:
        conversation = own_conversation(session, who.user.id, conversation_id)
        if conversation.collection_id is None:
            return search_scope(session, who.user), None
        if not can_read(session, who.user, conversation.collection_id):
            raise NotFound(f"no conversation {conversation_id}")
        return [conversation.collection_id], conversation.collection_id
    collections = search_scope(session, who.user, collection)
    return collections, collections[0] if collection and collections else None


def render_answer(message_id: int, text: str, citations: list[dict[str, Any]]) -> Markup:
    """The answer, escaped, one span per sentence (supported or not), with working [n]."""
    out = []
    remaining = text
    for c in citations:
        at = remaining.find(c["text"])
        if at < 0:
            continue
        out.append(_markers(message_id, remaining[:at]))
        label = "supported" if c["supported"] else "unsupported"
        title = (
            f"supported by passage {c['n']} (similarity {c['score']:.2f})"
            if c["supported"]
            else f"not supported by any passage (best similarity {c['score']:.2f})"
        )
        cite = ""
        if c["supported"] and c["n"] not in c["cited"]:
            cite = _marker(message_id, c["n"], inferred=True)
        out.append(
            Markup('<span class="sentence {}" title="{}">{}</span>{}').format(
                label, title, c["text"], Markup(cite)
            )
        )
        remaining = remaining[at + len(c["text"]) :]
    out.append(_markers(message_id, remaining))
    return Markup("").join(out)


def _marker(message_id: int, n: int, inferred: bool = False) -> str:
    extra = " inferred" if inferred else ""
    hint = "linked by Groundwork" if inferred else "cited by the model"
    return (
        f'<button type="button" class="cite{extra}" title="passage {n} ({hint})" '
        f'hx-get="/chat/messages/{message_id}/passages/{n}" hx-target="#side">[{n}]</button>'
    )


def _markers(message_id: int, text: str) -> Markup:
    escaped = str(escape(text))
    return Markup(
        re.sub(
            r"\[(\d+(?:, \d+)*)\]",
            lambda m: "".join(_marker(message_id, int(n)) for n in m.group(1).split(", ")),
            escaped,
        )
    )


TEMPLATES.env.globals["render_answer"] = render_answer


def message_view(message: Message) -> dict[str, Any]:
    citations = [
        {
            "text": c.text,
            "n": c.n,
            "cited": list(c.cited),
            "supported": c.supported,
            "score": c.score,
        }
        for c in message.citations
    ]
    return {"message": message, "citations": citations}


@pages.get("/", response_class=HTMLResponse)
def chat_page(request: Request, session: SessionDep, who: CurrentUser, c: int | None = None):
    current = own_conversation(session, who.user.id, c) if c else None
    context: dict[str, Any] = {
        "active": "chat",
        "conversations": recent_conversations(session, who.user.id),
        "current": current,
        "messages": [message_view(m) for m in current.messages] if current else [],
        "collections": [col.name for col, _ in list_collections(session, readable(session, who))],
        "selected": current.collection_id if current else None,
        "filters": {},
        "file_types": list(CONTENT_TYPES),
    }
    return render(request, "chat.html", context)


async def _stream(events: AsyncIterator[Event], render_html: bool) -> AsyncIterator[str]:
    async for event in events:
        if render_html and event.kind == "done":
            html = render_answer(
                event.data["message_id"], event.data["answer"], event.data["citations"]
            )
            event = Event("done", {**event.data, "html": str(html)})
        yield sse(event)


@pages.post("/chat/ask")
async def chat_ask(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    who: CurrentUser,
    question: Annotated[str, Form()] = "",
    conversation_id: Annotated[int | None, Form()] = None,
    collection: Annotated[str, Form()] = "",
    file_types: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies defaults)
    document: Annotated[str, Form()] = "",
    uploaded_from: Annotated[str, Form()] = "",
    uploaded_to: Annotated[str, Form()] = "",
    labels: Annotated[str, Form()] = "",
):
    question = check_question(question)
    filters = Filters.parse(
        file_types=file_types,
        document=document,
        uploaded_from=uploaded_from,
        uploaded_to=uploaded_to,
        labels=labels,
    )
    collections, collection_id = scope(session, who, collection or None, conversation_id)
    events = answer(
        question,
        settings=settings,
        collections=collections,
        conversation_id=conversation_id,
        collection_id=collection_id,
        source="web",
        user_id=who.user.id,
        filters=filters,
    )
    return EventStream(_stream(events, render_html=True))


@pages.get("/chat/messages/{message_id}/passages/{n}", response_class=HTMLResponse)
def passage_panel(request: Request, message_id: int, n: int, session: SessionDep, who: CurrentUser):
    """A cited passage, highlighted inside its surrounding text, with its document."""
    message = own_message(session, who.user.id, message_id)
    passage = next((p for p in message.retrieved if p["n"] == n), None)
    if passage is None:
        raise NotFound(f"message {message_id} has no passage {n}")
    doc = session.get(Document, passage["document_id"])
    if doc is not None and not can_read(session, who.user, doc.collection_id):
        doc = None  # read access was withdrawn: show the passage as it was, no more
    before = after = ""
    text = passage["text"]
    if doc is not None and doc.text is not None:
        start, end = passage["char_start"], passage["char_end"]
        if doc.text[start:end] == text:  # the document has not changed since
            before = doc.text[max(0, start - CONTEXT_CHARS) : start]
            after = doc.text[end : end + CONTEXT_CHARS]
    evidence = next(
        (
            (c.evidence_start, c.evidence_end)
            for c in message.citations
            if c.n == n and c.evidence_start is not None
        ),
        None,
    )
    return render(
        request,
        "_passage.html",
        {
            "passage": passage,
            "document": doc,
            "before": before,
            "after": after,
            "evidence": evidence,
            "ocr": ocr_of(doc, passage),
        },
    )


def ocr_of(doc: Document | None, passage: dict[str, Any]) -> list[float]:
    """The OCR confidence of each page the passage spans, when OCR read them."""
    if doc is None or not doc.ocr_pages or not passage.get("page"):
        return []
    first = passage["page"]
    last = passage.get("page_end") or first
    found = (doc.ocr_pages.get(str(p)) for p in range(first, min(last, first + 20) + 1))
    return [c for c in found if c is not None]


@pages.post("/chat/messages/{message_id}/feedback", response_class=HTMLResponse)
def feedback(
    request: Request,
    message_id: int,
    session: SessionDep,
    who: CurrentUser,
    value: Annotated[int, Form()],
    comment: Annotated[str, Form(max_length=2000)] = "",
):
    message = own_message(session, who.user.id, message_id)
    if message.role != "assistant":
        raise NotFound(f"no answer {message_id}")
    if value not in (1, -1):
        raise Invalid("feedback is 1 (up) or -1 (down)")
    message.feedback = value
    message.feedback_comment = comment.strip() or None
    return render(request, "_feedback.html", {"m": message})


class AskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored

    question: str = Field(description="the question", max_length=MAX_QUESTION_CHARS)
    collection: str | None = Field(None, description="only this collection")
    conversation_id: int | None = Field(None, description="a follow-up in this conversation")
    filters: Filters | None = Field(None, description="metadata filters the passages must pass")


class CitationOut(BaseModel):
    sentence: int
    n: int | None
    cited: list[int]
    document: str | None
    document_id: int | None
    url: str | None = None  # a web page's address
    page: int | None
    chunk_id: int | None
    text: str
    evidence: str | None
    supported: bool
    score: float


class AskOut(BaseModel):
    answer: str
    abstained: bool
    citations: list[CitationOut]
    query: str
    filters: dict[str, Any] = {}  # the metadata filters applied
    timings: dict[str, float]
    conversation_id: int
    message_id: int
    passages: list[dict[str, Any]]
    truncated: bool = False  # cut at ANSWER_MAX_TOKENS (the answer says so too)


def start_answer(body: AskIn, session, settings: Settings, who: SignedIn, source: str):
    question = check_question(body.question)
    collections, collection_id = scope(session, who, body.collection, body.conversation_id)
    return answer(
        question,
        settings=settings,
        collections=collections,
        conversation_id=body.conversation_id,
        collection_id=collection_id,
        source=source,
        user_id=who.user.id,
        filters=body.filters if body.filters is not None and body.filters.active else None,
    )


@api.post(
    "/ask",
    response_model=AskOut,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "JSON, or SSE events "
            "(retrieval, token, done, error) when the client accepts text/event-stream",
        },
        422: {"description": "empty or too long (over 2,000 characters)"},
        502: {"description": "the LLM failed; the passages found are in the body"},
    },
)
async def ask_api(
    body: AskIn, request: Request, session: SessionDep, settings: SettingsDep, who: CurrentUser
):
    """Answer a question from the documents you may read, with checked citations."""
    events = start_answer(body, session, settings, who, source="api")
    if "text/event-stream" in request.headers.get("accept", ""):
        return EventStream(_stream(events, render_html=False))
    result = await collect(events)
    if "error" in result:
        return JSONResponse(
            {
                "error": {"code": "llm_" + result["error_kind"], "message": result["error"]},
                "passages": result.get("passages", []),
                "query": result.get("query"),
            },
            status_code=502,
        )
    return JSONResponse(AskOut.model_validate(result).model_dump(mode="json"))
