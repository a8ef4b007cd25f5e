"""Two rules every request meets before any route (pure ASGI, so streamed answers stream):

- **Security headers** on every response, pages, API, errors and static files alike: a
  Content-Security-Policy that allows only this site's own scripts (no inline script, no
  eval), no plugins, no framing; `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`,
  `Referrer-Policy: same-origin`. The API docs page (Swagger UI) also needs inline styles and
  `data:` images.
- **No NUL characters in text**: Postgres cannot store them, so a NUL anywhere in the path,
  the query string, or a JSON or form body is refused with 422 here (multipart fields are
  checked where they are parsed, `app.documents.uploads`; file contents are the files').
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_to_bytes

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'").replace(
    "img-src 'self'", "img-src 'self' data:"
)
HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
NUL_MESSAGE = "text may not contain NUL characters (\\0)"
TEXT_BODIES = ("application/json", "application/x-www-form-urlencoded")
MAX_TEXT_BODY = 1 << 20
_ESCAPED_NUL = {  # how a NUL is written in each kind of text body
    "application/json": re.compile(rb"\\u0000", re.I),
    "application/x-www-form-urlencoded": re.compile(rb"%00"),
}


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] == "/docs" else CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", csp)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RefuseNul:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        v1 = scope["path"] == "/v1" or scope["path"].startswith("/v1/")
        if "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(scope["query_string"]):
            await refuse(send, 422, NUL_MESSAGE, v1)
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        if not content_type.startswith(TEXT_BODIES):
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_TEXT_BODY:
                await refuse(send, 413, f"a text body is limited to {MAX_TEXT_BODY} bytes", v1)
                return
        escaped = next(p for kind, p in _ESCAPED_NUL.items() if content_type.startswith(kind))
        if b"\x00" in body or escaped.search(body):
            await refuse(send, 422, NUL_MESSAGE, v1)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def refuse(send: Send, status: int, message: str, v1: bool = False) -> None:
    """The refusal, in OpenAI's error shape under /v1 (`app.web.openai`)."""
    code = "invalid" if status == 422 else "too_large"
    error: dict[str, str | None] = {"code": code, "message": message}
    if v1:
        error.update(type="invalid_request_error", param=None)
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
