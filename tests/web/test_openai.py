"""The OpenAI-compatible API (/v1), driven with the official `openai` client: models per
collection, answers as JSON and streamed with citations in the extension fields, follow-ups
rewritten from `messages`, abstention, filters, OpenAI-shaped errors for every hostile input,
the LLM request cancelled when the reader leaves, and nothing outside a member's grants."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from app.config import Settings
from app.db import session_scope
from app.generation import prompts
from app.infra.worker_process import WorkerProcess
from app.main import create_app
from app.models import Message
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.generation.test_answers import SlowLLM
from tests.helpers import member_reading, serving, sign_in

QUESTION = "When was the Eiffel Tower finished?"
ANSWER = "The Eiffel Tower was finished in 1889 [1]."
REWRITTEN = "Where is the Eiffel Tower?"


class FakeLLM:
    """An OpenAI-compatible stand-in that answers the follow-up rewrite with REWRITTEN and
    any other request with `answer`, a word at a time, and records what it was asked."""

    def __init__(self, answer: str = ANSWER):
        self.requests: list[dict] = []

        async def models(request: Request):
            return JSONResponse({"data": [{"id": "fake"}]})

        async def chat(request: Request):
            body = await request.json()
            self.requests.append(body)
            rewrite = body["messages"][0]["content"] == prompts.REWRITE
            text = REWRITTEN if rewrite else answer

            async def events():
                for word in text.split(" "):
                    chunk = {"choices": [{"delta": {"content": word + " "}}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                done = {"choices": [{"delta": {}, "finish_reason": "stop"}]}
                yield f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        self.app = Starlette(
            routes=[
                Route("/v1/models", models),
                Route("/v1/chat/completions", chat, methods=["POST"]),
            ]
        )


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[tuple[FakeLLM, str]]:
    fake = FakeLLM()
    with serving(fake.app) as url:
        yield fake, url


@pytest.fixture(scope="module")
def groundwork_url(
    settings: Settings, worker: WorkerProcess, fake_llm: tuple[FakeLLM, str]
) -> Iterator[str]:
    """Groundwork, answering with the fake LLM, on a real port."""
    with_llm = settings.model_copy(
        update={"llm_base_url": f"{fake_llm[1]}/v1", "llm_model": "fake"}
    )
    with serving(create_app(with_llm)) as url:
        yield url


def client_for(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture
def gw(groundwork_url: str, admin_key: str) -> openai.OpenAI:
    return client_for(groundwork_url, admin_key)


@pytest.fixture(scope="module")
def member(settings: Settings, worker: WorkerProcess, auth: dict[str, str]) -> dict:
    """A member who may read one collection of her own (about espresso), not `facts`."""
    return member_reading(
        settings, auth, ("brew.md", b"# Brewing\n\nA moka pot brews coffee on a stove."), "v1"
    )


# -- models ----------------------------------------------------------------------------------


def test_models_are_the_collections_the_caller_may_read(
    gw: openai.OpenAI, groundwork_url: str, facts: str, member: dict
):
    ids = [m.id for m in gw.models.list()]
    assert ids[0] == "groundwork"
    assert f"groundwork/{facts}" in ids and f"groundwork/{member['collection']}" in ids
    assert gw.models.retrieve(f"groundwork/{facts}").owned_by == "groundwork"
    mine = [m.id for m in client_for(groundwork_url, member["key"]).models.list()]
    assert mine == ["groundwork", f"groundwork/{member['collection']}"]
    with pytest.raises(openai.NotFoundError):
        client_for(groundwork_url, member["key"]).models.retrieve(f"groundwork/{facts}")


# -- answers ---------------------------------------------------------------------------------


def test_a_json_answer_keeps_its_markers_and_brings_its_citations(gw: openai.OpenAI, facts: str):
    completion = gw.chat.completions.create(
        model=f"groundwork/{facts}",
        messages=[
            {"role": "system", "content": "You are a pirate."},  # ignored: documents decide
            {"role": "user", "content": QUESTION},
        ],
        temperature=0.2,  # accepted, left to the server
        max_tokens=50,
    )
    assert completion.object == "chat.completion" and completion.model == f"groundwork/{facts}"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == ANSWER
    extra = completion.model_extra or {}
    citations = extra["citations"]
    assert citations and citations[0]["document"] == "tower.md"
    assert citations[0]["supported"] is True and isinstance(citations[0]["passage_id"], int)
    assert set(citations[0]) >= {"document", "page", "passage_id", "supported", "n"}
    ground = extra["groundwork"]
    assert ground["abstained"] is False and ground["query"] == QUESTION
    assert ground["passages"][0]["document"] == "tower.md"
    with session_scope() as s:
        message = s.get(Message, ground["message_id"])
        assert message is not None and message.conversation.source == "openai"


def test_a_streamed_answer_arrives_in_chunks_then_done(
    gw: openai.OpenAI, groundwork_url: str, admin_key: str, facts: str
):
    stream = gw.chat.completions.create(
        model="groundwork", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.strip() == ANSWER and len(chunks) > 5
    assert chunks[0].choices[0].delta.role == "assistant"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert (last.model_extra or {})["citations"][0]["document"] == "tower.md"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    raw = httpx.post(
        f"{groundwork_url}/v1/chat/completions",
        json={
            "model": "groundwork",
            "messages": [{"role": "user", "content": QUESTION}],
            "stream": True,
        },
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=60,
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["object"] == "chat.completion.chunk" for e in events[:-1])


def test_a_follow_up_is_rewritten_from_the_messages(
    gw: openai.OpenAI, fake_llm: tuple[FakeLLM, str], facts: str
):
    fake, _ = fake_llm
    before = len(fake.requests)
    completion = gw.chat.completions.create(
        model=f"groundwork/{facts}",
        messages=[
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "In 1889 [1]."},
            {"role": "user", "content": [{"type": "text", "text": "Where is it?"}]},
        ],
    )
    asked = fake.requests[before:]
    assert asked[0]["messages"][0]["content"] == prompts.REWRITE
    assert f"Q: {QUESTION}\nA: In 1889 [1]." in asked[0]["messages"][1]["content"]
    assert "Q: Where is it?" in asked[0]["messages"][1]["content"]
    assert (completion.model_extra or {})["groundwork"]["query"] == REWRITTEN


@pytest.mark.parametrize("stream", [False, True])
def test_nothing_relevant_declines_without_the_llm(
    gw: openai.OpenAI, fake_llm: tuple[FakeLLM, str], facts: str, stream: bool
):
    fake, _ = fake_llm
    before = len(fake.requests)
    question = "What is the boiling point of liquid nitrogen in kelvin?"
    messages = [{"role": "user", "content": question}]
    if stream:
        chunks = list(
            gw.chat.completions.create(model=f"groundwork/{facts}", messages=messages, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        extra = chunks[-1].model_extra or {}
    else:
        completion = gw.chat.completions.create(model=f"groundwork/{facts}", messages=messages)
        text, extra = completion.choices[0].message.content or "", completion.model_extra or {}
    assert text == prompts.NOT_COVERED and extra["groundwork"]["abstained"] is True
    assert extra["citations"] == [] and len(fake.requests) == before


def test_filters_travel_in_an_extension_field(gw: openai.OpenAI, facts: str):
    completion = gw.chat.completions.create(
        model=f"groundwork/{facts}",
        messages=[{"role": "user", "content": "How is espresso brewed?"}],
        extra_body={"filters": {"document": "coffee*", "file_types": ["markdown"]}},
    )
    ground = (completion.model_extra or {})["groundwork"]
    assert ground["filters"] == {"document": "coffee*", "file_types": ["markdown"]}
    assert {p["document"] for p in ground["passages"]} == {"coffee.md"}


def test_a_member_never_sees_outside_her_grants(groundwork_url: str, member: dict, facts: str):
    mine = client_for(groundwork_url, member["key"])
    for model in ("groundwork", f"groundwork/{member['collection']}"):
        for stream in (False, True):
            result = mine.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": QUESTION}],
                stream=stream,
                extra_body={"filters": {"document": "*"}},
            )
            last = list(result)[-1] if stream else result  # type: ignore[arg-type]
            extra = last.model_extra or {}  # type: ignore[union-attr]
            documents = {p["document"] for p in extra["groundwork"]["passages"]}
            assert documents <= {"brew.md"}, (model, documents)
            assert all(c["document"] in (None, "brew.md") for c in extra["citations"])
    with pytest.raises(openai.NotFoundError) as err:
        mine.chat.completions.create(
            model=f"groundwork/{facts}", messages=[{"role": "user", "content": QUESTION}]
        )
    assert err.value.code == "model_not_found"


# -- refusals --------------------------------------------------------------------------------


def test_keys_are_required_and_sessions_are_not_enough(groundwork_url: str, settings: Settings):
    for key in ("", "gw_not-a-key", "sk-something-else"):
        with pytest.raises(openai.AuthenticationError) as err:
            client_for(groundwork_url, key or "x").models.list()
        assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    with httpx.Client(base_url=groundwork_url) as browser:
        assert sign_in(browser, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303  # type: ignore[arg-type]
        response = browser.get("/v1/models")
        assert response.status_code == 401
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


GOOD = {"model": "groundwork", "messages": [{"role": "user", "content": QUESTION}]}


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"messages": GOOD["messages"]}, 422, "model"),
        ({"model": "groundwork"}, 422, "messages"),
        ({**GOOD, "messages": []}, 422, "messages"),
        ({**GOOD, "messages": "hello"}, 422, "messages"),
        ({**GOOD, "messages": [{"role": "wizard", "content": "hi"}]}, 422, "messages.0.role"),
        ({**GOOD, "messages": [{"role": "user", "content": 42}]}, 422, "messages.0.content.str"),
        ({**GOOD, "messages": [{"role": "user", "content": "x" * 100_001}]}, 422, None),
        ({**GOOD, "messages": [{"role": "user", "content": "x" * 2_001}]}, 422, None),
        ({**GOOD, "messages": [{"role": "user", "content": "   "}]}, 422, None),
        ({**GOOD, "messages": [{"role": "assistant", "content": "hi"}]}, 422, None),
        ({**GOOD, "messages": [{"role": "user"}] * 501}, 422, "messages"),
        (
            {
                **GOOD,
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
            422,
            None,
        ),
        ({**GOOD, "model": "x" * 1000}, 422, "model"),
        ({**GOOD, "model": ["groundwork"]}, 422, "model"),
        ({**GOOD, "stream": "sometimes"}, 422, "stream"),
        ({**GOOD, "filters": {"author": "me"}}, 422, "filters.author"),
        ({**GOOD, "filters": {"document": "**/../*"}}, 422, "filters.document"),
        ({**GOOD, "filters": {"uploaded_from": "2026-02-30"}}, 422, "filters.uploaded_from"),
        ({**GOOD, "filters": {"labels": ["<x>"]}}, 422, "filters.labels"),
        ({**GOOD, "filters": "labels=hr"}, 422, "filters"),
        ({**GOOD, "stream": "yes"}, 422, "stream"),
        ({**GOOD, "model": "no-such-model"}, 404, None),
        ({**GOOD, "model": "groundwork/no-such-collection"}, 404, None),
        ({**GOOD, "model": "groundwork/../../etc"}, 404, None),
        ({**GOOD, "model": "groundwork/\u202e"}, 404, None),
    ],
)
def test_bad_bodies_get_openai_shaped_errors(
    groundwork_url: str, admin_key: str, body: dict, status: int, param: str | None
):
    response = httpx.post(
        f"{groundwork_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=30,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    if status == 404:
        assert error["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("method", "path", "content", "status"),
    [
        ("POST", "/v1/chat/completions", b'{"model": "groundwork", "messages": [', 400),
        ("POST", "/v1/chat/completions", b"", 400),
        (
            "POST",
            "/v1/chat/completions",
            b'{"model": "groundwork", "messages": [{"role": "user", "content": "a\\u0000"}]}',
            422,
        ),
        ("POST", "/v1/chat/completions", b'{"model": "' + b"x" * (1 << 20) + b'"}', 413),
        ("POST", "/v1/embeddings", b"{}", 404),
        ("GET", "/v1/chat/completions", b"", 405),
        ("POST", "/v1/chat/completions", b"[" * 100_000 + b"]" * 100_000, 400),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400),
    ],
)
def test_malformed_requests_get_openai_shaped_errors(
    groundwork_url: str, admin_key: str, method: str, path: str, content: bytes, status: int
):
    response = httpx.request(
        method,
        f"{groundwork_url}{path}",
        content=content,
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert (error["code"] in ("not_found", "method_not_allowed")) == (status in (404, 405))


def test_an_llm_failure_is_a_502_or_an_error_chunk(
    settings: Settings, worker: WorkerProcess, admin_key: str, facts: str
):
    nowhere = settings.model_copy(update={"llm_base_url": "http://127.0.0.1:9/v1"})
    with serving(create_app(nowhere)) as url:
        gw = client_for(url, admin_key)
        messages = [{"role": "user", "content": QUESTION}]
        with pytest.raises(openai.InternalServerError) as err:
            gw.chat.completions.create(model=f"groundwork/{facts}", messages=messages)  # type: ignore[arg-type]
        assert err.value.status_code == 502 and err.value.code == "llm_unreachable"
        with pytest.raises(openai.APIError) as streamed:
            list(
                gw.chat.completions.create(
                    model=f"groundwork/{facts}",
                    messages=messages,  # type: ignore[arg-type]
                    stream=True,
                )
            )
        assert "unreachable" in str(streamed.value)


def test_a_reader_that_leaves_cancels_the_llm_request(
    settings: Settings, worker: WorkerProcess, admin_key: str, facts: str
):
    slow = SlowLLM(first_token_delay=0.1)
    with serving(slow.app) as llm_url:
        streaming = settings.model_copy(
            update={"llm_base_url": f"{llm_url}/v1", "llm_model": "slow"}
        )
        with serving(create_app(streaming)) as url:
            stream = client_for(url, admin_key).chat.completions.create(
                model=f"groundwork/{facts}",
                messages=[{"role": "user", "content": QUESTION}],
                stream=True,
            )
            words = 0
            for chunk in stream:
                words += bool(chunk.choices and chunk.choices[0].delta.content)
                if words >= 4:
                    break
            stream.close()  # the reader goes away mid-answer
            assert slow.disconnected.wait(10), "the LLM request was not cancelled"
    deadline = time.monotonic() + 10
    while True:
        with session_scope() as s:
            last = s.scalars(
                select(Message).where(Message.role == "assistant").order_by(Message.id.desc())
            ).first()
            if last is not None and last.status == "stopped":
                break
        assert time.monotonic() < deadline, "the answer was not recorded as stopped"
        time.sleep(0.1)
