"""The MCP server at /mcp, driven with the SDK's own client over streamable HTTP: the tools are
listed and each answers, a request without a key is refused, hostile arguments are tool errors
(never a crash), and a member sees nothing outside her grants."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import select

from app.config import Settings
from app.db import session_scope
from app.generation import prompts
from app.infra.worker_process import WorkerProcess
from app.main import create_app
from app.models import Message
from tests.helpers import member_reading, serving
from tests.web.test_openai import ANSWER, FakeLLM

TOOLS = {"search", "ask", "list_collections", "get_passage"}


@pytest.fixture(scope="module")
def mcp_url(settings: Settings, worker: WorkerProcess) -> Iterator[str]:
    fake = FakeLLM()
    with serving(fake.app) as llm:
        with_llm = settings.model_copy(update={"llm_base_url": f"{llm}/v1", "llm_model": "fake"})
        with serving(create_app(with_llm)) as url:
            yield f"{url}/mcp"


@pytest.fixture(scope="module")
def member(settings: Settings, worker: WorkerProcess, auth: dict[str, str]) -> dict:
    """A member who may read one collection of her own (about tea), not `facts`."""
    return member_reading(
        settings, auth, ("tea.md", b"# Tea\n\nGreen tea is steeped at eighty degrees."), "mcp"
    )


def session(url: str, key: str | None, mode: str = "auto"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = httpx2.AsyncClient(headers=headers, timeout=60)
    return http, Client(streamable_http_client(url, http_client=http), mode=mode)  # type: ignore[arg-type]


def run(url: str, key: str | None, calls: list[tuple[str, dict]], mode: str = "auto") -> list:
    """Each call through one client; a call's result is (is_error, parsed JSON or text)."""

    async def go() -> list:
        http, client = session(url, key, mode)
        out: list[Any] = []
        async with http, client:
            for name, args in calls:
                if name == "tools/list":
                    out.append((await client.list_tools()).tools)
                    continue
                result = await client.call_tool(name, args)
                text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = text
                out.append((bool(result.is_error), parsed))
        return out

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_the_tools_are_listed(mcp_url: str, admin_key: str, mode: str):
    (tools,) = run(mcp_url, admin_key, [("tools/list", {})], mode)
    by_name = {t.name: t for t in tools}
    assert set(by_name) == TOOLS
    search = by_name["search"].input_schema
    assert set(search["properties"]) >= {"query", "collection", "k", "filters"}
    assert "ctx" not in search["properties"] and search["required"] == ["query"]
    assert by_name["get_passage"].input_schema["required"] == ["id"]
    assert by_name["search"].annotations.read_only_hint is True


def test_each_tool_answers(mcp_url: str, admin_key: str, facts: str):
    found, collections, asked, declined = run(
        mcp_url,
        admin_key,
        [
            ("search", {"query": "When was the Eiffel Tower finished?", "collection": facts}),
            ("list_collections", {}),
            ("ask", {"question": "When was the Eiffel Tower finished?", "collection": facts}),
            (
                "ask",
                {
                    "question": "What is the boiling point of liquid nitrogen in kelvin?",
                    "collection": facts,  # (all collections hold whatever other tests left)
                },
            ),
        ],
    )
    assert found[0] is False
    top = found[1]["results"][0]
    assert top["document"] == "tower.md" and top["collection"] == facts
    assert isinstance(top["passage_id"], int) and "page" in top
    assert set(top["scores"]) == {"bm25", "dense", "fused", "rerank"}
    assert {"name": facts, "documents": 2} in collections[1]["collections"]
    assert asked[0] is False and asked[1]["answer"] == ANSWER
    citation = asked[1]["citations"][0]
    assert citation["document"] == "tower.md" and citation["supported"] is True
    assert citation["passage_id"] == asked[1]["passages"][0]["passage_id"]
    assert declined[1]["abstained"] is True and declined[1]["answer"] == prompts.NOT_COVERED
    (passage,) = run(mcp_url, admin_key, [("get_passage", {"id": top["passage_id"]})])
    assert passage[0] is False and passage[1]["passage"]["text"] == top["text"]
    assert passage[1]["document"] == "tower.md" and passage[1]["before"] == []
    with session_scope() as s:
        stored = s.scalars(select(Message).order_by(Message.id.desc()).limit(4)).all()
        assert {m.conversation.source for m in stored} == {"mcp"}


def test_search_takes_filters(mcp_url: str, admin_key: str, facts: str):
    (found,) = run(
        mcp_url,
        admin_key,
        [("search", {"query": "tower", "collection": facts, "filters": {"document": "coffee*"}})],
    )
    assert found[0] is False and found[1]["filters"] == {"document": "coffee*"}
    assert {r["document"] for r in found[1]["results"]} == {"coffee.md"}


def test_a_request_without_a_valid_key_is_refused(mcp_url: str):
    for key in (None, "gw_wrong", "not-even-a-gw-key"):
        response = httpx.post(
            mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={
                "Accept": "application/json, text/event-stream",
                **({"Authorization": f"Bearer {key}"} if key else {}),
            },
        )
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["error"]["message"]
        # The SDK's client gives up with its own error (inside its task groups).
        with pytest.raises(BaseException, match=r"unhandled errors|rror"):
            run(mcp_url, key, [("tools/list", {})])


def test_a_member_sees_nothing_outside_her_grants(
    mcp_url: str, admin_key: str, member: dict, facts: str
):
    (admin_found,) = run(mcp_url, admin_key, [("search", {"query": "Eiffel tower", "k": 50})])
    tower = next(r for r in admin_found[1]["results"] if r["collection"] == facts)
    listed, everywhere, named, passage, asked, filtered = run(
        mcp_url,
        member["key"],
        [
            ("list_collections", {}),
            ("search", {"query": "Eiffel tower Paris 1889", "k": 100}),
            ("search", {"query": "Eiffel tower", "collection": facts}),
            ("get_passage", {"id": tower["passage_id"]}),
            ("ask", {"question": "When was the Eiffel Tower finished?"}),
            ("search", {"query": "tower", "filters": {"document": "tower*"}}),
        ],
    )
    assert listed[1]["collections"] == [{"name": member["collection"], "documents": 1}]
    assert {r["collection"] for r in everywhere[1]["results"]} <= {member["collection"]}
    assert named[0] is True and "no collection named" in str(named[1])
    assert passage[0] is True and f"no passage {tower['passage_id']}" in str(passage[1])
    assert {p["document"] for p in asked[1]["passages"]} <= {"tea.md"}
    assert filtered[0] is False and filtered[1]["results"] == []


@pytest.mark.parametrize(
    ("tool", "args", "says"),
    [
        ("search", {}, "query"),
        ("search", {"query": ""}, "empty"),
        ("search", {"query": "x" * 2001}, "query"),
        ("search", {"query": 42}, "query"),
        ("search", {"query": "tea", "k": 0}, "k"),
        ("search", {"query": "tea", "k": 10**30}, "k"),
        ("search", {"query": "tea", "k": "ten"}, "k"),
        ("search", {"query": "tea", "mode": "fuzzy"}, "mode"),
        ("search", {"query": "tea", "collection": "../../etc"}, "collection name"),
        ("search", {"query": "tea", "collection": "x" * 1000}, "collection"),
        ("search", {"query": "tea", "collection": "no-such-collection"}, "no collection"),
        ("search", {"query": "tea", "filters": {"author": "me"}}, "author"),
        ("search", {"query": "tea", "filters": {"document": "**/../*"}}, "folders"),
        ("search", {"query": "tea", "filters": {"uploaded_from": "2026-13-01"}}, "uploaded_from"),
        ("search", {"query": "tea", "filters": {"uploaded_to": 99999999999}}, "YYYY-MM-DD"),
        ("search", {"query": "tea", "filters": {"labels": ["<x>"] * 30}}, "labels"),
        ("search", {"query": "tea", "filters": "hr"}, "filters"),
        ("ask", {"question": ""}, "empty"),
        ("ask", {"question": "x" * 10_000}, "question"),
        ("ask", {"question": "tea?", "collection": "secret"}, "no collection"),
        ("get_passage", {"id": -1}, "id"),
        ("get_passage", {"id": 2**64}, "id"),
        ("get_passage", {"id": "abc"}, "id"),
        ("get_passage", {"id": 999_999_999_999}, "no passage"),
        ("get_passage", {"id": 1, "neighbours": 1000}, "neighbours"),
        ("no_such_tool", {}, "no_such_tool"),
    ],
)
def test_hostile_arguments_are_tool_errors(
    mcp_url: str, admin_key: str, tool: str, args: dict, says: str
):
    refused, after = run(mcp_url, admin_key, [(tool, args), ("list_collections", {})])
    assert refused[0] is True and says in str(refused[1]), refused
    assert after[0] is False  # the server is still well


def test_nul_and_huge_bodies_are_refused_at_the_edge(mcp_url: str, admin_key: str):
    headers = {
        "Authorization": f"Bearer {admin_key}",
        "Accept": "application/json, text/event-stream",
    }
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "search", "arguments": {"query": "tea\u0000"}},
    }
    assert httpx.post(mcp_url, json=call, headers=headers).status_code == 422
    huge = {**call, "params": {"name": "search", "arguments": {"query": "x" * (2 << 20)}}}
    assert httpx.post(mcp_url, json=huge, headers=headers).status_code == 413


def test_get_is_405_and_requests_are_measured_under_their_route(mcp_url: str, admin_key: str):
    # Stateless: there is no stream to hold open for a GET (the spec's answer: 405).
    got = httpx.get(mcp_url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)
    assert got.status_code == 405 and got.headers["allow"] == "POST, DELETE"
    run(mcp_url, admin_key, [("tools/list", {})])
    metrics = httpx.get(mcp_url.removesuffix("/mcp") + "/metrics", timeout=10).text
    assert 'route="/mcp",status="200"' in metrics.replace('method="POST",', "")
