"""What `/healthz` reports: each part `ok`, `off` or `error`, with a reason."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypedDict

from app.config import Settings
from app.infra.supervisor import current as current_supervisor
from app.jobs import workers_answering

State = Literal["ok", "off", "error"]


class PartHealth(TypedDict):
    status: State
    detail: str


def part(status: State, detail: str) -> PartHealth:
    return {"status": status, "detail": detail}


def check_database(settings: Settings) -> PartHealth:
    from sqlalchemy import text

    from app.db import get_engine

    try:
        with get_engine(settings).connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar()
            vector = conn.execute(
                text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            ).scalar()
            schema = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as err:  # noqa: BLE001 - reported, not raised
        return part("error", f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
    return part("ok", f"postgres {version}, pgvector {vector}, schema {schema}")


def check_redis(settings: Settings) -> PartHealth:
    import redis

    try:
        client = redis.Redis.from_url(
            settings.redis_url or "", socket_connect_timeout=1, socket_timeout=1
        )
        info = client.info("server")
    except Exception as err:  # noqa: BLE001
        return part("error", f"{type(err).__name__}: {str(err)[:200]}")
    return part("ok", f"redis {info.get('redis_version')}")


def check_worker(settings: Settings, redis_ok: bool) -> PartHealth:
    if not redis_ok:
        return part("error", "the broker (redis) is unreachable")
    names = workers_answering(timeout=1.0)
    if not names:
        return part("error", "no worker answered a ping through the broker")
    return part("ok", f"{len(names)} worker(s): {', '.join(names)}")


def check_embedder(settings: Settings) -> PartHealth:
    from app.ingest.embed import get_embedder

    try:
        embedder = get_embedder(settings.embedding_model)
    except Exception as err:  # noqa: BLE001
        return part("error", f"{settings.embedding_model}: {type(err).__name__}: {err}"[:300])
    return part("ok", f"{embedder.name} ({embedder.dimension} dimensions)")


def check_reranker(settings: Settings) -> PartHealth:
    from app.retrieval.rerank import get_reranker

    reranker = get_reranker(settings.reranker_model)
    return part("ok" if reranker.loaded else "off", reranker.detail)


def check_llm(settings: Settings) -> PartHealth:
    from app.generation.llm import check_llm as check

    result = check(settings)
    return part(result["status"], result["detail"])  # type: ignore[arg-type]


PART_NAMES = {"database": "postgres", "redis": "redis", "worker": "worker", "llm": "llm"}


def health(settings: Settings) -> dict[str, PartHealth]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        database = pool.submit(check_database, settings)
        embedder = pool.submit(check_embedder, settings)
        reranker = pool.submit(check_reranker, settings)
        llm = pool.submit(check_llm, settings)
        redis_health = check_redis(settings)
        worker = check_worker(settings, redis_health["status"] == "ok")
        report = {
            "database": database.result(),
            "redis": redis_health,
            "worker": worker,
            "embedder": embedder.result(),
            "reranker": reranker.result(),
            "llm": llm.result(),
        }
    _note_restarts(report)
    return report


def _note_restarts(report: dict[str, PartHealth]) -> None:
    """Under `groundwork serve`, say how often each supervised part was restarted."""
    supervisor = current_supervisor()
    if supervisor is None:
        return
    watched = supervisor.report()
    for name, part_name in PART_NAMES.items():
        restarts = watched.get(part_name, {}).get("restarts")
        if restarts:
            report[name]["detail"] += f" (restarted {restarts} time(s) by serve)"


_worker_seen = time.monotonic()  # the last time a worker answered (or this process started)


def is_healthy(report: dict[str, PartHealth], grace_s: float) -> bool:
    """The web app can serve when its database and broker answer and a worker has answered
    within `grace_s` (uploads would otherwise pile up unprocessed)."""
    global _worker_seen
    now = time.monotonic()
    if report["worker"]["status"] == "ok":
        _worker_seen = now
    worker_ok = now - _worker_seen <= grace_s
    return report["database"]["status"] == "ok" and report["redis"]["status"] == "ok" and worker_ok


def probe_database() -> dict[str, str]:
    """What the worker's probe task answers: its host name, once the database answered."""
    import socket

    from sqlalchemy import text

    from app.db import session_scope

    with session_scope() as session:
        session.execute(text("SELECT 1"))
    return {"worker": socket.gethostname(), "database": "ok"}
