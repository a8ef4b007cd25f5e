"""An OpenAI-compatible API at /v1, so that chat front ends (Open WebUI, LibreChat, IDE
assistants) and the official `openai` clients can ask Groundwork as if it were a model.

- `GET /v1/models`: one model per collection the caller may read (`groundwork/<name>`) and
  `groundwork` for all of them.
- `POST /v1/chat/completions`: the last user message is the question; the earlier user and
  assistant messages are the conversation (a follow-up is rewritten into a standalone
  question, as on the chat page); system messages are ignored (the answer comes from the
  documents alone). The answer goes through the same path as the chat page (abstention,
  checked citations), as JSON or streamed (`stream: true`: `chat.completion.chunk` events,
  then `data: [DONE]`). The text keeps its `[n]` markers; the citations travel in the
  extension field `citations` (and `groundwork` holds the rest: passages, query, filters),
  on the response or on the last chunk. The extension request field `filters` takes the
  metadata filters of `app.retrieval.filters`.

Only Groundwork API keys authenticate (`Authorization: Bearer gw_…`), never a browser
session, and the same access rules apply: a collection the caller may not read is a model
that does not exist (404). Errors have OpenAI's shape, `{"error": {"message", "type",
"param", "code"}}` (`error_response`, used by the app's handlers for every /v1 path)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.accounts.service import SignedIn
from app.collections.access import readable_collections, search_scope
from app.collections.service import list_collections
from app.errors import AppError, Invalid, NotFound, Unauthorized
from app.generation.answer import Event, answer, check_question, collect
from app.retrieval.filters import Filters
from app.web.deps import SessionDep, SettingsDep, bearer
from app.web.sse import EventStream

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])
ALL = "groundwork"
PREFIX = "groundwork/"
MAX_MESSAGES = 500
MAX_CONTENT_CHARS = 100_000
HISTORY_CHARS = 4000  # of each earlier message, for the follow-up rewrite
TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def is_v1(request: Request) -> bool:
    return request.url.path == "/v1" or request.url.path.startswith("/v1/")


def error_response(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    kind = TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def app_error_response(err: AppError) -> JSONResponse:
    return error_response(err.status, err.message, err.code)


# -- who is asking ---------------------------------------------------------------------------


def key_holder(request: Request, session: SessionDep) -> SignedIn:
    """The holder of a Groundwork API key: a browser session is not enough here."""
    key = bearer(request)
    who = accounts.api_key_user(session, key) if key else None
    if who is None:
        raise Unauthorized(
            "a valid Groundwork API key is needed (Authorization: Bearer gw_…; make one on "
            "/account)",
            code="invalid_api_key",
        )
    request.state.signed_in = who
    return who


KeyHolder = Annotated[SignedIn, Depends(key_holder)]


# -- models ----------------------------------------------------------------------------------


def model_entry(model_id: str, created: float) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": int(created), "owned_by": "groundwork"}


def models_of(session: Session, who: SignedIn) -> list[dict[str, Any]]:
    collections = list_collections(session, readable_collections(session, who.user))
    first = min((c.created_at.timestamp() for c, _ in collections), default=0)
    return [model_entry(ALL, first)] + [
        model_entry(PREFIX + c.name, c.created_at.timestamp()) for c, _ in collections
    ]


def resolve_model(
    session: Session, who: SignedIn, model: str
) -> tuple[list[int] | None, int | None]:
    """What the model may search (collection ids, None: all) and the collection to record."""
    missing = NotFound(
        f"the model {model!r} does not exist or you do not have access to it "
        f"(GET /v1/models lists yours)",
        code="model_not_found",
    )
    if model == ALL:
        return search_scope(session, who.user), None
    if not model.startswith(PREFIX):
        raise missing
    try:
        scope = search_scope(session, who.user, model[len(PREFIX) :])
    except (NotFound, Invalid):
        raise missing from None
    assert scope is not None
    return scope, scope[0]


@router.get("/models")
def list_models(session: SessionDep, who: KeyHolder) -> dict[str, Any]:
    """`groundwork` (every collection you may read) and `groundwork/<collection>`."""
    return {"object": "list", "data": models_of(session, who)}


@router.get("/models/{model:path}")
def get_model(model: str, session: SessionDep, who: KeyHolder) -> dict[str, Any]:
    found = next((m for m in models_of(session, who) if m["id"] == model), None)
    if found is None:
        resolve_model(session, who, model)  # raises the model's 404
        raise NotFound(f"no model {model!r}", code="model_not_found")
    return found


# -- chat completions ------------------------------------------------------------------------


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str = Field(max_length=MAX_CONTENT_CHARS)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, …: accepted, not used
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = Field(None, max_length=MAX_CONTENT_CHARS)

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(BaseModel):
    """OpenAI's chat-completions body; the sampling options (temperature, max_tokens, …) are
    accepted and left to the server's settings. `filters` is Groundwork's extension."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(max_length=300)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = Field(False, strict=True)  # true or false, not "yes"
    filters: Filters | None = None


def conversation(messages: list[ChatMessage]) -> tuple[list[tuple[str, str]], str]:
    """The earlier (question, answer) pairs and the question: the last message, the user's."""
    if messages[-1].role != "user":
        raise Invalid("the last message must be the user's question", code="invalid_messages")
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    for m in messages[:-1]:
        if m.role == "user":
            question = m.text[:HISTORY_CHARS]
        elif m.role == "assistant" and question is not None and m.text.strip():
            pairs.append((question, m.text[:HISTORY_CHARS]))
            question = None
    return pairs, check_question(messages[-1].text)


def citations_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "n": c["n"],
            "text": c["text"],
            "cited": c["cited"],
            "supported": c["supported"],
            "score": c["score"],
            "document": c["document"],
            "document_id": c["document_id"],
            "page": c["page"],
            "page_end": c["page_end"],
            "passage_id": c["chunk_id"],
        }
        for c in data.get("citations", [])
    ]


def extension(data: dict[str, Any]) -> dict[str, Any]:
    """What Groundwork adds to a completion: the checked answer, whether it declined, the
    passages, the query searched and the filters applied."""
    return {
        "answer": data.get("answer"),
        "abstained": data.get("abstained", False),
        "truncated": data.get("truncated", False),
        "query": data.get("query"),
        "filters": data.get("filters", {}),
        "conversation_id": data.get("conversation_id"),
        "message_id": data.get("message_id"),
        "passages": [
            {
                "n": p["n"],
                "passage_id": p["chunk_id"],
                "document": p["document"],
                "document_id": p["document_id"],
                "title": p["title"],
                "page": p["page"],
                "page_end": p["page_end"],
                "text": p["text"],
            }
            for p in data.get("passages", [])
        ],
    }


@router.post(
    "/chat/completions",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or chunks"},
        401: {"description": "no valid API key"},
        404: {"description": "no such model (or not yours)"},
        502: {"description": "the LLM failed"},
    },
)
async def chat_completions(
    body: ChatRequest, session: SessionDep, settings: SettingsDep, who: KeyHolder
):
    """Answer the last user message from the documents the model covers, with checked
    citations (extension fields `citations` and `groundwork`)."""
    collections, collection_id = resolve_model(session, who, body.model)
    history, question = conversation(body.messages)
    # Commit the key's last use now: the answer runs in units of work of its own, and the
    # key's row must not stay locked while the LLM writes (a client asks concurrently).
    session.commit()
    events = answer(
        question,
        settings=settings,
        collections=collections,
        collection_id=collection_id,
        source="openai",
        user_id=who.user.id,
        filters=body.filters if body.filters is not None and body.filters.active else None,
        history=history,
    )
    created = int(time.time())
    if body.stream:
        return EventStream(chunks(events, body.model, created))
    result = await collect(events)
    if "error" in result:
        return error_response(502, result["error"], "llm_" + result["error_kind"])
    return {
        "id": f"chatcmpl-gw{result['message_id']}",
        "object": "chat.completion",
        "created": created,
        "model": body.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result["answer"]},
                "finish_reason": "length" if result.get("truncated") else "stop",
            }
        ],
        "citations": citations_of(result),
        "groundwork": extension(result),
    }


async def chunks(events: AsyncIterator[Event], model: str, created: int) -> AsyncIterator[str]:
    """The answer's events as `chat.completion.chunk`s. Tokens stream as the LLM writes them;
    the last chunk carries the finish reason, the citations and what the citation check
    changed (an answer that declined without the LLM arrives whole there)."""
    head: dict[str, Any] = {"object": "chat.completion.chunk", "created": created, "model": model}
    streamed: list[str] = []

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return f"data: {json.dumps({**head, 'choices': [choice], **extra})}\n\n"

    async for event in events:
        if event.kind == "retrieval":
            head["id"] = f"chatcmpl-gw{event.data['message_id']}"
            yield chunk({"role": "assistant", "content": ""})
        elif event.kind == "token":
            streamed.append(event.data["text"])
            yield chunk({"content": event.data["text"]})
        elif event.kind == "done":
            data = event.data
            sent = "".join(streamed).strip()
            rest = data["answer"][len(sent) :] if data["answer"].startswith(sent) else ""
            if rest:
                yield chunk({"content": rest})
            finish = "length" if data.get("truncated") else "stop"
            yield chunk({}, finish, citations=citations_of(data), groundwork=extension(data))
        elif event.kind == "error":
            error = {
                "message": event.data["message"],
                "type": "api_error",
                "param": None,
                "code": "llm_" + event.data["kind"],
            }
            yield f"data: {json.dumps({'error': error})}\n\n"
    yield "data: [DONE]\n\n"
