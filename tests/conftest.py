"""Test set-up: the real embedded Postgres + pgvector and Redis, and a real Celery worker
process, started once per session under a temporary directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, in a thread."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def live_server(settings: Settings, worker: WorkerProcess) -> Iterator[str]:
    from app.main import create_app

    with serving(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="session")
def browser_driver() -> Iterator[object]:
    """Headless Chromium driven through Debian's chromedriver (`.ci/run` installs both)."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("no chromium/chromedriver here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
