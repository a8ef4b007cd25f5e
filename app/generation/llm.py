"""One streaming client for the OpenAI chat-completions API: vLLM in production, llama.cpp's
server when embedded, any compatible server elsewhere — one code path.

Time-outs: connecting (LLM_CONNECT_TIMEOUT_S), waiting for a token (the first, and each next:
LLM_FIRST_TOKEN_TIMEOUT_S; keep-alive comments and empty events do not count as tokens) and the
whole answer (LLM_TOTAL_TIMEOUT_S). Closing the stream
(the browser went away, stop was pressed) closes the HTTP connection, which makes vLLM and
llama.cpp abandon the request.

An error the server sends inside the stream (`data: {"error": {...}}`) raises LLMError
("bad_response"). Why the answer ended (`finish_reason` of the last choice: "stop", or
"length" when it hit max_tokens) is kept in `finish_reason` once the stream is read, and how
long it took and how many tokens it had in `stats` (the server's own count when it reports
usage, as vLLM and OpenAI do when asked with `stream_options`; else the chunks it streamed,
one token each from vLLM and llama.cpp)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from app.config import Settings
from app.monitoring.metrics import record_first_token, record_tokens

Failure = Literal[
    "unreachable", "first_token_timeout", "token_timeout", "total_timeout", "bad_response"
]


class LLMError(Exception):
    def __init__(self, message: str, kind: Failure):
        super().__init__(message)
        self.kind = kind


@dataclass
class StreamStats:
    """One streamed request: seconds from sending it to its first token and to its end."""

    first_token_s: float | None = None
    total_s: float | None = None
    chunks: int = 0  # chunks that carried text
    prompt_tokens: int | None = None  # as the server counted them, when it says
    completion_tokens: int | None = None

    @property
    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.chunks

    @property
    def tokens_per_s(self) -> float | None:
        """Generation speed after the first token (the first is time to first token)."""
        if self.first_token_s is None or self.total_s is None or self.tokens < 2:
            return None
        span = self.total_s - self.first_token_s
        return round((self.tokens - 1) / span, 1) if span > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_token_ms": _ms(self.first_token_s),
            "total_ms": _ms(self.total_s),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.tokens,
            "tokens_counted_by": "server" if self.completion_tokens is not None else "chunks",
            "tokens_per_s": self.tokens_per_s,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class LLMClient:
    def __init__(self, settings: Settings):
        if not settings.llm_base_url:
            raise LLMError("no LLM is configured (LLM_BASE_URL)", "unreachable")
        self.base_url = settings.llm_base_url
        self.model = settings.llm_model
        self.settings = settings
        self.finish_reason: str | None = None  # of the last stream read
        self.stats = StreamStats()  # of the last stream read
        self.headers = {"Content-Type": "application/json"}
        if settings.llm_api_key:
            self.headers["Authorization"] = f"Bearer {settings.llm_api_key.get_secret_value()}"

    def _timeout(self) -> httpx.Timeout:
        s = self.settings
        return httpx.Timeout(
            connect=s.llm_connect_timeout_s,
            read=s.llm_first_token_timeout_s,
            write=10.0,
            pool=s.llm_connect_timeout_s,
        )

    def request_body(self, messages: list[dict[str, str]], max_tokens: int, stream: bool) -> dict:
        """What is sent to the server (the trace of an answer keeps it)."""
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stream": stream,
            # The server's own token counts in a last chunk (servers that do not know the
            # option ignore it; the chunks are counted then).
            **({"stream_options": {"include_usage": True}} if stream else {}),
        }

    async def stream(
        self, messages: list[dict[str, str]], *, max_tokens: int = 400, purpose: str = "answer"
    ) -> AsyncGenerator[str, None]:
        """Text as it is generated. `purpose` names the request in /metrics."""
        started = time.monotonic()
        deadline = started + self.settings.llm_total_timeout_s
        # The read time-out alone would not do: a server's SSE keep-alive comments (": ping")
        # reset it, so the time since the last token is checked at every line as well.
        token_timeout = self.settings.llm_first_token_timeout_s
        first = True
        self.finish_reason = None
        self.stats = stats = StreamStats()
        try:
            async with (
                httpx.AsyncClient(timeout=self._timeout()) as client,
                client.stream(
                    "POST",
                    f"{self.base_url}/chat/completions",
                    json=self.request_body(messages, max_tokens, stream=True),
                    headers=self.headers,
                ) as response,
            ):
                if response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace")[:300]
                    raise LLMError(
                        f"the LLM answered {response.status_code}: {body}", "bad_response"
                    )
                last_token = time.monotonic()
                async for line in response.aiter_lines():
                    now = time.monotonic()
                    if now > deadline:
                        raise LLMError(
                            f"the answer took longer than {self.settings.llm_total_timeout_s:.0f}s",
                            "total_timeout",
                        )
                    if now - last_token > token_timeout:  # bytes came, but no token
                        raise httpx.ReadTimeout("only keep-alives")
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    delta, finish_reason, usage = _delta(payload)
                    if finish_reason:
                        self.finish_reason = finish_reason
                    if usage:
                        stats.prompt_tokens = _count(usage.get("prompt_tokens"))
                        stats.completion_tokens = _count(usage.get("completion_tokens"))
                    if delta:
                        if first:
                            stats.first_token_s = time.monotonic() - started
                            record_first_token(purpose, stats.first_token_s)
                        first = False
                        last_token = now
                        stats.chunks += 1
                        yield delta
        except httpx.ConnectError as err:
            raise LLMError(
                f"the LLM at {self.base_url} is unreachable ({err})", "unreachable"
            ) from err
        except httpx.ConnectTimeout as err:
            raise LLMError(
                f"the LLM at {self.base_url} did not answer ({err})", "unreachable"
            ) from err
        except httpx.ReadTimeout as err:
            what = "first" if first else "next"
            raise LLMError(
                f"the LLM sent no {what} token within "
                f"{self.settings.llm_first_token_timeout_s:.0f}s",
                "first_token_timeout" if first else "token_timeout",
            ) from err
        except (httpx.RemoteProtocolError, httpx.ReadError) as err:
            raise LLMError(f"the LLM connection broke ({err})", "bad_response") from err
        finally:  # an answer stopped or failed half-way used its tokens too
            stats.total_s = time.monotonic() - started
            record_tokens(purpose, stats.tokens, stats.prompt_tokens)

    async def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int = 96, purpose: str = "rewrite"
    ) -> str:
        tokens = self.stream(messages, max_tokens=max_tokens, purpose=purpose)
        return "".join([t async for t in tokens]).strip()


def _delta(payload: str) -> tuple[str, str | None, dict[str, Any] | None]:
    """The text of one streamed chunk, its finish_reason and the usage it reports (the last
    chunk, when asked for); an error payload raises."""
    try:
        data: Any = json.loads(payload)
    except ValueError:
        return "", None, None
    if isinstance(data, dict) and data.get("error"):
        error = data["error"]
        message = error.get("message") if isinstance(error, dict) else None
        raise LLMError(f"the LLM reported an error: {message or error}"[:500], "bad_response")
    usage = data.get("usage") if isinstance(data, dict) else None
    usage = usage if isinstance(usage, dict) else None
    try:
        choice = data["choices"][0]
        text = (choice.get("delta") or {}).get("content") or ""
        return text, choice.get("finish_reason"), usage
    except (KeyError, IndexError, TypeError, AttributeError):
        return "", None, usage


def _count(value: Any) -> int | None:
    """A token count as the server sent it, if it is one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def check_llm(settings: Settings) -> dict[str, str]:
    """For /healthz: the server answers and serves the configured model."""
    if not settings.llm_base_url:
        return {"status": "off", "detail": "no LLM configured (LLM_BASE_URL unset, none started)"}
    try:
        response = httpx.get(
            f"{settings.llm_base_url}/models", timeout=settings.llm_connect_timeout_s
        )
        response.raise_for_status()
        models = [m.get("id") for m in response.json().get("data", [])]
    except (httpx.HTTPError, ValueError) as err:
        return {"status": "error", "detail": f"{settings.llm_base_url}: {err}"[:300]}
    if settings.llm_model not in models:
        return {"status": "error", "detail": f"serves {models}, not {settings.llm_model}"}
    return {"status": "ok", "detail": f"{settings.llm_model} at {settings.llm_base_url}"}
