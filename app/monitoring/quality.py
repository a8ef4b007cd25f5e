"""Quality over time, from what Postgres keeps: answers per day by outcome, search and
first-token latency per day, ingestion per day, the evaluation runs, and the drift signals
(the share of declined questions and the mean relevance of the best passage per day, flagged
when a day leaves the band its previous days make).

Answers of the evals (`source = 'eval'`) are left out: they would move every line whenever a
benchmark runs. Days are UTC days.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, Float, cast, func, select
from sqlalchemy.orm import Session, aliased

from app.models import Conversation, EvalRun, IngestionAttempt, Message, User

OUTCOMES = ("answered", "abstained", "truncated", "error", "stopped")
DECIDED = ("answered", "abstained", "truncated")  # the answers a declined share is taken of
# Drift: a day is judged against the up to WINDOW days before it that had at least
# MIN_ANSWERS answers, once there are MIN_HISTORY of them; it is flagged when it is further
# from their median than SIGMAS robust standard deviations (1.4826 × the median absolute
# deviation, so that one bad day does not widen the band of the two weeks after it), and at
# least the floor.
WINDOW = 14
MIN_HISTORY = 5
MIN_ANSWERS = 5
SIGMAS = 2.0
DECLINED_FLOOR = 0.05
RELEVANCE_FLOOR = 0.02
EVAL_RUNS_SHOWN = 50


def utc_day(column: Any) -> Any:
    return cast(func.timezone("UTC", column), Date)


def day_range(days: int, today: date | None = None) -> list[date]:
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=i) for i in range(days - 1, -1, -1)]


def since(days: int) -> datetime:
    """The start of the first of the last `days` UTC days."""
    first = day_range(days)[0]
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


def _answers(*columns: Any) -> Any:
    """Answers (not those of the evals), for these columns."""
    return (
        select(*columns)
        .select_from(Message)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Message.role == "assistant", Conversation.source != "eval")
    )


# -- answers ---------------------------------------------------------------------------------


@dataclass
class AnswerDay:
    day: date
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    relevance: float | None = None  # mean best-passage relevance
    relevance_n: int = 0

    @property
    def decided(self) -> int:
        return sum(self.outcomes[o] for o in DECIDED)

    @property
    def declined_share(self) -> float | None:
        return self.outcomes["abstained"] / self.decided if self.decided else None


def answers_by_day(session: Session, days: int) -> list[AnswerDay]:
    day = utc_day(Message.created_at)
    query = (
        _answers(
            day,
            Message.outcome,
            func.count(),
            func.avg(Message.relevance),
            func.count(Message.relevance),
        )
        .where(Message.created_at >= since(days), Message.outcome.is_not(None))
        .group_by(day, Message.outcome)
    )
    found = {d: AnswerDay(d) for d in day_range(days)}
    weighted: dict[date, float] = defaultdict(float)
    for d, outcome, n, mean, scored in session.execute(query):
        if d not in found or outcome not in OUTCOMES:
            continue
        found[d].outcomes[outcome] += int(n)
        if mean is not None:
            weighted[d] += float(mean) * int(scored)
            found[d].relevance_n += int(scored)
    for d, row in found.items():
        if row.relevance_n:
            row.relevance = weighted[d] / row.relevance_n
    return list(found.values())


@dataclass
class LatencyDay:
    day: date
    search_p50: float | None = None
    search_p95: float | None = None
    ttft_p50: float | None = None
    ttft_p95: float | None = None


def latency_by_day(session: Session, days: int) -> list[LatencyDay]:
    """Milliseconds: the search behind each answer, and the first token from the question."""
    day = utc_day(Message.created_at)
    search = cast(Message.timings["retrieval_ms"].astext, Float)
    ttft = cast(Message.timings["ttft_ms"].astext, Float)
    query = (
        _answers(
            day,
            func.percentile_cont(0.5).within_group(search),
            func.percentile_cont(0.95).within_group(search),
            func.percentile_cont(0.5).within_group(ttft),
            func.percentile_cont(0.95).within_group(ttft),
        )
        .where(Message.created_at >= since(days))
        .group_by(day)
    )
    found = {d: LatencyDay(d) for d in day_range(days)}
    for d, s50, s95, t50, t95 in session.execute(query):
        if d in found:
            found[d] = LatencyDay(d, s50, s95, t50, t95)
    return list(found.values())


@dataclass
class RecentAnswer:
    id: int
    created_at: datetime
    question: str | None
    outcome: str | None
    relevance: float | None
    timings: dict[str, float]
    source: str
    user: str | None


def recent_answers(
    session: Session, outcome: str | None, limit: int, before: int | None = None
) -> list[RecentAnswer]:
    """The latest answers (evals' included), newest first, with the question each answered;
    `before`: only those older than that answer (the next page)."""
    asked = aliased(Message)
    question = (
        select(asked.content)
        .where(
            asked.conversation_id == Message.conversation_id,
            asked.role == "user",
            asked.id < Message.id,
        )
        .order_by(asked.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    query = (
        select(Message, question, Conversation.source, User.email)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .outerjoin(User, User.id == Conversation.user_id)
        .where(Message.role == "assistant", Message.status != "streaming")
        .order_by(Message.id.desc())
        .limit(limit)
    )
    if outcome is not None:
        query = query.where(Message.outcome == outcome)
    if before is not None:
        query = query.where(Message.id < before)
    return [
        RecentAnswer(m.id, m.created_at, q, m.outcome, m.relevance, m.timings or {}, src, email)
        for m, q, src, email in session.execute(query)
    ]


# -- ingestion -------------------------------------------------------------------------------


@dataclass
class IngestDay:
    day: date
    indexed: int = 0
    failed: int = 0  # failed, or the worker died under it
    seconds_p50: float | None = None  # from the attempt's start to the document written


def ingestion_by_day(session: Session, days: int) -> list[IngestDay]:
    day = utc_day(IngestionAttempt.finished_at)
    took = func.extract("epoch", IngestionAttempt.finished_at - IngestionAttempt.started_at)
    query = (
        select(
            day,
            func.count().filter(IngestionAttempt.outcome == "indexed"),
            func.count().filter(IngestionAttempt.outcome.in_(("failed", "crashed"))),
            func.percentile_cont(0.5)
            .within_group(took)
            .filter(IngestionAttempt.outcome == "indexed"),
        )
        .where(IngestionAttempt.finished_at >= since(days))
        .group_by(day)
    )
    found = {d: IngestDay(d) for d in day_range(days)}
    for d, indexed, failed, p50 in session.execute(query):
        if d in found:
            found[d] = IngestDay(d, int(indexed), int(failed), p50)
    return list(found.values())


# -- drift -----------------------------------------------------------------------------------


@dataclass
class Judged:
    day: date
    value: float | None
    low: float | None = None  # the band its previous days make
    high: float | None = None
    flagged: bool = False


def judge(
    days: Sequence[date],
    values: Sequence[float | None],
    counts: Sequence[int],
    floor: float,
    limits: tuple[float, float] = (-math.inf, math.inf),
) -> list[Judged]:
    """Each day against the band of the days before it (see WINDOW, MIN_HISTORY, SIGMAS),
    kept within `limits` (a share stays within 0 and 1); days with fewer than MIN_ANSWERS
    answers are neither judged nor part of a band."""
    out: list[Judged] = []
    history: list[float] = []
    for day, value, n in zip(days, values, counts, strict=True):
        judged = Judged(day, value if n >= MIN_ANSWERS else None)
        if len(history) >= MIN_HISTORY:
            recent = history[-WINDOW:]
            middle = statistics.median(recent)
            spread = 1.4826 * statistics.median(abs(v - middle) for v in recent)
            half = max(SIGMAS * spread, floor)
            judged.low = max(middle - half, limits[0])
            judged.high = min(middle + half, limits[1])
            if judged.value is not None:
                judged.flagged = not judged.low <= judged.value <= judged.high
        if judged.value is not None:
            history.append(judged.value)
        out.append(judged)
    return out


@dataclass
class Drift:
    declined: list[Judged]
    relevance: list[Judged]

    @property
    def flags(self) -> list[tuple[str, Judged]]:
        return [("declined share", j) for j in self.declined if j.flagged] + [
            ("mean relevance", j) for j in self.relevance if j.flagged
        ]


def drift(session: Session, days: int) -> Drift:
    """The drift signals of the last `days` days (judged with up to WINDOW days before)."""
    rows = answers_by_day(session, days + WINDOW)
    dates = [r.day for r in rows]
    shares = [r.declined_share for r in rows]
    declined = judge(dates, shares, [r.decided for r in rows], DECLINED_FLOOR, (0.0, 1.0))
    relevance = judge(
        dates, [r.relevance for r in rows], [r.relevance_n for r in rows], RELEVANCE_FLOOR
    )
    return Drift(declined[-days:], relevance[-days:])


# -- evaluation runs -------------------------------------------------------------------------


@dataclass
class EvalSeries:
    """One data set's runs over time: a value per run for each mode (retrieval: nDCG@10 per
    search mode; answers: token F1, citation accuracy, unanswerable declined)."""

    kind: str
    dataset: str
    metric: str
    runs: list[datetime] = field(default_factory=list)
    series: dict[str, list[float | None]] = field(default_factory=dict)


ANSWER_METRICS = {
    "token F1": "f1",
    "citation accuracy": "citation_accuracy",
    "unanswerable declined": "unanswerable_declined",
}


def eval_series(session: Session) -> list[EvalSeries]:
    runs = session.scalars(
        select(EvalRun)
        .where(EvalRun.kind.in_(("retrieval", "answers")))
        .order_by(EvalRun.created_at.desc(), EvalRun.id.desc())
        .limit(EVAL_RUNS_SHOWN * 10)
    ).all()
    grouped: dict[tuple[str, str], list[EvalRun]] = defaultdict(list)
    for run in reversed(runs):
        grouped[run.kind, run.dataset].append(run)
    out = []
    for (kind, dataset), these in sorted(grouped.items()):
        these = these[-EVAL_RUNS_SHOWN:]
        if kind == "retrieval":
            item = EvalSeries(kind, dataset, "nDCG@10", [r.created_at for r in these])
            # bm25, dense and the default hybrid; the fixed fusions beside it ("hybrid, rrf")
            # stay in the run's figures
            modes = sorted(
                {m for r in these for m, v in r.metrics.items() if isinstance(v, dict)}
                - {m for r in these for m in r.metrics if ", " in m}
            )
            for mode in modes:
                item.series[mode] = [_ndcg(r.metrics.get(mode)) for r in these]
        else:
            item = EvalSeries(kind, dataset, "share", [r.created_at for r in these])
            for label, key in ANSWER_METRICS.items():
                item.series[label] = [_number(r.metrics.get(key)) for r in these]
        out.append(item)
    return out


def _ndcg(metrics: Any) -> float | None:
    return _number(metrics.get("ndcg@10")) if isinstance(metrics, dict) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
