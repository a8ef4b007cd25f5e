"""Parts that die are restarted and shown; outages at the edges are clear errors, never a
500 or a traceback, and never lose what was stored."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from app import jobs
from app.config import Settings
from app.db import session_scope
from app.infra import supervisor as supervision
from app.infra.processes import free_port, pid_alive
from app.infra.supervisor import Supervisor
from app.infra.worker_process import WorkerProcess
from app.main import create_app
from app.models import Document
from tests.helpers import groundwork, new_collection, upload, wait_settled


class Sleeper:
    """A real child process that can be killed and started again."""

    def __init__(self) -> None:
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def sleeper() -> Iterator[Sleeper]:
    s = Sleeper()
    yield s
    if s.alive():
        s.kill()


def wait_for(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_dead_part_is_restarted_with_growing_back_off(sleeper: Sleeper):
    supervisor = Supervisor()
    supervisor.watch("sleeper", sleeper.alive, sleeper.restart)
    supervisor.start()
    try:
        sleeper.kill()
        started = time.monotonic()
        assert wait_for(lambda: sleeper.starts == 2, timeout=5)
        first = time.monotonic() - started
        sleeper.kill()  # dies again at once: the next restart waits longer
        started = time.monotonic()
        assert wait_for(lambda: sleeper.starts == 3, timeout=10)
        second = time.monotonic() - started
        assert 0.9 <= first < 3 and second > first + 0.5, (first, second)
        report = supervisor.report()["sleeper"]
        assert report["restarts"] == 2 and report["down"] is False
    finally:
        supervisor.stop()


def test_health_shows_restarts_to_admins(client: TestClient, sleeper: Sleeper):
    supervisor = Supervisor()
    supervisor.watch("worker", sleeper.alive, sleeper.restart)
    supervisor.start()
    supervision.install(supervisor)
    try:
        sleeper.kill()
        assert wait_for(lambda: sleeper.starts == 2, timeout=5)
        body = client.get("/healthz").json()
        assert "restarted 1 time(s)" in body["worker"]["detail"]
    finally:
        supervision.install(None)
        supervisor.stop()


def test_health_is_503_when_no_worker_answered_for_the_grace_period(
    settings: Settings, tmp_path: Path, auth: dict[str, str]
):
    from app.infra.parts import RedisKind

    proc, url = RedisKind(tmp_path).launch()  # a broker no worker listens to
    lonely = settings.model_copy(update={"redis_url": url, "worker_grace_s": 0.5})
    try:
        with TestClient(create_app(lonely), headers=auth) as c:
            time.sleep(1)
            response = c.get("/healthz")
    finally:
        jobs.configure(settings)
        proc.kill()
        proc.wait()
    assert response.status_code == 503
    assert response.json()["worker"]["status"] == "error"


def test_the_api_answers_503_when_the_database_is_down(settings: Settings, auth: dict[str, str]):
    down = settings.model_copy(
        update={"database_url": f"postgresql+psycopg://x:y@127.0.0.1:{free_port()}/none"}
    )
    app = create_app(down)
    with TestClient(app, headers=auth) as c:
        response = c.get("/api/documents")
    jobs.configure(settings)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert "database" in response.json()["error"]["message"]


def test_the_cli_says_in_one_line_that_the_database_is_down(settings: Settings):
    run = groundwork(
        "search",
        "anything",
        env={"DATABASE_URL": f"postgresql://x:y@127.0.0.1:{free_port()}/none"},
        timeout=120,
    )
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("groundwork: the database is not answering"), run.stderr[-1500:]
    assert "Traceback" not in run.stderr


def test_an_upload_while_the_broker_is_down_is_stored_and_ingested_when_it_returns(
    settings: Settings, worker: WorkerProcess, auth: dict[str, str]
):
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    name = new_collection()
    with TestClient(create_app(down), headers=auth) as c:
        response = upload(c, name, ("outage.md", b"# Outage\n\nStored while Redis was away."))
    jobs.configure(settings)
    assert response.status_code == 201, response.text
    doc_id = response.json()["documents"][0]["id"]
    with session_scope() as s:
        doc = s.get(Document, doc_id)
        assert doc is not None and doc.status == "queued"
        assert jobs.unsent_due(s) >= 1
    time.sleep(jobs.DISPATCH_AFTER_S)
    with session_scope() as s:
        jobs.dispatch(s)
    with TestClient(create_app(settings), headers=auth) as c:
        assert wait_settled(c, [doc_id])[doc_id]["status"] == "indexed"


def test_waiting_gives_up_with_a_message_when_nothing_moves(settings: Settings):
    from app.collections.service import create_collection
    from app.documents.bulk import Stalled, wait_settled
    from app.models import DocumentStatus

    with session_scope() as s:  # queued, but its job never existed: nothing will move it
        collection = create_collection(s, new_collection())
        doc = Document(
            collection_id=collection.id,
            filename="still.md",
            content_type="text/markdown",
            size_bytes=1,
            sha256="0" * 64,
            status=DocumentStatus.queued,
        )
        s.add(doc)
        s.flush()
        doc_id = doc.id
    started = time.monotonic()
    try:
        with pytest.raises(Stalled, match=r"1 document.* no progress for 1 s"):
            wait_settled([doc_id], poll_s=0.1, stall_s=1)
        assert time.monotonic() - started < 5
    finally:  # a document queued for ever would keep other tests waiting for idle ingestion
        with session_scope() as s:
            s.execute(delete(Document).where(Document.id == doc_id))


@pytest.mark.slow
def test_a_worker_left_behind_by_a_killed_process_is_stopped_at_the_next_start(
    settings: Settings, worker: WorkerProcess
):
    # A process (as `serve` does) starts a worker in a session of its own, then is killed
    # with SIGKILL: nothing stops its worker.
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from app.config import get_settings\n"
            "from app.infra.worker_process import WorkerProcess\n"
            "w = WorkerProcess(get_settings()).start(wait=False)\n"
            "print(w.pid, w.name, flush=True)\n"
            "time.sleep(600)\n",
        ],
        env=settings.child_env(),
        stdout=subprocess.PIPE,
    )
    assert owner.stdout is not None
    pid_text, name = owner.stdout.readline().decode().split()
    orphan = int(pid_text)
    deadline = time.monotonic() + 90
    while name not in jobs.workers_answering(timeout=1.0):
        assert time.monotonic() < deadline, "the first worker never answered"
    owner.kill()
    owner.wait()
    assert pid_alive(orphan) and name in jobs.workers_answering(timeout=1.0)

    # The next start finds it, stops it (warm: it hands its work back), and runs alone.
    # The suite's own worker, whose process is alive, is left alone.
    fresh = WorkerProcess(settings).start()
    try:
        assert not pid_alive(orphan)
        answering = jobs.workers_answering(timeout=1.0)
        assert name not in answering and fresh.name in answering and worker.name in answering
    finally:
        fresh.stop()
