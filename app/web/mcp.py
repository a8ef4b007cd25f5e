"""The MCP server at /mcp (streamable HTTP, the official `mcp` SDK), so that agents can search
and ask the documents: tools `search`, `ask`, `list_collections` and `get_passage`.

Every request needs a Groundwork API key (`Authorization: Bearer gw_…`; 401 without one) and
meets the same access rules as every other interface: `search_scope` decides what a tool may
see, and a collection or passage the caller may not read is answered as missing. The
transport is stateless (each request stands alone), so any web process can answer any
request, and nothing is kept between them. A tool's refusal (bad arguments, no such
collection, the LLM failing) is a tool error (`isError`) with the reason, never a crash."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
import sqlalchemy.exc
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import Field
from sqlalchemy import select
from starlette.types import Receive, Scope, Send

from app.accounts import service as accounts
from app.accounts.service import Account
from app.collections.access import can_read, readable_collections, search_scope
from app.collections.service import list_collections
from app.config import SEARCH_K_MAX, Settings
from app.db import session_scope
from app.errors import AppError
from app.generation.answer import MAX_QUESTION_CHARS, answer, check_question, collect
from app.models import Chunk, Collection, Document
from app.retrieval.filters import Filters
from app.retrieval.search import MAX_QUERY_CHARS, search

ACCOUNT = "groundwork_account"  # where the endpoint leaves the caller, in the request's state
INSTRUCTIONS = (
    "Groundwork answers from a team's own documents. `search` finds passages (with their "
    "document, page and scores), `ask` answers a question with checked citations, "
    "`list_collections` names the collections you may read, `get_passage` reads a passage "
    "with the passages around it. Filters narrow a search to some documents: file types, a "
    "file name glob, upload dates, labels."
)

Query = Annotated[str, Field(max_length=MAX_QUERY_CHARS, description="what to look for")]
CollectionName = Annotated[
    str | None, Field(max_length=100, description="only this collection (default: all yours)")
]
FiltersArg = Annotated[Filters | None, Field(description="metadata filters")]
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def caller(ctx: Context) -> Account:
    request = ctx.request_context.request
    account = getattr(request, "scope", {}).get("state", {}).get(ACCOUNT)
    if not isinstance(account, Account):
        raise ToolError("no Groundwork API key came with this request")
    return account


async def in_thread(work, *args: Any) -> Any:
    """Database work off the event loop; a refusal becomes the tool's error."""
    try:
        return await anyio.to_thread.run_sync(work, *args)
    except AppError as err:
        raise ToolError(err.message) from None


def build_server(settings: Settings) -> MCPServer:
    # MCPServer() configures logging (a handler on the root logger) when nothing has; the app
    # leaves logging to its runner (`groundwork serve`, uvicorn), so undo that.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server: MCPServer = MCPServer("groundwork", instructions=INSTRUCTIONS, version="0.1.0")
    root.handlers[:], root.level = handlers, level

    @server.tool(name="search", annotations=READ_ONLY)
    async def search_tool(
        ctx: Context,
        query: Query,
        collection: CollectionName = None,
        k: Annotated[int, Field(ge=1, le=SEARCH_K_MAX, description="passages to return")] = 10,
        mode: Literal["bm25", "dense", "hybrid"] = "hybrid",
        filters: FiltersArg = None,
    ) -> dict[str, Any]:
        """Search the documents you may read: the best passages for the query, each with its
        passage id, document, page, text and each stage's score."""
        account = caller(ctx)

        def run() -> dict[str, Any]:
            with session_scope(settings) as s:
                allowed = search_scope(s, account, collection)
                result = search(
                    s,
                    query,
                    mode=mode,
                    k=k,
                    collections=allowed,
                    filters=filters,
                    settings=settings,
                )
            return {
                "query": result.query,
                "filters": result.filters,
                "results": [
                    {
                        "passage_id": h.chunk_id,
                        "document": h.document,
                        "document_id": h.document_id,
                        "title": h.title,
                        "collection": h.collection,
                        "page": h.page_start,
                        "page_end": h.page_end,
                        "heading_path": h.heading_path,
                        "text": h.text,
                        "scores": h.scores,
                    }
                    for h in result.hits
                ],
            }

        return await in_thread(run)

    @server.tool()
    async def ask(
        ctx: Context,
        question: Annotated[str, Field(max_length=MAX_QUESTION_CHARS)],
        collection: CollectionName = None,
        filters: FiltersArg = None,
    ) -> dict[str, Any]:
        """Answer a question from the documents you may read. The answer cites passages as
        [n]; each citation says which document and page supports the sentence, or that none
        does. When nothing relevant is found, it says so instead of guessing."""
        account = caller(ctx)

        def scope() -> tuple[str, list[int] | None]:
            with session_scope(settings) as s:
                return check_question(question), search_scope(s, account, collection)

        asked, collections = await in_thread(scope)
        result = await collect(
            answer(
                asked,
                settings=settings,
                collections=collections,
                collection_id=collections[0] if collection and collections else None,
                source="mcp",
                user_id=account.id,
                filters=filters if filters is not None and filters.active else None,
            )
        )
        if "error" in result:
            raise ToolError(f"the LLM failed ({result['error_kind']}): {result['error']}")
        return {
            "answer": result["answer"],
            "abstained": result["abstained"],
            "query": result["query"],
            "filters": result.get("filters", {}),
            "citations": [
                {
                    "sentence": c["text"],
                    "n": c["n"],
                    "supported": c["supported"],
                    "passage_id": c["chunk_id"],
                    "document": c["document"],
                    "page": c["page"],
                }
                for c in result["citations"]
            ],
            "passages": [
                {
                    "n": p["n"],
                    "passage_id": p["chunk_id"],
                    "document": p["document"],
                    "page": p["page"],
                    "text": p["text"],
                }
                for p in result["passages"]
            ],
        }

    @server.tool(name="list_collections", annotations=READ_ONLY)
    async def collections_tool(ctx: Context) -> dict[str, Any]:
        """The collections you may read, with how many documents each holds."""
        account = caller(ctx)

        def run() -> dict[str, Any]:
            with session_scope(settings) as s:
                found = list_collections(s, readable_collections(s, account))
                return {"collections": [{"name": c.name, "documents": n} for c, n in found]}

        return await in_thread(run)

    @server.tool(annotations=READ_ONLY)
    async def get_passage(
        ctx: Context,
        id: Annotated[int, Field(ge=1, le=2**63 - 1, description="a passage id from search")],
        neighbours: Annotated[
            int, Field(ge=0, le=5, description="passages to show on each side")
        ] = 1,
    ) -> dict[str, Any]:
        """A passage by its id (from `search` or `ask`), with the passages just before and
        after it in its document."""
        account = caller(ctx)

        def run() -> dict[str, Any]:
            with session_scope(settings) as s:
                chunk = s.get(Chunk, id)
                if chunk is None or not can_read(s, account, chunk.collection_id):
                    raise ToolError(f"no passage {id}")
                filename, title, collection = s.execute(
                    select(Document.filename, Document.title, Collection.name)
                    .join(Collection, Collection.id == Document.collection_id)
                    .where(Document.id == chunk.document_id)
                ).one()
                first, last = chunk.ordinal - neighbours, chunk.ordinal + neighbours
                around = s.scalars(
                    select(Chunk)
                    .where(
                        Chunk.document_id == chunk.document_id,
                        Chunk.generation_id == chunk.generation_id,
                        Chunk.ordinal.between(first, last),
                    )
                    .order_by(Chunk.ordinal)
                ).all()
                return {
                    "passage": passage_row(chunk),
                    "document": filename,
                    "title": title,
                    "collection": collection,
                    "before": [passage_row(c) for c in around if c.ordinal < chunk.ordinal],
                    "after": [passage_row(c) for c in around if c.ordinal > chunk.ordinal],
                }

        return await in_thread(run)

    return server


def passage_row(chunk: Chunk) -> dict[str, Any]:
    return {
        "passage_id": chunk.id,
        "ordinal": chunk.ordinal,
        "page": chunk.page_start,
        "page_end": chunk.page_end,
        "heading_path": list(chunk.heading_path),
        "text": chunk.text,
    }


class McpEndpoint:
    """The /mcp route: the API key first, then the SDK's streamable HTTP transport."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.server = build_server(settings)
        # Its Starlette app is not used: this endpoint is the route, after the key check.
        # DNS-rebinding protection (Host/Origin allow-lists) is for servers without
        # credentials; every request here carries a key, which no other site can read.
        self.server.streamable_http_app(
            stateless_http=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield

    def _account(self, key: str | None) -> Account | None:
        if not key:
            return None
        with session_scope(self.settings) as s:
            who = accounts.api_key_user(s, key)
            return who.user if who is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":  # the spec's answer when there is no stream to offer
            message = "this MCP server is stateless: it offers no stream to GET; POST requests"
            await _refuse(send, 405, "method_not_allowed", message)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        key = header[7:].strip() if header.lower().startswith("bearer ") else None
        try:
            account = await anyio.to_thread.run_sync(self._account, key)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError):
            await _refuse(send, 503, "unavailable", "the database is not answering: try again")
            return
        if account is None:
            message = "a valid Groundwork API key is needed (Authorization: Bearer gw_…)"
            await _refuse(send, 401, "unauthorized", message)
            return
        scope.setdefault("state", {})[ACCOUNT] = account
        await self.server.session_manager.handle_request(scope, receive, send)


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status == 405:
        headers.append((b"allow", b"POST, DELETE"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
