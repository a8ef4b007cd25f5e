"""What `/healthz` reports: each part `ok`, `off` or `error`, with a reason."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypedDict

from app.config import Settings

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
    from worker.celery_app import celery_app

    try:
        replies = celery_app.control.ping(timeout=1.0)
    except Exception as err:  # noqa: BLE001
        return part("error", f"{type(err).__name__}: {str(err)[:200]}")
    if not replies:
        return part("error", "no worker answered a ping through the broker")
    names = sorted(name for reply in replies for name in reply)
    return part("ok", f"{len(names)} worker(s): {', '.join(names)}")


def health(settings: Settings, extra: dict[str, PartHealth] | None = None) -> dict[str, PartHealth]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        database = pool.submit(check_database, settings)
        redis_health = check_redis(settings)
        worker = check_worker(settings, redis_health["status"] == "ok")
        report = {"database": database.result(), "redis": redis_health, "worker": worker}
    report.update(extra or {})
    return report


def is_healthy(report: dict[str, PartHealth]) -> bool:
    """The web app can serve when its database and broker answer."""
    return report["database"]["status"] == "ok" and report["redis"]["status"] == "ok"
