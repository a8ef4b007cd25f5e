"""Server-sent events for the answer streams (the chat page, /api/ask and /v1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStream(StreamingResponse):
    """Server-sent events that stop as soon as the reader goes away. (Starlette, under an
    ASGI 2.4 server, only notices a closed connection at the next write, which would leave
    the LLM generating for nobody until its next token; this listens for the disconnect and
    cancels the stream at once, which closes the LLM request.)"""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str]):
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def until_done(func: Callable[[], Awaitable[None]]) -> None:
                await func()
                group.cancel_scope.cancel()

            group.start_soon(until_done, partial(self.stream_response, send))
            await until_done(partial(self.listen_for_disconnect, receive))
