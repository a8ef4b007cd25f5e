"""Grounded answers: citations checked, abstention, the real embedded LLM (llama.cpp with
SmolLM2-135M), failures (unreachable, slow, stopped), storage, the API and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from app.config import Settings
from app.conversations.routes import render_answer
from app.db import session_scope
from app.generation.answer import answer, collect, is_decline
from app.generation.citations import check_citations, split_answer
from app.generation.llm import LLMClient
from app.generation.prompts import NOT_COVERED, Passage, fit_passages
from app.infra.worker_process import WorkerProcess
from app.ingest.embed import get_embedder
from app.main import create_app
from app.models import Collection, Message, MessageCitation
from app.retrieval.search import Hit
from tests.helpers import groundwork, serving


def hit(chunk_id: int, text: str, title: str = "Doc") -> Hit:
    return Hit(
        rank=1,
        chunk_id=chunk_id,
        document_id=chunk_id,
        document=f"{title}.md",
        title=title,
        collection="c",
        page_start=None,
        page_end=None,
        char_start=0,
        char_end=len(text),
        heading_path=[],
        text=text,
        scores={},
    )


PASSAGES = [
    Passage(1, hit(11, "The Eiffel Tower is in Paris. It was finished in 1889.", "Tower")),
    Passage(2, hit(12, "Espresso is brewed by forcing hot water through coffee.", "Coffee")),
]


@pytest.mark.parametrize(
    ("raw", "cleaned", "cited"),
    [
        (
            "It is in Paris [1]. Coffee is brewed with water [2].",
            "It is in Paris [1]. Coffee is brewed with water [2].",
            [[1], [2]],
        ),
        (
            "It is in Paris [7]. It opened in 1889 [1, 9].",
            "It is in Paris. It opened in 1889 [1].",
            [[], [1]],
        ),
        (
            "It is in Paris. [1] Coffee uses water.",
            "It is in Paris. [1] Coffee uses water.",
            [[1], []],
        ),
    ],
)
def test_markers_are_parsed_and_invalid_numbers_dropped(raw: str, cleaned: str, cited: list):
    text, sentences = split_answer(raw, passages=2)
    assert text == cleaned
    assert [c for _, c in sentences] == cited
    assert all("[" not in s for s, _ in sentences)


def test_citations_are_checked_and_relinked(settings: Settings):
    answer_text = (
        "The Eiffel Tower was finished in 1889 [2]. "  # cites the wrong passage
        "Espresso is made by pushing hot water through ground coffee. "  # cites nothing
        "Penguins live mostly in the southern hemisphere [1]."  # supported by nothing
    )
    _, citations = check_citations(answer_text, PASSAGES, get_embedder(), threshold=0.5)
    tower, coffee, penguins = citations
    assert tower.supported and tower.n == 1 and tower.chunk_id == 11 and tower.cited == [2]
    assert "finished in 1889" in PASSAGES[0].hit.text[slice(*tower.evidence)]
    assert coffee.supported and coffee.n == 2 and coffee.cited == []
    assert not penguins.supported and penguins.n is None and penguins.chunk_id is None
    assert penguins.score < 0.5 <= tower.score


def test_answer_html_is_escaped_and_markers_become_buttons():
    html = str(
        render_answer(
            5,
            "<script>alert(1)</script> in Paris [1].",
            [
                {
                    "text": "<script>alert(1)</script> in Paris.",
                    "n": 1,
                    "cited": [1],
                    "supported": True,
                    "score": 0.8,
                }
            ],
        )
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'hx-get="/chat/messages/5/passages/1"' in html and ">[1]</button>" in html


def test_passages_are_fitted_to_the_context_window():
    hits = [hit(i, "word " * 300) for i in range(10)]
    fitted = fit_passages(
        hits, "q?", get_embedder().count_tokens, context_tokens=2048, answer_tokens=300, limit=10
    )
    assert 2 <= len(fitted) < 5 and [p.n for p in fitted] == list(range(1, len(fitted) + 1))


@pytest.mark.parametrize(
    ("text", "declined"),
    [
        ("I cannot find the answer in the documents.", True),
        ("The passages do not mention who built it.", True),
        ("It was finished in 1889 [1].", False),
    ],
)
def test_declines_are_recognised(text: str, declined: bool):
    assert is_decline(text) is declined


# -- through the real parts ------------------------------------------------------------------


def collection_id(name: str) -> int:
    with session_scope() as s:
        return s.scalars(select(Collection.id).where(Collection.name == name)).one()


def ask(settings: Settings, question: str, **kwargs) -> dict:
    return asyncio.run(collect(answer(question, settings=settings, **kwargs)))


def test_answer_streams_from_the_llm_with_checked_citations(llm_settings: Settings, facts: str):
    events = []

    async def run():
        async for event in answer(
            "When was the Eiffel Tower finished?",
            settings=llm_settings,
            collections=[collection_id(facts)],
            source="api",
        ):
            events.append(event)

    asyncio.run(run())
    kinds = [e.kind for e in events]
    assert kinds[0] == "retrieval" and kinds[-1] == "done" and kinds.count("token") > 1
    done = events[-1].data
    assert done["passages"][0]["document"] == "tower.md"
    assert done["answer"] and not done["abstained"]
    assert {"retrieval_ms", "ttft_ms", "total_ms"} <= set(done["timings"])
    with session_scope() as s:
        message = s.get(Message, done["message_id"])
        assert message is not None and message.status == "done"
        assert message.model == "SmolLM2-135M-Instruct" and message.retrieved
        stored = s.scalars(
            select(MessageCitation).where(MessageCitation.message_id == message.id)
        ).all()
    assert len(stored) == len(done["citations"]) >= 1
    for c in done["citations"]:
        assert c["supported"] == (c["n"] is not None) == (c["chunk_id"] is not None)


def test_question_about_something_absent_is_declined_without_the_llm(
    settings: Settings, facts: str
):
    nowhere = settings.model_copy(update={"llm_base_url": "http://127.0.0.1:9/v1"})
    result = ask(
        nowhere,
        "What is the boiling point of liquid nitrogen in kelvin?",
        collections=[collection_id(facts)],
    )
    assert result["abstained"] is True and result["answer"] == NOT_COVERED
    assert "error" not in result  # the unreachable LLM was never asked
    assert result["passages"]  # the closest passages are still shown


def test_unreachable_llm_is_reported_within_2s_with_passages(settings: Settings, facts: str):
    nowhere = settings.model_copy(update={"llm_base_url": "http://127.0.0.1:9/v1"})
    started = time.monotonic()
    result = ask(nowhere, "When was the Eiffel Tower finished?", collections=[collection_id(facts)])
    assert time.monotonic() - started < 2.0 + 1.0  # 2 s to give up, plus retrieval
    assert result["error_kind"] == "unreachable" and "unreachable" in result["error"]
    assert result["passages"][0]["document"] == "tower.md"


class SlowLLM:
    """A test stand-in for a stuck or slow OpenAI-compatible server."""

    def __init__(self, first_token_delay: float, token_delay: float = 0.2, pings: bool = False):
        """`pings`: while it makes the client wait for the first token, the server sends SSE
        keep-alive comments every 0.2 s (as vLLM and llama.cpp's server do)."""
        self.first_token_delay, self.token_delay = first_token_delay, token_delay
        self.pings = pings
        self.disconnected = threading.Event()

        async def models(request: Request):
            return JSONResponse({"data": [{"id": "slow"}]})

        async def chat(request: Request):
            async def tokens():
                finished = False
                try:
                    waited = 0.0
                    while self.pings and waited < self.first_token_delay:
                        yield ": ping\n\n"
                        await asyncio.sleep(0.2)
                        waited += 0.2
                    await asyncio.sleep(max(0.0, self.first_token_delay - waited))
                    for i in range(200):
                        chunk = {"choices": [{"delta": {"content": f"word{i} "}}]}
                        yield f"data: {json.dumps(chunk)}\n\n"
                        await asyncio.sleep(self.token_delay)
                    yield "data: [DONE]\n\n"
                    finished = True
                finally:
                    if not finished:  # the client went away: the stream was dropped
                        self.disconnected.set()

            return StreamingResponse(tokens(), media_type="text/event-stream")

        self.app = Starlette(
            routes=[
                Route("/v1/models", models),
                Route("/v1/chat/completions", chat, methods=["POST"]),
            ]
        )


@pytest.mark.parametrize("pings", [False, True], ids=["silent", "keep-alive pings"])
def test_first_token_timeout_ends_the_stream_with_a_message(
    settings: Settings, facts: str, pings: bool
):
    """The time-out holds whether the server is silent or sends only keep-alive comments
    (which reset a plain read time-out)."""
    slow = SlowLLM(first_token_delay=10, pings=pings)
    with serving(slow.app) as url:
        stuck = settings.model_copy(
            update={
                "llm_base_url": f"{url}/v1",
                "llm_model": "slow",
                "llm_first_token_timeout_s": 1.0,
            }
        )
        started = time.monotonic()
        result = ask(
            stuck, "When was the Eiffel Tower finished?", collections=[collection_id(facts)]
        )
    assert time.monotonic() - started < 5
    assert result["error_kind"] == "first_token_timeout" and "first token" in result["error"]


def test_closing_the_stream_cancels_the_upstream_request(
    settings: Settings, worker: WorkerProcess, facts: str, auth: dict[str, str]
):
    slow = SlowLLM(first_token_delay=0.1)
    with serving(slow.app) as url:
        streaming = settings.model_copy(update={"llm_base_url": f"{url}/v1", "llm_model": "slow"})
        with serving(create_app(streaming)) as app_url:  # stays up: a real server would
            with httpx.stream(
                "POST",
                f"{app_url}/api/ask",
                json={"question": "When was the tower finished?", "collection": facts},
                headers={"Accept": "text/event-stream", **auth},
                timeout=30,
            ) as response:
                message_id, words = None, 0
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        data = json.loads(line[6:])
                        message_id = data.get("message_id", message_id)
                        words += "text" in data
                    if words >= 4:
                        break  # the reader goes away mid-answer
            assert slow.disconnected.wait(10), "the LLM request was not cancelled"
    deadline = time.monotonic() + 10
    while True:
        with session_scope() as s:
            message = s.get(Message, message_id)
            if message is not None and message.status == "stopped":
                break
        assert time.monotonic() < deadline, "the answer was not recorded as stopped"
        time.sleep(0.1)
    assert message.content.startswith("word0 word1")


@pytest.mark.parametrize(("question", "status"), [("", 422), ("x" * 100_000, 422)])
def test_empty_or_huge_questions_are_refused(client: TestClient, question: str, status: int):
    response = client.post("/api/ask", json={"question": question})
    assert response.status_code == status and response.json()["error"]["message"]


def test_api_json_and_follow_up_rewriting(llm_settings: Settings, facts: str, auth: dict[str, str]):
    with TestClient(create_app(llm_settings), headers=auth) as client:
        first = client.post(
            "/api/ask",
            json={"question": "When was the Eiffel Tower finished?", "collection": facts},
        )
        assert first.status_code == 200, first.text
        body = first.json()
        assert set(body) >= {"answer", "abstained", "citations", "query", "timings"}
        follow = client.post(
            "/api/ask",
            json={"question": "Where is it?", "conversation_id": body["conversation_id"]},
        )
        assert follow.status_code == 200
        again = follow.json()
        assert again["conversation_id"] == body["conversation_id"]
        assert "rewrite_ms" in again["timings"] and again["query"]
        page = client.get("/", params={"c": body["conversation_id"]}).text
        assert "Where is it?" in page and f"searched for: {again['query']}"[:30] in page
        thumbs = client.post(
            f"/chat/messages/{again['message_id']}/feedback",
            data={"value": "-1", "comment": "<b>vague</b>"},
        )
        assert thumbs.status_code == 200
    with session_scope() as s:
        message = s.get(Message, again["message_id"])
        assert message is not None and message.feedback == -1
        assert message.feedback_comment == "<b>vague</b>"


def test_cli_ask_json(llm_settings: Settings, facts: str):
    result = groundwork(
        "ask",
        "What is espresso brewed with?",
        "--collection",
        facts,
        "--json",
        env={"LLM_BASE_URL": llm_settings.llm_base_url or ""},
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert set(body) == {"answer", "abstained", "citations", "query", "filters", "timings"}
    assert body["filters"] == {}  # none given
    assert set(body["timings"]) == {"retrieval_ms", "ttft_ms", "total_ms"}
    for c in body["citations"]:
        assert set(c) == {
            "n",
            "document",
            "page",
            "page_end",
            "chunk_id",
            "text",
            "supported",
            "score",
        }


def test_answer_evals_run_end_to_end(llm_settings: Settings, tmp_path: Path):
    squad = {
        "data": [
            {
                "title": "Towers",
                "paragraphs": [
                    {
                        "context": "The Eiffel Tower in Paris was finished in 1889.",
                        "qas": [
                            {
                                "id": "a",
                                "question": "When was the Eiffel Tower finished?",
                                "is_impossible": False,
                                "answers": [{"text": "1889", "answer_start": 42}],
                            },
                            {
                                "id": "b",
                                "question": "Who painted the Eiffel Tower purple?",
                                "is_impossible": True,
                                "answers": [],
                            },
                        ],
                    }
                ],
            }
        ]
    }
    path = tmp_path / "tiny-squad.json"
    path.write_text(json.dumps(squad))
    env = {**os.environ, "LLM_BASE_URL": llm_settings.llm_base_url or ""}
    run = subprocess.run(
        [sys.executable, "-m", "evals", "answers", "--squad", str(path), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["questions"] == 2 and report["answerable"] == 1
    assert set(report["metrics"]) >= {
        "exact_match",
        "f1",
        "unanswerable_declined",
        "answerable_declined",
        "citation_accuracy",
        "retrieval_hit@5",
        "ttft_p50_ms",
        "ttft_p95_ms",
    }
    assert report["metrics"]["retrieval_hit@5"] == 1.0


# -- what the LLM's stream says: errors, nothing, the token limit; concurrent askers ---------


class ScriptedLLM:
    """A test stand-in for an OpenAI-compatible server that streams the given payloads, then
    [DONE]."""

    def __init__(self, payloads: list[dict]):
        async def models(request: Request):
            return JSONResponse({"data": [{"id": "scripted"}]})

        async def chat(request: Request):
            async def events():
                for payload in payloads:
                    yield f"data: {json.dumps(payload)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        self.app = Starlette(
            routes=[
                Route("/v1/models", models),
                Route("/v1/chat/completions", chat, methods=["POST"]),
            ]
        )


def scripted_settings(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"llm_base_url": f"{url}/v1", "llm_model": "scripted"})


def stored(message_id: int) -> Message:
    with session_scope() as s:
        message = s.get(Message, message_id)
        assert message is not None
        return message


def test_error_sent_inside_the_stream_is_an_llm_error(
    settings: Settings, worker: WorkerProcess, facts: str, auth: dict[str, str]
):
    fake = ScriptedLLM(
        [{"error": {"message": "the model ran out of memory", "type": "server_error"}}]
    )
    with (
        serving(fake.app) as url,
        TestClient(create_app(scripted_settings(settings, url)), headers=auth) as client,
    ):
        response = client.post(
            "/api/ask",
            json={"question": "When was the Eiffel Tower finished?", "collection": facts},
        )
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "llm_bad_response"
    assert "the model ran out of memory" in error["message"]
    with session_scope() as s:
        message = s.scalars(select(Message).order_by(Message.id.desc()).limit(1)).one()
        assert message.status == "error" and "ran out of memory" in (message.error or "")


def test_empty_answer_is_an_llm_error_not_a_done_answer(settings: Settings, facts: str):
    fake = ScriptedLLM([{"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}])
    with serving(fake.app) as url:
        result = ask(
            scripted_settings(settings, url),
            "When was the Eiffel Tower finished?",
            collections=[collection_id(facts)],
        )
    assert result["error_kind"] == "bad_response" and "empty answer" in result["error"]
    assert "answer" not in result
    message = stored(result["message_id"])
    assert message.status == "error" and message.error and "empty answer" in message.error


def test_answer_cut_at_the_token_limit_says_so(settings: Settings, facts: str):
    fake = ScriptedLLM(
        [
            {"choices": [{"delta": {"content": "The tower was finished in"}}]},
            {"choices": [{"delta": {"content": " 18"}, "finish_reason": "length"}]},
        ]
    )
    with serving(fake.app) as url:
        result = ask(
            scripted_settings(settings, url),
            "When was the Eiffel Tower finished?",
            collections=[collection_id(facts)],
        )
    assert "error" not in result, result.get("error")
    assert result["truncated"] is True
    assert result["answer"].startswith("The tower was finished in 18")
    assert result["answer"].endswith("[cut at the ANSWER_MAX_TOKENS limit]")
    message = stored(result["message_id"])
    assert message.status == "done" and message.content == result["answer"]


def test_complete_answer_is_not_marked_truncated(settings: Settings, facts: str):
    fake = ScriptedLLM(
        [
            {
                "choices": [
                    {"delta": {"content": "It was finished in 1889 [1]."}, "finish_reason": "stop"}
                ]
            }
        ]
    )
    with serving(fake.app) as url:
        result = ask(
            scripted_settings(settings, url),
            "When was the Eiffel Tower finished?",
            collections=[collection_id(facts)],
        )
    assert result["truncated"] is False and "[cut at" not in result["answer"]


def test_concurrent_requests_to_the_embedded_llm_both_finish(llm_settings: Settings):
    """llama.cpp's server, by default, ends a running request with [DONE] when another
    arrives; the embedded one queues them instead."""
    prompt = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]

    async def one() -> tuple[str, str | None]:
        client = LLMClient(llm_settings)
        text = "".join([t async for t in client.stream(prompt, max_tokens=48)])
        return text, client.finish_reason

    async def both():
        return await asyncio.gather(one(), one())

    for text, finish_reason in asyncio.run(both()):
        assert text.strip(), "an answer was cut off by the other request"
        assert finish_reason in ("stop", "length"), "an answer was ended early"


def test_a_passage_across_a_page_break_names_both_pages():
    """A chunk of a PDF that runs from page 136 into 137 is cited as pages 136-137, not 136
    (its evidence may sit on 137)."""
    from app.cli.query import pages
    from app.generation.answer import passage_json
    from app.retrieval.search import Hit
    from app.web.render import TEMPLATES

    def hit(first: int, last: int) -> Hit:
        return Hit(1, 7, 3, "r.pdf", None, "c", first, last, 0, 4, [], "text", {})

    across, within = passage_json(1, hit(136, 137)), passage_json(2, hit(5, 5))
    assert (across["page"], across["page_end"]) == (136, 137)
    panel = TEMPLATES.get_template("_passage.html")
    assert "r.pdf, pages 136–137" in panel.render(passage=across)
    assert "r.pdf, page 5 " in panel.render(passage=within).replace("<", " <")
    assert (pages(136, 137), pages(5, 5), pages(None, None)) == (", pp. 136-137", ", p. 5", "")
