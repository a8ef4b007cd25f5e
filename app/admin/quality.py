"""Quality over time (charts drawn on the server) and the trace of any answer: the page
/admin/quality, /admin/answers/{id}, and the same as JSON under /api/admin."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from app.admin.common import admin_api, admin_pages
from app.conversations.store import answer_of, trace_of
from app.models import Message
from app.monitoring import charts, quality
from app.monitoring.charts import Series
from app.web.deps import SessionDep, SettingsDep
from app.web.render import render

pages = admin_pages()
api = admin_api()

Days = Annotated[int, Query(ge=1, le=365, description="how many days back (UTC), 1 to 365")]
Outcome = Literal["answered", "abstained", "truncated", "error", "stopped"]
RECENT = 30
# The order stages run in (JSONB keeps keys in its own order).
ANSWER_STAGES = ("rewrite_ms", "retrieval_ms", "ttft_ms", "llm_ms", "total_ms")
SEARCH_STAGES = (
    "generation_ms",
    "bm25_ms",
    "embed_ms",
    "dense_ms",
    "union_ms",
    "fusion_ms",
    "fetch_ms",
    "rerank_ms",
    "total_ms",
)


def _labels(days: list[date]) -> list[str]:
    return [d.strftime("%m-%d") for d in days]


def quality_charts(session: Session, days: int) -> dict[str, Any]:
    answers = quality.answers_by_day(session, days)
    latency = quality.latency_by_day(session, days)
    ingest = quality.ingestion_by_day(session, days)
    drift = quality.drift(session, days)
    labels = _labels([a.day for a in answers])
    evals = []
    for run in quality.eval_series(session):
        run_labels = [t.strftime("%m-%d %H:%M") for t in run.runs]
        series = [Series(n, v, f"s{i % 6}") for i, (n, v) in enumerate(run.series.items())]
        title = f"{run.dataset} · {run.kind} · {run.metric} per run"
        evals.append((run, charts.line_chart(title, run_labels, series, charts.score)))
    return {
        "answers": answers,
        "latency": latency,
        "ingest": ingest,
        "drift": drift,
        "evals": evals,
        "outcome_chart": charts.bar_chart(
            "Answers per day by outcome",
            labels,
            [Series(o, [a.outcomes[o] for a in answers], f"o-{o}") for o in quality.OUTCOMES],
        ),
        "declined_chart": charts.line_chart(
            "Share of questions declined per day",
            labels,
            [Series("declined", [j.value for j in drift.declined], "s2")],
            charts.share,
            band=[(j.low, j.high) for j in drift.declined],
            flagged=[j.flagged for j in drift.declined],
        ),
        "relevance_chart": charts.line_chart(
            "Mean relevance of the best passage per day",
            labels,
            [Series("relevance", [j.value for j in drift.relevance], "s0")],
            charts.score,
            band=[(j.low, j.high) for j in drift.relevance],
            flagged=[j.flagged for j in drift.relevance],
            zero=False,
        ),
        "search_chart": charts.line_chart(
            "Search time per day (the search behind each answer)",
            labels,
            [
                Series("p50", [d.search_p50 for d in latency], "s0"),
                Series("p95", [d.search_p95 for d in latency], "s1"),
            ],
            charts.ms,
        ),
        "ttft_chart": charts.line_chart(
            "Time to first token per day (from the question)",
            labels,
            [
                Series("p50", [d.ttft_p50 for d in latency], "s0"),
                Series("p95", [d.ttft_p95 for d in latency], "s1"),
            ],
            charts.ms,
        ),
        "ingest_chart": charts.bar_chart(
            "Documents ingested per day",
            labels,
            [
                Series("indexed", [d.indexed for d in ingest], "o-answered"),
                Series("failed", [d.failed for d in ingest], "o-error"),
            ],
        ),
    }


@pages.get("/quality", response_class=HTMLResponse)
def quality_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    days: Days = 30,
    outcome: Outcome | None = None,
    before: Annotated[int | None, Query(ge=1, description="answers older than this id")] = None,
):
    context = {
        "active": "admin",
        "days": days,
        "outcome": outcome,
        "before": before,
        "outcomes": quality.OUTCOMES,
        "recent": quality.recent_answers(session, outcome, RECENT, before),
        "page_size": RECENT,
        "retention_days": settings.trace_retention_days,
        "band": {"window": quality.WINDOW, "sigmas": quality.SIGMAS},
        **quality_charts(session, days),
    }
    return render(request, "quality.html", context)


@api.get("/quality")
def quality_api(session: SessionDep, days: Days = 30) -> dict:
    """Per UTC day: answers by outcome, declined share and mean best-passage relevance with
    their drift bands, search and first-token latency (ms), documents ingested; and the
    evaluation runs (admins)."""
    drift = quality.drift(session, days)
    return {
        "answers": [
            {**asdict(a), "declined_share": a.declined_share}
            for a in quality.answers_by_day(session, days)
        ],
        "latency": [asdict(d) for d in quality.latency_by_day(session, days)],
        "ingestion": [asdict(d) for d in quality.ingestion_by_day(session, days)],
        "drift": {
            "declined": [asdict(j) for j in drift.declined],
            "relevance": [asdict(j) for j in drift.relevance],
        },
        "evals": [asdict(e) for e in quality.eval_series(session)],
    }


@pages.get("/answers/{message_id}", response_class=HTMLResponse)
def answer_trace_page(
    request: Request, message_id: int, session: SessionDep, settings: SettingsDep
):
    message, question = answer_of(session, message_id)
    context = {
        "active": "admin",
        "retention_days": settings.trace_retention_days,
        **trace_view(message, question, trace_of(session, message_id)),
    }
    return render(request, "trace.html", context)


@api.get("/answers/{message_id}/trace")
def answer_trace_api(message_id: int, session: SessionDep) -> dict:
    """Any answer, the question it answered and its trace (null once pruned) (admins)."""
    message, question = answer_of(session, message_id)
    return {
        "message": {
            "id": message.id,
            "conversation_id": message.conversation_id,
            "created_at": message.created_at.isoformat(),
            "status": message.status,
            "outcome": message.outcome,
            "abstained": message.abstained,
            "relevance": message.relevance,
            "query": message.query,
            "content": message.content,
            "error": message.error,
            "model": message.model,
            "timings": message.timings,
        },
        "question": question,
        "trace": trace_of(session, message_id),
    }


def trace_view(message: Message, question: str | None, trace: dict | None) -> dict[str, Any]:
    """What the trace page shows: the trace, or what the message itself keeps once the trace
    was pruned (the passages shown and their scores, the citations, the timings)."""
    t = trace or {}
    citations = (t.get("citations") or {}).get("sentences")
    if citations is None:
        citations = [
            {
                "sentence": c.sentence,
                "text": c.text,
                "cited": list(c.cited),
                "n": c.n,
                "supported": c.supported,
                "score": c.score,
            }
            for c in message.citations
        ]
    passages = t.get("passages") or [
        {**p, "rank": None, "given": True} for p in message.retrieved or []
    ]
    return {
        "message": message,
        "question": question or t.get("question"),
        "trace": trace,
        "query": t.get("query") or message.query,
        "rewrite": t.get("rewrite"),
        "search": t.get("search"),
        "decision": t.get("decision"),
        "passages": passages,
        "prompt": t.get("prompt"),
        "llm": t.get("llm"),
        "citations": citations,
        "citation_threshold": (t.get("citations") or {}).get("threshold"),
        "timings": in_order(message.timings or {}, ANSWER_STAGES),
        "search_timings": in_order((t.get("search") or {}).get("timings") or {}, SEARCH_STAGES),
    }


def in_order(timings: dict[str, float], order: tuple[str, ...]) -> dict[str, float]:
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(timings.items(), key=lambda kv: (rank.get(kv[0], len(order)), kv[0])))
