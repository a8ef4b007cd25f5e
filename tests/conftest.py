"""Test set-up: the real embedded Postgres + pgvector and Redis, and a real Celery worker
process, started once per session under a temporary directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app.config import Settings, use_settings
from app.db import get_engine, migrate
from app.services.embedded import EmbeddedParts
from app.services.worker_process import WorkerProcess

# Settings every test process and child process shares: small limits keep tests quick.
TEST_ENV = {
    "LOG_LEVEL": "INFO",
    "TASK_TIME_LIMIT_S": "60",
    "BROKER_VISIBILITY_TIMEOUT_S": "90",
    "TORCH_THREADS": "2",
}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("groundwork-data")


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Iterator[Settings]:
    for name in ("DATABASE_URL", "REDIS_URL", "LLM_BASE_URL"):
        os.environ.pop(name, None)
    os.environ.update(TEST_ENV)
    os.environ["DATA_DIR"] = str(data_dir)
    base = Settings(_env_file=None)  # type: ignore[call-arg]
    with EmbeddedParts(base) as parts:
        resolved = parts.start()
        # Child processes (workers, CLI runs) find the same parts through the environment.
        os.environ["DATABASE_URL"] = resolved.database_url or ""
        os.environ["REDIS_URL"] = resolved.redis_url or ""
        use_settings(resolved)
        migrate(resolved)
        from worker.celery_app import configure

        configure(resolved)
        yield resolved


@pytest.fixture(scope="session")
def worker(settings: Settings) -> Iterator[WorkerProcess]:
    with WorkerProcess(settings, name="tests@localhost") as process:
        yield process


@pytest.fixture
def db(settings: Settings) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    connection = get_engine(settings).connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        transaction.rollback()
        connection.close()
