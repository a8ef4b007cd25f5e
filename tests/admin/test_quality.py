"""The Quality page: answers per day by outcome, latency percentiles, ingestion, evaluation
runs and the drift signals, from stored history; its JSON twin; hostile parameters; and the
answer trace pages (a pruned trace falls back to what the message keeps)."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from statistics import median

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text

from app.accounts import service as accounts
from app.config import Settings
from app.conversations.store import prune_traces
from app.db import migrate, session_scope
from app.infra.worker_process import WorkerProcess
from app.main import create_app
from app.models import Conversation, EvalRun, Message, MessageCitation, MessageTrace
from tests.factories import seed_quality_history


@pytest.fixture(scope="module")
def history(settings: Settings) -> dict:
    return seed_quality_history()


def day(days_ago: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=days_ago)).isoformat()


def test_quality_api_counts_outcomes_latency_and_flags_drift(
    client: TestClient, history: dict, facts: str
):
    body = client.get("/api/admin/quality", params={"days": 30}).json()
    by_day = {a["day"]: a for a in body["answers"]}
    assert len(body["answers"]) == 30 and by_day[day(0)]  # every day, empty ones too
    calm = by_day[day(10)]
    assert calm["outcomes"] == {
        "answered": 6,
        "abstained": 1,
        "truncated": 1,
        "error": 0,
        "stopped": 0,
    }
    assert calm["declined_share"] == pytest.approx(1 / 8)
    assert by_day[day(2)]["declined_share"] == pytest.approx(6 / 8)
    assert by_day[day(1)]["outcomes"]["error"] == 1 and by_day[day(1)]["outcomes"]["stopped"] == 1
    latency = {d["day"]: d for d in body["latency"]}
    assert latency[day(10)]["search_p50"] == pytest.approx(median(history["search_ms"][10]))
    assert 2000 < latency[day(10)]["ttft_p95"] < 4000
    declined = {j["day"]: j for j in body["drift"]["declined"]}
    relevance = {j["day"]: j for j in body["drift"]["relevance"]}
    assert declined[day(2)]["flagged"] and relevance[day(2)]["flagged"]
    assert not declined[day(5)]["flagged"] and not relevance[day(5)]["flagged"]
    assert declined[day(5)]["low"] < declined[day(5)]["value"] < declined[day(5)]["high"]
    ingest = {d["day"]: d for d in body["ingestion"]}
    assert ingest[day(0)]["indexed"] >= 2  # the `facts` documents, at least
    evals = {(e["kind"], e["dataset"]): e for e in body["evals"]}
    retrieval = evals["retrieval", "quality-scifact"]
    assert retrieval["series"]["hybrid"] == [0.70, 0.74] and len(retrieval["runs"]) == 2


def test_quality_page_draws_every_chart_as_svg(client: TestClient, history: dict):
    page = client.get("/admin/quality", params={"days": 30})
    assert page.status_code == 200
    html = page.text
    for section in ("drift", "answers-by-day", "ingestion", "evals", "recent"):
        assert f'id="{section}"' in html
    charts = [chunk.split("</svg>")[0] for chunk in html.split('<svg class="chart"')[1:]]
    assert len(charts) >= 8  # drift ×2, outcomes, search, first token, ingestion, evals ×2
    for chart in charts:
        svg = ET.fromstring('<svg class="chart"' + chart + "</svg>")  # well-formed
        assert svg.find("{http://www.w3.org/2000/svg}title") is not None
        assert "style=" not in chart and "<script" not in chart
    assert "declined share" in html and "outside" in html  # the flagged day is named
    assert f"{day(2)}: declined share 75%" in html
    assert 'class="flag"' in html
    assert "quality-scifact · retrieval · nDCG@10 per run" in html
    assert f"/admin/answers/{history['answer_ids'][-1]}" in html  # recent answers link


def test_recent_answers_filter_by_outcome_and_page_back(client: TestClient, history: dict):
    page = client.get("/admin/quality", params={"outcome": "error"}).text
    rows = page.split('id="recent"')[1]
    assert 'class="outcome o-error"' in rows and 'class="outcome o-answered"' not in rows
    first = client.get("/admin/quality").text.split('id="recent"')[1]
    ids = [int(i) for i in re.findall(r'data-answer="(\d+)"', first)]
    assert len(ids) == 30 and ids == sorted(ids, reverse=True)
    older = re.search(r'id="older" href="([^"]+)"', first)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&")).text.split('id="recent"')[1]
    next_ids = [int(i) for i in re.findall(r'data-answer="(\d+)"', second)]
    assert next_ids and max(next_ids) < min(ids)


def test_eval_dataset_names_are_escaped(client: TestClient):
    hostile = f'<script>alert("{uuid.uuid4().hex[:6]}")</script>'
    with session_scope() as s:
        metrics = {"bm25": {"ndcg@10": 0.5}, "<img src=x>": {"ndcg@10": 0.1}}
        s.add(EvalRun(kind="retrieval", dataset=hostile, queries=1, settings={}, metrics=metrics))
    html = client.get("/admin/quality").text
    assert hostile not in html and "<img src=x>" not in html
    assert "&lt;script&gt;alert(" in html


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/admin/quality", {"days": 0}, 422),
        ("/admin/quality", {"days": -3}, 422),
        ("/admin/quality", {"days": 366}, 422),
        ("/admin/quality", {"days": "thirty"}, 422),
        ("/admin/quality", {"days": "9" * 40}, 422),
        ("/admin/quality", {"outcome": "exploded"}, 422),
        ("/admin/quality", {"outcome": "answered\x00"}, 422),
        ("/api/admin/quality", {"days": "1e9"}, 422),
        ("/admin/quality", {"before": 0}, 422),
        ("/admin/quality", {"before": "x"}, 422),
        ("/admin/quality", {"before": "9" * 30}, 422),
        ("/admin/answers/abc", {}, 422),
        ("/admin/answers/99999999999999999999999", {}, 422),
        ("/admin/answers/-1", {}, 404),
        ("/admin/answers/9223372036854775807", {}, 404),
        ("/api/admin/answers/0/trace", {}, 404),
        ("/api/admin/answers/%2e%2e/trace", {}, 422),
    ],
)
def test_hostile_quality_and_trace_requests(
    client: TestClient, path: str, params: dict, status: int
):
    response = client.get(path, params=params)
    assert response.status_code == status, response.text


def test_a_question_is_not_an_answer(client: TestClient, history: dict):
    question_id = history["answer_ids"][0] - 1  # the user's message before it
    assert client.get(f"/api/admin/answers/{question_id}/trace").status_code == 404


def test_members_and_strangers_may_not_see_quality_or_traces(
    settings: Settings, worker: WorkerProcess, history: dict
):
    with session_scope() as s:
        member = accounts.create_user(
            s, f"q-{uuid.uuid4().hex[:8]}@tests.example", "a long enough password", "member"
        )
        key, _ = accounts.create_api_key(s, member, "t")
    answer = history["answer_ids"][0]
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        for path in (
            "/admin/quality",
            "/api/admin/quality",
            f"/admin/answers/{answer}",
            f"/api/admin/answers/{answer}/trace",
        ):
            assert c.get(path).status_code == 403, path
    with TestClient(create_app(settings)) as c:
        assert c.get("/api/admin/quality").status_code == 401
        page = c.get("/admin/quality", headers={"Accept": "text/html"}, follow_redirects=False)
        assert page.status_code == 303 and "/signin" in page.headers["location"]


def test_a_pruned_trace_leaves_what_the_message_keeps(
    settings: Settings, client: TestClient, history: dict
):
    answer = history["answer_ids"][-1]  # seeded with a trace, created today
    with session_scope() as s:
        assert s.get(MessageTrace, answer) is not None
        s.add(
            MessageCitation(
                message_id=answer,
                sentence=0,
                text="It opened in 1811.",
                cited=[1],
                n=1,
                score=0.81,
                supported=True,
            )
        )
    full = client.get(f"/admin/answers/{answer}").text
    assert 'id="pruned"' not in full and "The prompt as sent" in full
    with session_scope() as s:  # an old trace goes, a recent one stays
        old = s.get(MessageTrace, history["answer_ids"][0])
        assert old is not None
        assert prune_traces(s, 0) == 0  # 0: kept for good
        deleted = prune_traces(s, 30)
        assert deleted >= 0 and s.get(MessageTrace, history["answer_ids"][0]) is not None
        s.get(MessageTrace, answer).created_at = datetime.now(UTC) - timedelta(days=31)  # type: ignore[union-attr]
        s.flush()
        assert prune_traces(s, 30) == 1
        assert s.get(MessageTrace, history["answer_ids"][0]) is not None
    api = client.get(f"/api/admin/answers/{answer}/trace").json()
    assert api["trace"] is None and api["message"]["outcome"] == "answered"
    page = client.get(f"/admin/answers/{answer}").text
    assert 'id="pruned"' in page and "TRACE_RETENTION_DAYS" in page
    assert "It opened in 1811." in page and "0.810" in page  # the citation check stays
    assert "bell.md" in page  # the passages shown, from the message


def test_migration_gives_old_answers_their_outcome(settings: Settings):
    """0007 on answers stored before it: each gets the outcome its row tells."""
    admin = create_engine(settings.database_url or "", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS outcome_backfill"))
        conn.execute(text("CREATE DATABASE outcome_backfill"))
    url = (settings.database_url or "").rsplit("/", 1)[0] + "/outcome_backfill"
    scratch = settings.model_copy(update={"database_url": url})
    engine = create_engine(url)
    try:
        migrate(scratch, "0005")
        rows = [
            ("done", False, "It opened in 1811."),
            ("done", True, "The documents do not cover this."),
            ("done", False, "It was finished in 18 …[cut at the ANSWER_MAX_TOKENS limit]"),
            ("error", False, ""),
            ("stopped", False, "It"),
            ("streaming", False, ""),
        ]
        with engine.begin() as conn:
            conv = conn.execute(
                text("INSERT INTO conversations (title) VALUES ('old') RETURNING id")
            ).scalar()
            for status, abstained, content in rows:
                conn.execute(
                    text(
                        "INSERT INTO messages (conversation_id, role, content, status, abstained,"
                        " retrieved, timings) VALUES (:c, 'assistant', :content, :status,"
                        " :abstained, '[]', '{}')"
                    ),
                    {"c": conv, "content": content, "status": status, "abstained": abstained},
                )
        migrate(scratch)
        with engine.connect() as conn:
            outcomes = conn.execute(text("SELECT outcome FROM messages ORDER BY id")).scalars()
            assert list(outcomes) == [
                "answered",
                "abstained",
                "truncated",
                "error",
                "stopped",
                None,
            ]
            assert conn.execute(text("SELECT count(*) FROM message_traces")).scalar() == 0
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS outcome_backfill WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def conversation_ids() -> Iterator[list[int]]:
    ids: list[int] = []
    yield ids
    with session_scope() as s:
        for c in s.scalars(select(Conversation).where(Conversation.id.in_(ids))):
            s.delete(c)


def test_eval_answers_stay_out_of_the_charts(
    client: TestClient, history: dict, conversation_ids: list[int]
):
    before = client.get("/api/admin/quality", params={"days": 1}).json()["answers"][0]
    with session_scope() as s:
        conv = Conversation(title="eval question", source="eval")
        s.add(conv)
        s.flush()
        conversation_ids.append(conv.id)
        s.add(
            Message(
                conversation_id=conv.id,
                role="assistant",
                status="done",
                outcome="abstained",
                relevance=0.1,
                content="x",
            )
        )
    after = client.get("/api/admin/quality", params={"days": 1}).json()["answers"][0]
    assert after["outcomes"] == before["outcomes"]
