"""An answer's trace, stored with its message: the rewritten query, each stage's time, every
passage with every score, the fusion, the prompt exactly as the LLM server received it, time
to first token, tokens per second, and each sentence's citation check; and each answer's
outcome and relevance on the message itself."""

from __future__ import annotations

import asyncio
import json

from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from app.config import Settings
from app.conversations.store import trace_of
from app.db import session_scope
from app.generation.answer import answer, collect
from app.generation.llm import LLMClient
from app.infra.worker_process import WorkerProcess
from app.main import create_app
from app.models import Collection, Message
from tests.helpers import serving


class RecordingLLM:
    """A test stand-in for an OpenAI-compatible server: streams `words` one chunk each, then
    the usage it was asked for, and keeps every request body it received."""

    def __init__(self, words: list[str], usage: dict | None):
        self.bodies: list[dict] = []

        async def models(request: Request):
            return JSONResponse({"data": [{"id": "recording"}]})

        async def chat(request: Request):
            body = await request.json()
            self.bodies.append(body)

            async def events():
                for i, word in enumerate(words):
                    finish = "stop" if i == len(words) - 1 else None
                    chunk = {"choices": [{"delta": {"content": word}, "finish_reason": finish}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                    await asyncio.sleep(0.01)
                if usage and body.get("stream_options", {}).get("include_usage"):
                    yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        self.app = Starlette(
            routes=[
                Route("/v1/models", models),
                Route("/v1/chat/completions", chat, methods=["POST"]),
            ]
        )


WORDS = ["The Eiffel ", "Tower was ", "finished in ", "1889 [1]. ", "Coffee is ", "blue [2]."]


def collection_id(name: str) -> int:
    with session_scope() as s:
        return s.scalars(select(Collection.id).where(Collection.name == name)).one()


def test_trace_of_an_answer_and_of_its_follow_up(
    settings: Settings, worker: WorkerProcess, facts: str, auth: dict[str, str]
):
    usage = {"prompt_tokens": 211, "completion_tokens": 12, "total_tokens": 223}
    fake = RecordingLLM(WORDS, usage)
    with serving(fake.app) as url:
        llm = settings.model_copy(update={"llm_base_url": f"{url}/v1", "llm_model": "recording"})
        with TestClient(create_app(llm), headers=auth) as client:
            question = {"question": "When was the Eiffel Tower finished?", "collection": facts}
            first = client.post("/api/ask", json=question).json()
            follow = client.post(
                "/api/ask",
                json={"question": "And where is it?", "conversation_id": first["conversation_id"]},
            ).json()
            page = client.get(f"/admin/answers/{first['message_id']}").text
            api = client.get(f"/api/admin/answers/{follow['message_id']}/trace").json()

    with session_scope() as s:
        trace = trace_of(s, first["message_id"])
        message = s.get(Message, first["message_id"])
        assert trace is not None and message is not None
        assert message.outcome == "answered" and message.relevance == trace["search"]["relevance"]
    assert trace["outcome"] == "answered" and trace["question"] == question["question"]
    assert trace["rewrite"] is None and trace["query"] == first["query"]
    search = trace["search"]
    assert search["mode"] == "hybrid" and search["fusion"]["method"] == settings.fusion_method
    assert search["fusion"]["source"] == "default"  # no labels: no calibration
    assert search["fusion"]["dense_weight"] == settings.fusion_dense_weight
    assert {"bm25_ms", "embed_ms", "dense_ms", "fusion_ms", "fetch_ms", "total_ms"} <= set(
        search["timings"]
    )
    assert trace["decision"] == {
        "relevance": search["relevance"],
        "on": "fused",
        "threshold": settings.abstain_threshold,
        "abstained": False,
    }
    passages = trace["passages"]
    assert passages[0]["document"] == "tower.md" and passages[0]["n"] == 1
    assert all(set(p["scores"]) == {"bm25", "dense", "fused", "rerank"} for p in passages)
    assert all(None not in (p["scores"]["dense"], p["scores"]["fused"]) for p in passages)
    # The prompt as sent: exactly the body the server received.
    assert trace["prompt"] == fake.bodies[0]
    assert trace["prompt"]["messages"][-1]["content"].count("Eiffel") >= 1
    assert fake.bodies[0]["stream_options"] == {"include_usage": True}
    llm_stats = trace["llm"]
    assert llm_stats["prompt_tokens"] == 211 and llm_stats["completion_tokens"] == 12
    assert llm_stats["tokens_counted_by"] == "server" and llm_stats["finish_reason"] == "stop"
    assert 0 < llm_stats["first_token_ms"] < llm_stats["total_ms"]
    assert llm_stats["tokens_per_s"] > 0
    sentences = trace["citations"]["sentences"]
    assert trace["citations"]["threshold"] == settings.citation_support_threshold
    assert [c["cited"] for c in sentences] == [[1], [2]]
    assert sentences[0]["supported"] and not sentences[1]["supported"]  # coffee is not blue
    assert all(isinstance(c["score"], float) for c in sentences)
    assert set(trace["timings"]) >= {"retrieval_ms", "ttft_ms", "llm_ms", "total_ms"}

    # The page shows it all.
    for shown in (
        "The prompt as sent",
        "tower.md",
        "LLM time to first token",
        "Tokens per second",
        "211 in the prompt",
        "counted by the server",
        settings.fusion_method,
        "not supported",
        "search · embed",
        "answer · ttft",
    ):
        assert shown in page, shown

    # The follow-up: the rewrite and its prompt are in the trace.
    follow_trace = api["trace"]
    rewrite = follow_trace["rewrite"]
    assert rewrite["messages"] == fake.bodies[1]["messages"]  # the rewrite request
    assert rewrite["query"] == follow_trace["query"] == api["message"]["query"]
    assert rewrite["llm"]["completion_tokens"] == 12 and rewrite["error"] is None
    assert api["question"] == "And where is it?"


def test_trace_of_a_decline_and_of_an_unreachable_llm(settings: Settings, facts: str):
    nowhere = settings.model_copy(update={"llm_base_url": "http://127.0.0.1:9/v1"})
    declined = asyncio.run(
        collect(
            answer(
                "What is the boiling point of liquid nitrogen in kelvin?",
                settings=nowhere,
                collections=[collection_id(facts)],
            )
        )
    )
    failed = asyncio.run(
        collect(
            answer(
                "When was the Eiffel Tower finished?",
                settings=nowhere,
                collections=[collection_id(facts)],
            )
        )
    )
    with session_scope() as s:
        no = trace_of(s, declined["message_id"])
        broken = trace_of(s, failed["message_id"])
        assert s.get(Message, declined["message_id"]).outcome == "abstained"  # type: ignore[union-attr]
        assert s.get(Message, failed["message_id"]).outcome == "error"  # type: ignore[union-attr]
    assert no is not None and broken is not None
    assert no["decision"]["abstained"] and no["prompt"] is None and no["llm"] is None
    assert no["decision"]["relevance"] < no["decision"]["threshold"]
    assert all(p["n"] is None for p in no["passages"])  # none went to an LLM
    assert broken["outcome"] == "error" and "unreachable" in broken["error"]
    assert broken["prompt"]["messages"] and broken["llm"]["first_token_ms"] is None


def test_tokens_are_counted_from_chunks_when_the_server_reports_no_usage(settings: Settings):
    fake = RecordingLLM(["one ", "two ", "three"], usage=None)
    with serving(fake.app) as url:
        client = LLMClient(settings.model_copy(update={"llm_base_url": f"{url}/v1"}))

        async def run() -> str:
            return "".join([t async for t in client.stream([{"role": "user", "content": "hi"}])])

        assert asyncio.run(run()) == "one two three"
    stats = client.stats.to_dict()
    assert stats["completion_tokens"] == 3 and stats["tokens_counted_by"] == "chunks"
    assert stats["prompt_tokens"] is None and stats["first_token_ms"] is not None
