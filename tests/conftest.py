"""Test set-up: the real embedded Postgres + pgvector and Redis, and a real Celery worker
process, started once per session under a temporary directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.config import Settings, use_settings
from app.db import get_engine, migrate
from app.infra.parts import EmbeddedParts, LlamaKind
from app.infra.worker_process import WorkerProcess
from app.main import create_app
from tests.helpers import new_collection, serving, upload, wait_settled

# Settings every test process and child process shares: small limits keep tests quick.
TEST_ENV = {
    "LOG_LEVEL": "INFO",
    "TASK_TIME_LIMIT_S": "120",
    "BROKER_VISIBILITY_TIMEOUT_S": "180",
    "TORCH_THREADS": "2",
    # The tests' web pages are served on loopback (tests/web_pages); nothing else is allowed.
    "FETCH_ALLOW_HOSTS": "127.0.0.1",
    "FETCH_TIMEOUT_S": "8",
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
        from app import jobs

        jobs.configure(resolved)
        yield resolved


ADMIN_EMAIL = "admin@tests.example"
ADMIN_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def admin_key(settings: Settings) -> str:
    """An admin account for the tests, and an API key that acts as it."""
    from app.accounts import service as accounts
    from app.db import session_scope

    with session_scope() as s:
        user = accounts.create_user(s, ADMIN_EMAIL, ADMIN_PASSWORD, "admin")
        key, _ = accounts.create_api_key(s, user, "tests")
    return key


@pytest.fixture(scope="session")
def auth(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


@pytest.fixture
def client(settings: Settings, worker: WorkerProcess, auth: dict[str, str]) -> Iterator[TestClient]:
    """The app, called as the tests' admin (with the API key)."""
    with TestClient(create_app(settings), headers=auth) as c:
        yield c


@pytest.fixture
def browser(settings: Settings, worker: WorkerProcess) -> Iterator[TestClient]:
    """A client that behaves like a browser: cookies, no API key."""
    with TestClient(
        create_app(settings), base_url="https://testserver", headers={"Accept": "text/html"}
    ) as c:
        yield c


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


@pytest.fixture(scope="session")
def live_server(settings: Settings, worker: WorkerProcess) -> Iterator[str]:
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
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def llm_url(settings: Settings) -> Iterator[str]:
    """The embedded llama.cpp server with SmolLM2-135M-Instruct, as `serve` starts it."""
    proc, url = LlamaKind(settings.data_path, "SmolLM2-135M-Instruct", 4096, 2).launch()
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def facts(settings: Settings, worker: WorkerProcess, auth: dict[str, str]) -> str:
    name = new_collection()
    docs = {
        "tower.md": b"# Eiffel Tower\n\nThe Eiffel Tower is a wrought-iron tower in Paris. "
        b"It was finished in 1889 for the World's Fair.",
        "coffee.md": b"# Espresso\n\nEspresso is brewed by forcing hot water under pressure "
        b"through finely ground coffee beans.",
    }
    with TestClient(create_app(settings), headers=auth) as c:
        ids = [d["id"] for d in upload(c, name, *docs.items()).json()["documents"]]
        wait_settled(c, ids)
    return name


@pytest.fixture
def llm_settings(settings: Settings, llm_url: str) -> Settings:
    return settings.model_copy(update={"llm_base_url": llm_url})
