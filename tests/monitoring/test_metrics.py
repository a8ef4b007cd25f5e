"""GET /metrics: every family, from every process (the web app's and the Celery worker's),
after a real ingest, search and answer; who may scrape it; route templates as labels; and
the files of ended processes folded into an archive without losing a count."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.infra.processes import child_pids
from app.infra.worker_process import WorkerProcess
from app.main import create_app
from app.monitoring import files
from app.monitoring.exposition import is_loopback, scrape
from app.monitoring.metrics import parse_process_id, process_id, sample_names
from tests.helpers import new_collection, upload, wait_settled

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = ("127.0.0.1", 50000)
FAMILIES = (
    "groundwork_http_request_duration_seconds",
    "groundwork_search_duration_seconds",
    "groundwork_embed_seconds",
    "groundwork_ingest_documents_total",
    "groundwork_queue_depth",
    "groundwork_llm_time_to_first_token_seconds",
    "groundwork_llm_tokens_total",
    "groundwork_answers_total",
)
TOKEN = "a-metrics-token-for-tests-0123456789"


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of a Prometheus text exposition."""
    found: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[s.name].append((s.labels, s.value))
    return found


def total(found: dict, name: str, **labels: str) -> float:
    return sum(v for ls, v in found.get(name, []) if all(ls.get(k) == x for k, x in labels.items()))


def test_scrape_after_an_ingest_a_search_and_an_answer_has_every_family(
    llm_settings: Settings, worker: WorkerProcess, auth: dict[str, str]
):
    with TestClient(create_app(llm_settings), headers=auth, client=LOOPBACK) as client:
        before = samples(client.get("/metrics").text)
        name = new_collection()
        doc = b"# Lighthouses\n\nThe Bell Rock lighthouse was lit in 1811, off the coast of Angus."
        ids = [d["id"] for d in upload(client, name, ("bell.md", doc)).json()["documents"]]
        assert wait_settled(client, ids)[ids[0]]["status"] == "indexed"
        hits = client.get("/api/search", params={"q": "Bell Rock lighthouse", "collection": name})
        assert hits.status_code == 200 and hits.json()["results"]
        question = {"question": "When was the Bell Rock lighthouse lit?", "collection": name}
        answered = client.post("/api/ask", json=question)
        assert answered.status_code == 200, answered.text
        response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    for family in FAMILIES:
        assert f"# TYPE {family} " in text, f"{family} is missing"
    after = samples(text)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    http = "groundwork_http_request_duration_seconds_count"
    assert grew(http, route="/api/search", method="GET", status="200") == 1
    assert grew(http, route="/api/ask", method="POST", status="200") == 1
    assert grew(http, route="/api/documents/{document_id}", method="GET", status="200") >= 1
    search = "groundwork_search_duration_seconds_count"
    for stage in ("bm25", "embed", "dense", "union", "fusion", "fetch", "total"):
        assert grew(search, mode="hybrid", stage=stage) == 2, stage  # the search and the answer
    assert grew("groundwork_search_duration_seconds_sum", mode="hybrid", stage="total") > 0
    # The worker's: the chunks it embedded and the document it indexed.
    assert grew("groundwork_embed_seconds_count", kind="chunks") >= 1
    assert grew("groundwork_embed_texts_total", kind="chunks") >= 1
    assert grew("groundwork_embed_seconds_count", kind="query") == 2
    assert grew("groundwork_ingest_documents_total", outcome="indexed") == 1
    assert grew("groundwork_answers_total") == 1
    result = answered.json()
    assert "ttft_ms" in result["timings"]  # the LLM was asked (not declined before it)
    outcome = "truncated" if result["truncated"] else "answered"
    assert grew("groundwork_answers_total", outcome="abstained" if result["abstained"] else outcome)
    assert grew("groundwork_llm_time_to_first_token_seconds_count", purpose="answer") == 1
    assert grew("groundwork_llm_tokens_total", purpose="answer", kind="completion") >= 1
    depth = {labels["queue"]: v for labels, v in after["groundwork_queue_depth"]}
    assert set(depth) == {"celery", "outbox"} and all(v >= 0 for v in depth.values())
    assert total(after, "groundwork_documents", status="indexed") >= 1
    assert "/api/documents/" + str(ids[0]) not in text  # ids never become labels
    assert sample_names() <= set(after)  # every name a dashboard may plot is there

    # The documents indexed were counted in files of the worker's pool processes.
    indexed = '"outcome": "indexed"'
    writers = {
        parse_process_id(f.stem.rpartition("_")[2])
        for f in llm_settings.metrics_path.glob("counter_*.db")
        if any("groundwork_ingest_documents_total" in k and indexed in k for k, *_ in _values(f))
    }
    pids = {p for _, p in filter(None, writers)}
    assert pids & set(child_pids(worker.pid)), (pids, child_pids(worker.pid))


def _values(path: Path):
    return MmapedDict.read_all_values_from_file(str(path))


@pytest.mark.parametrize(
    ("client_host", "headers", "token", "status"),
    [
        ("127.0.0.1", {}, None, 200),
        ("::1", {}, None, 200),
        ("203.0.113.7", {}, None, 403),  # no token configured: loopback only
        ("203.0.113.7", {"Authorization": f"Bearer {TOKEN}"}, None, 403),
        ("203.0.113.7", {}, TOKEN, 403),
        ("203.0.113.7", {"Authorization": "Bearer wrong"}, TOKEN, 403),
        ("203.0.113.7", {"Authorization": "Bearer " + "x" * 20_000}, TOKEN, 403),
        ("203.0.113.7", {"Authorization": f"Basic {TOKEN}"}, TOKEN, 403),
        ("203.0.113.7", {"Authorization": "Bearer ünïcode".encode("latin-1")}, TOKEN, 403),
        ("203.0.113.7", {"Authorization": f"Bearer {TOKEN}"}, TOKEN, 200),
        ("127.0.0.1", {"X-Forwarded-For": "127.0.0.1"}, None, 403),  # through a proxy
        ("127.0.0.1", {"Forwarded": "for=127.0.0.1"}, TOKEN, 403),
        ("127.0.0.1", {"X-Real-IP": "1.2.3.4", "Authorization": f"Bearer {TOKEN}"}, TOKEN, 200),
    ],
)
def test_who_may_scrape(
    settings: Settings, client_host: str, headers: dict, token: str | None, status: int
):
    configured = settings.model_copy(update={"metrics_token": token and _secret(token)})
    with TestClient(create_app(configured), client=(client_host, 50000)) as client:
        response = client.get("/metrics", headers=headers)
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["error"]["code"] == "metrics_forbidden"
        assert "groundwork_" not in response.text


def _secret(token: str):
    from pydantic import SecretStr

    return SecretStr(token)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/metrics", 405), ("GET", "/metrics?x=%00", 422), ("DELETE", "/metrics", 405)],
)
def test_hostile_requests_to_metrics(settings: Settings, method: str, path: str, status: int):
    with TestClient(create_app(settings), client=LOOPBACK) as client:
        assert client.request(method, path).status_code == status


def test_metrics_token_must_be_long_enough():
    with pytest.raises(ValueError, match="at least 16"):
        Settings(_env_file=None, metrics_token="short")  # type: ignore[call-arg]
    assert Settings(_env_file=None, metrics_token="").metrics_token is None  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("testclient", False),
        ("", False),
        ("localhost", False),  # a name is never trusted
    ],
)
def test_loopback_addresses(host: str, loopback: bool):
    assert is_loopback(host) is loopback


def test_route_templates_label_requests_never_paths(settings: Settings, auth: dict[str, str]):
    with TestClient(create_app(settings), headers=auth, client=LOOPBACK) as client:
        assert client.get("/api/documents/987654321").status_code == 404
        assert client.get("/no/such/page/123456789").status_code == 404
        client.request("BREW", "/api/documents")
        text = client.get("/metrics").text
    found = samples(text)
    http = "groundwork_http_request_duration_seconds_count"
    assert total(found, http, route="/api/documents/{document_id}", status="404") >= 1
    assert total(found, http, route="unmatched", status="404") >= 1
    assert total(found, http, method="other") >= 1
    assert "987654321" not in text and "123456789" not in text and "BREW" not in text


RECORD = """
import sys
from app.config import Settings
from app.monitoring import metrics
metrics.setup(Settings(_env_file=None, data_dir=sys.argv[1]))
metrics.record_answer("answered")
metrics.record_answer("answered")
metrics.record_search("bm25", {"bm25_ms": 2.0, "total_ms": 3.0})
print(metrics.process_id())
"""


def test_ended_processes_are_folded_without_losing_a_count(settings: Settings, tmp_path: Path):
    """Two processes record and end; tidying folds their files into the archive: the scrape
    reads the same before and after, and `serve`'s start forgets them."""
    local = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path,
        database_url=settings.database_url,
        redis_url=settings.redis_url,
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", RECORD, str(tmp_path)], check=True, env=env, cwd=ROOT)
    path = local.metrics_path
    assert len(list(path.glob("counter_*.db"))) == 2

    def read() -> dict:
        found = samples(scrape(local).decode())
        return {
            "answered": total(found, "groundwork_answers_total", outcome="answered"),
            "bm25": total(found, "groundwork_search_duration_seconds_count", stage="bm25"),
            "le_5ms": total(
                found, "groundwork_search_duration_seconds_bucket", stage="total", le="0.005"
            ),
            "sum": total(found, "groundwork_search_duration_seconds_sum", stage="total"),
        }

    first = read()
    assert first == {"answered": 4.0, "bm25": 2.0, "le_5ms": 2.0, "sum": pytest.approx(0.006)}
    assert files.tidy(path) == 4  # a counter and a histogram file each
    assert sorted(p.name for p in path.glob("*.db")) == [
        "counter_archive.db",
        "histogram_archive.db",
    ]
    assert read() == first
    subprocess.run([sys.executable, "-c", RECORD, str(tmp_path)], check=True, env=env, cwd=ROOT)
    assert files.tidy(path) == 2
    assert read()["answered"] == 6.0
    assert files.forget_ended(path) == 2  # the archives
    assert read()["answered"] == 0


def test_files_of_live_processes_and_of_other_hosts_are_left_alone(tmp_path: Path):
    mine = tmp_path / f"counter_{process_id()}.db"
    other = tmp_path / "counter_elsewhere-1.db"
    for path in (mine, other):
        d = MmapedDict(str(path))
        d.write_value('["c", "c_total", {}, "h"]', 1.0, 0.0)
        d.close()
    assert files.tidy(tmp_path) == 0
    assert mine.exists() and other.exists()
