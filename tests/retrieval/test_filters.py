"""Metadata filters (file type, document name, upload dates, labels): labels given at upload,
every interface that takes filters (API, pages, CLI), hostile values refused with 422, filters
applied before ranking in both retrievers, and no filter widening what a member may read."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from app.accounts import service as accounts
from app.collections import access
from app.config import Settings
from app.db import session_scope
from app.errors import Invalid
from app.infra.worker_process import WorkerProcess
from app.main import create_app
from app.models import Collection, User
from app.retrieval.filters import Filters, check_labels, glob_pattern
from tests.factories import make_pdf
from tests.helpers import groundwork, new_collection, wait_settled

TEXT = "Parental leave lasts sixteen weeks for every parent."
TODAY = datetime.now(UTC).date()


def send(client: TestClient, collection: str, labels: str, *files: tuple[str, bytes]):
    return client.post(
        "/api/documents",
        data={"collection": collection, "labels": labels},
        files=[("files", (name, data, "application/octet-stream")) for name, data in files],
    )


@pytest.fixture(scope="module")
def labelled(settings: Settings, worker: WorkerProcess, auth: dict[str, str]) -> str:
    """Four documents about parental leave, of four types, with labels."""
    name = new_collection()
    with TestClient(create_app(settings), headers=auth) as c:
        ids = []
        for labels, filename, data in (
            ("HR, policy", "handbook.md", f"# Handbook\n\n{TEXT} Ask HR.".encode()),
            ("hr", "leave-policy.txt", f"Leave policy. {TEXT} Apply early.".encode()),
            ("sales", "pricing.html", f"<html><body><p>{TEXT} Prices.</p></body></html>".encode()),
            ("", "report.pdf", make_pdf([[TEXT, "Quarterly report."]])),
        ):
            response = send(c, name, labels, (filename, data))
            assert response.status_code == 201, response.text
            ids += [d["id"] for d in response.json()["documents"]]
        docs = wait_settled(c, ids)
        assert all(d["status"] == "indexed" for d in docs.values()), docs
    return name


def found(client: TestClient, collection: str | None, **params) -> list[str]:
    query = {"q": "parental leave weeks", "k": 20, **params}
    if collection:
        query["collection"] = collection
    response = client.get("/api/search", params=query)
    assert response.status_code == 200, response.text
    return sorted(r["document"] for r in response.json()["results"])


# -- the model -------------------------------------------------------------------------------


def test_filters_parse_text_and_normalise():
    f = Filters.parse(
        file_types=["PDF", "markdown,text"],
        document="  hand**book?.md ",
        uploaded_from="2026-01-01",
        uploaded_to="",
        labels="HR,  Team  Finance ,hr",
    )
    assert f is not None
    assert f.file_types == ["pdf", "markdown", "text"]
    assert f.document == "hand*book?.md"
    assert f.uploaded_from == date(2026, 1, 1) and f.uploaded_to is None
    assert f.labels == ["hr", "team finance"]
    assert Filters.parse(document="", labels=[]) is None  # nothing given: no filter
    assert glob_pattern("a_b%c*d?\\") == "a\\_b\\%c%d_\\\\"
    assert check_labels("a, b,a") == ["a", "b"]


@pytest.mark.parametrize(
    "raw",
    [
        {"file_types": "exe"},
        {"file_types": "pdf,docm"},
        {"document": "**/../*"},
        {"document": "..\\secret"},
        {"document": "a\x00b"},
        {"document": "x" * 256},
        {"uploaded_from": "2026-13-45"},
        {"uploaded_from": "99999-01-01"},
        {"uploaded_from": "yesterday"},
        {"uploaded_from": "2026-01-02T10:00:00"},
        {"uploaded_from": "2026-02-01", "uploaded_to": "2026-01-01"},
        {"labels": "<script>"},
        {"labels": "x" * 65},
        {"labels": ",".join(f"l{i}" for i in range(21))},
        {"labels": "ok,\x00"},
    ],
)
def test_bad_filter_values_are_invalid(raw: dict):
    with pytest.raises(Invalid) as err:
        Filters.parse(**raw)
    assert err.value.status == 422 and err.value.message.startswith("filters")


def test_unknown_filter_names_and_bad_types_are_refused_by_the_model():
    for bad in ({"author": "me"}, {"labels": "hr"}, {"file_types": [1]}, {"uploaded_to": 5}):
        with pytest.raises(ValueError):
            Filters.model_validate(bad)
    # The far end of the calendar is a date like any other (no overflow past it).
    assert Filters.model_validate({"uploaded_to": "9999-12-31"}).uploaded_to == date.max


# -- labels at upload ------------------------------------------------------------------------


def test_labels_are_kept_and_shown(client: TestClient, labelled: str):
    docs = client.get("/api/documents", params={"collection": labelled}).json()["documents"]
    by_name = {d["filename"]: d["labels"] for d in docs}
    assert by_name == {
        "handbook.md": ["hr", "policy"],
        "leave-policy.txt": ["hr"],
        "pricing.html": ["sales"],
        "report.pdf": [],
    }


@pytest.mark.parametrize(
    "labels", ["<b>bold</b>", "x" * 65, ",".join(str(i) for i in range(21)), "../etc"]
)
def test_bad_labels_at_upload_are_refused_before_anything_is_stored(
    client: TestClient, labels: str
):
    name = new_collection()
    response = send(client, name, labels, ("n.md", b"# N\n\nnothing stored"))
    assert response.status_code == 422 and "label" in response.json()["error"]["message"]
    assert client.get("/api/documents", params={"collection": name}).status_code == 404


def test_a_duplicate_adds_labels_and_a_new_version_keeps_them(client: TestClient):
    name = new_collection()
    first = send(client, name, "alpha", ("v.md", b"# V\n\nversion one")).json()["documents"][0]
    again = send(client, name, "beta", ("v.md", b"# V\n\nversion one")).json()["documents"][0]
    assert (
        again["id"] == first["id"]
        and again["duplicate"]
        and again["labels"]
        == [
            "alpha",
            "beta",
        ]
    )
    newer = send(client, name, "", ("v.md", b"# V\n\nversion two")).json()["documents"][0]
    assert newer["id"] != first["id"] and newer["labels"] == ["alpha", "beta"]
    # Labels added by duplicates keep to the limit too: 2 + 19 is refused, nothing changes.
    many = ",".join(f"m{i}" for i in range(19))
    refused = send(client, name, many, ("v.md", b"# V\n\nversion two"))
    assert refused.status_code == 422 and "limit of 20" in refused.json()["error"]["message"]
    kept = client.get(f"/api/documents/{newer['id']}").json()
    assert kept["labels"] == ["alpha", "beta"]
    fits = send(client, name, many[: many.rindex(",")], ("v.md", b"# V\n\nversion two"))
    assert fits.status_code == 200 and len(fits.json()["documents"][0]["labels"]) == 20


# -- filtering -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_each_filter_narrows_the_search_in_every_mode(client: TestClient, labelled: str, mode: str):
    everything = found(client, labelled, mode=mode)
    assert everything == ["handbook.md", "leave-policy.txt", "pricing.html", "report.pdf"]
    assert found(client, labelled, mode=mode, labels="hr") == ["handbook.md", "leave-policy.txt"]
    assert found(client, labelled, mode=mode, labels=["sales", "policy"]) == [
        "handbook.md",
        "pricing.html",
    ]
    assert found(client, labelled, mode=mode, file_types="pdf") == ["report.pdf"]
    assert found(client, labelled, mode=mode, file_types=["html", "text"]) == [
        "leave-policy.txt",
        "pricing.html",
    ]
    assert found(client, labelled, mode=mode, document="*POLICY*") == ["leave-policy.txt"]
    assert found(client, labelled, mode=mode, document="hand?ook.md") == ["handbook.md"]
    assert found(client, labelled, mode=mode, document="handbook") == []  # a whole name
    tomorrow = (TODAY + timedelta(days=1)).isoformat()
    yesterday = (TODAY - timedelta(days=1)).isoformat()
    assert found(client, labelled, mode=mode, uploaded_from=tomorrow) == []
    assert found(client, labelled, mode=mode, uploaded_to=yesterday) == []
    assert found(client, labelled, mode=mode, uploaded_from=TODAY.isoformat()) == everything
    assert found(client, labelled, mode=mode, uploaded_to="9999-12-31") == everything
    # Fields together: a document must match all of them.
    assert found(client, labelled, mode=mode, labels="hr", file_types="markdown") == ["handbook.md"]


def test_a_passage_scores_the_same_with_or_without_a_filter(client: TestClient, labelled: str):
    params = {"q": "parental leave weeks", "collection": labelled, "mode": "hybrid", "k": 20}
    plain = client.get("/api/search", params=params).json()
    narrowed = client.get("/api/search", params={**params, "labels": "hr"}).json()
    assert narrowed["filters"] == {"labels": ["hr"]} and plain["filters"] == {}
    scores = {r["chunk_id"]: r["scores"] for r in plain["results"]}
    for r in narrowed["results"]:
        assert r["scores"]["bm25"] == pytest.approx(scores[r["chunk_id"]]["bm25"])
        assert r["scores"]["dense"] == pytest.approx(scores[r["chunk_id"]]["dense"])
    assert "filters_ms" in narrowed["timings"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"author": "me"}, "author"),
        ({"label": "hr"}, "label"),  # singular: a typo is not ignored
        ({"file_types": "exe"}, "file_types"),
        ({"document": "**/../*"}, "document"),
        ({"uploaded_from": "2026-02-30"}, "uploaded_from"),
        ({"uploaded_from": "-1"}, "uploaded_from"),
        ({"uploaded_to": "1" * 400}, "uploaded_to"),
        ({"uploaded_from": "2026-02-01", "uploaded_to": "2026-01-01"}, "uploaded_from"),
        ({"labels": "a" * 10_000}, "label"),
        ({"labels": "x\x7f"}, "label"),
    ],
)
def test_bad_filters_in_the_api_are_a_clear_422(client: TestClient, params: dict, field: str):
    response = client.get("/api/search", params={"q": "leave", **params})
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"]


def test_nul_in_a_filter_is_refused(client: TestClient):
    response = client.get("/api/search", params={"q": "leave", "labels": "hr\x00"})
    assert response.status_code == 422 and "NUL" in response.text
    ask = client.post("/api/ask", json={"question": "leave?", "filters": {"labels": ["a\u0000"]}})
    assert ask.status_code == 422


@pytest.mark.parametrize(
    "filters",
    [
        {"author": "me"},
        {"labels": "hr"},
        {"labels": [["hr"]]},
        {"file_types": ["exe"]},
        {"document": "../../etc/passwd"},
        {"uploaded_from": "2026-99-01"},
        {"uploaded_to": 20260101},
        "hr",
    ],
)
def test_bad_filters_in_ask_are_a_clear_422(client: TestClient, filters):
    response = client.post("/api/ask", json={"question": "How long is leave?", "filters": filters})
    assert response.status_code == 422, response.text
    assert "filters" in response.json()["error"]["message"]


def test_ask_applies_filters_before_the_llm(settings: Settings, client: TestClient, labelled: str):
    """A filter that keeps nothing declines without asking the LLM (none answers here); the
    passages of a filtered answer all pass the filter."""
    nowhere = settings.model_copy(update={"llm_base_url": "http://127.0.0.1:9/v1"})
    with TestClient(create_app(nowhere), headers=client.headers) as c:
        body = c.post(
            "/api/ask",
            json={
                "question": "How long is parental leave?",
                "collection": labelled,
                "filters": {"file_types": ["docx"]},
            },
        ).json()
        assert body["abstained"] is True and body["passages"] == []
        assert body["filters"] == {"file_types": ["docx"]}
        failed = c.post(
            "/api/ask",
            json={
                "question": "How long is parental leave?",
                "collection": labelled,
                "filters": {"labels": ["sales"]},
            },
        ).json()
    assert failed["error"]["code"] == "llm_unreachable"
    assert {p["document"] for p in failed["passages"]} == {"pricing.html"}


def test_a_filter_never_widens_what_a_member_reads(settings: Settings, labelled: str):
    with session_scope() as s:
        user = accounts.create_user(s, f"m-{uuid.uuid4().hex[:8]}@tests.example", "x" * 12)
        key, _ = accounts.create_api_key(s, user, "t")
        other = Collection(name=new_collection())
        s.add(other)
        s.flush()
        access.add_member(s, other, user=s.get(User, user.id))
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        for params in ({"labels": "hr"}, {"document": "*"}, {"file_types": "pdf"}):
            assert found(c, None, **params) == []
            refused = c.get("/api/search", params={"q": "leave", "collection": labelled, **params})
            assert refused.status_code == 404


def test_search_page_shows_filters_as_removable_chips(client: TestClient, labelled: str):
    page = client.get(
        "/search",
        params={"q": "parental leave", "collection": labelled, "labels": "hr, policy"},
    ).text
    assert 'class="chip"' in page and "label: hr" in page and "label: policy" in page
    assert "Ask HR." in page and "Prices." not in page and "Quarterly" not in page
    # Each chip links to the same search less that one filter.
    assert (
        f"/search?q=parental+leave&amp;collection={labelled}&amp;mode=hybrid&amp;labels=policy"
        in page
    )
    assert 'value="hr, policy"' in page  # the field shows them too
    bad = client.get("/search", params={"q": "leave", "uploaded_from": "2026-13-01"})
    assert bad.status_code == 422


def test_chat_page_has_the_filter_fields(client: TestClient):
    page = client.get("/").text
    for field in ('name="file_types"', 'name="document"', 'name="uploaded_from"', 'name="labels"'):
        assert field in page
    assert 'id="filter-chips"' in page


def test_cli_labels_and_filters(settings: Settings, tmp_path):
    name = new_collection()
    (tmp_path / "a.md").write_text(f"# A\n\n{TEXT}")
    (tmp_path / "b.txt").write_text(f"B. {TEXT}")
    ingest = groundwork(
        "ingest",
        str(tmp_path / "a.md"),
        "--collection",
        name,
        "--label",
        "Alpha",
        "--wait",
        "--json",
    )
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["documents"][0]["labels"] == ["alpha"]
    plain = groundwork("ingest", str(tmp_path / "b.txt"), "--collection", name, "--wait")
    assert plain.returncode == 0, plain.stderr
    result = groundwork(
        "search", "parental leave", "--collection", name, "--label", "alpha", "--json"
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert [r["document"] for r in body["results"]] == ["a.md"]
    assert body["filters"] == {"labels": ["alpha"]}
    typed = groundwork("search", "leave", "--collection", name, "--file-type", "text", "--json")
    assert [r["document"] for r in json.loads(typed.stdout)["results"]] == ["b.txt"]
    for bad in (["--file-type", "exe"], ["--uploaded-from", "2026-02-30"], ["--label", "<x>"]):
        refused = groundwork("search", "leave", *bad)
        assert refused.returncode == 2 and "filters." in refused.stderr, refused.stderr
    bad_label = groundwork("ingest", str(tmp_path / "a.md"), "--label", "a" * 65)
    assert bad_label.returncode == 2 and "label" in bad_label.stderr


def test_upload_page_takes_labels(client: TestClient):
    name = new_collection()
    page = client.get("/documents").text
    assert 'id="labels"' in page
    row = client.post(
        "/documents/upload",
        data={"collection": name, "labels": "Team A, <i>"},
        files=[("files", ("p.md", b"# P\n\npage upload", "text/markdown"))],
    )
    assert row.status_code == 422  # "<i>" is not a label: nothing is stored
    row = client.post(
        "/documents/upload",
        data={"collection": name, "labels": "Team A, b"},
        files=[("files", ("p.md", b"# P\n\npage upload", "text/markdown"))],
    )
    assert row.status_code == 201 and '<span class="chip">team a</span>' in row.text
