"""Multipart uploads (app.web.uploads) through the real app, Postgres, Redis and worker: a file
past the size limit is refused on its own while the other files of the request are stored,
and file names in any script arrive exactly as sent (raw UTF-8, or RFC 5987 `filename*`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.infra.worker_process import WorkerProcess
from app.ingest.detect import safe_filename
from app.main import create_app
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.helpers import csrf_of, new_collection, sign_in, upload, wait_settled

MiB = 1024 * 1024
NAMES = ["東京.txt", "emoji🎉.txt", "unicode_名前_ü.md", "ü.md", "café menu.txt"]


@pytest.fixture
def small(settings: Settings) -> Settings:
    """A 1 MB upload limit, so that an oversize file is a few hundred KiB past 1 MiB."""
    return settings.model_copy(update={"max_upload_mb": 1})


@pytest.fixture
def small_client(
    small: Settings, worker: WorkerProcess, auth: dict[str, str]
) -> Iterator[TestClient]:
    with TestClient(create_app(small), headers=auth) as c:
        yield c


def text(label: str) -> bytes:
    """Content of its own, never a duplicate of another test's file."""
    return f"{label}: notes about the migration of swallows, {uuid.uuid4().hex}.\n".encode()


def oversize(settings: Settings, past: int = 200 * 1024) -> bytes:
    return b"a" * (settings.max_upload_bytes + past)


def multipart(collection: str, parts: list[tuple[bytes, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart body written byte by byte: each part is (the Content-Disposition
    parameters after `name="files"`, content)."""
    boundary = b"groundwork-" + uuid.uuid4().hex.encode()
    body = b"".join(
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; ' + params
        + b"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
        for params, data in parts
    )  # fmt: skip
    body += (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="collection"\r\n\r\n'
        + collection.encode() + b"\r\n--" + boundary + b"--\r\n"
    )  # fmt: skip
    return body, {"content-type": f"multipart/form-data; boundary={boundary.decode()}"}


def assert_indexed_with(client: TestClient, doc: dict, content: bytes) -> None:
    assert doc["status"] == "queued", doc
    settled = wait_settled(client, [doc["id"]])[doc["id"]]
    assert settled["status"] == "indexed" and settled["chunks"] >= 1, settled
    assert client.get(f"/api/documents/{doc['id']}/file").content == content


def assert_too_large(doc: dict, name: str) -> None:
    assert doc["filename"] == name and doc["status"] == "rejected", doc
    assert "larger than the 1 MB limit" in doc["error"], doc


def test_small_file_then_oversize_file_stores_the_small_one(
    small_client: TestClient, small: Settings
):
    collection = new_collection()
    first = text("small_before")
    response = upload(
        small_client, collection, ("small_before.txt", first), ("big2.txt", oversize(small))
    )
    assert response.status_code == 201, response.text  # something new was accepted
    small_doc, big = response.json()["documents"]
    assert small_doc["filename"] == "small_before.txt"
    assert_too_large(big, "big2.txt")
    assert "not received" not in big["error"]  # the request was read to its end
    assert big["size_bytes"] == small.max_upload_bytes + 200 * 1024
    assert_indexed_with(small_client, small_doc, first)
    listed = small_client.get("/api/documents", params={"collection": collection}).json()
    assert {d["filename"] for d in listed["documents"]} == {"small_before.txt", "big2.txt"}
    assert not list((small.data_path / "tmp").glob("*"))  # nothing kept on disk


def test_oversize_file_first_then_small_ones_are_still_received(
    small_client: TestClient, small: Settings
):
    collection = new_collection()
    after = [text("small_after"), text("another")]
    response = upload(
        small_client,
        collection,
        ("big.txt", oversize(small)),
        ("small_after.txt", after[0]),
        ("another.md", after[1]),
    )
    assert response.status_code == 201, response.text
    big, *docs = response.json()["documents"]
    assert_too_large(big, "big.txt")
    assert [d["filename"] for d in docs] == ["small_after.txt", "another.md"]
    for doc, content in zip(docs, after, strict=True):
        assert_indexed_with(small_client, doc, content)
    assert not list((small.data_path / "tmp").glob("*"))


def test_two_oversize_files_alone_answer_413_for_each(small_client: TestClient, small: Settings):
    response = upload(
        small_client,
        new_collection(),
        ("big1.txt", oversize(small)),
        ("big2.txt", oversize(small, past=100 * 1024)),
    )
    assert response.status_code == 413, response.text
    first, second = response.json()["documents"]
    assert_too_large(first, "big1.txt")
    assert_too_large(second, "big2.txt")


def test_a_file_far_past_the_limit_stops_the_request_and_says_so(
    small_client: TestClient, small: Settings
):
    """Past half the limit of thrown-away bytes the body is not read further: the files
    before are kept, and the refusal says that files after it were not received."""
    collection = new_collection()
    before = text("kept")
    response = upload(
        small_client,
        collection,
        ("kept.txt", before),
        ("huge.txt", oversize(small, past=4 * MiB)),
        ("never_read.txt", text("never read")),
    )
    assert response.status_code == 201, response.text
    kept, huge = response.json()["documents"]
    assert_too_large(huge, "huge.txt")
    assert "files after it were not received" in huge["error"]
    assert_indexed_with(small_client, kept, before)
    assert not list((small.data_path / "tmp").glob("*"))


def test_the_upload_page_keeps_small_files_beside_an_oversize_one(
    small: Settings, client: TestClient, admin_key: str
):
    """The browser path (/documents/upload) receives files with the same code."""
    collection = new_collection()
    tokyo = text("tokyo")
    with TestClient(
        create_app(small), base_url="https://testserver", headers={"Accept": "text/html"}
    ) as browser:
        assert sign_in(browser, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303
        response = browser.post(
            "/documents/upload",
            data={"collection": collection},
            files=[
                ("files", ("big.txt", oversize(small), "text/plain")),
                ("files", ("東京 notes.txt", tokyo, "text/plain")),
            ],
            headers={"X-CSRF-Token": csrf_of(browser, "/documents")},
        )
    assert response.status_code == 201, response.text
    assert "東京 notes.txt" in response.text and "larger than the 1 MB limit" in response.text
    listed = client.get("/api/documents", params={"collection": collection}).json()["documents"]
    docs = {d["filename"]: d for d in listed}
    assert set(docs) == {"big.txt", "東京 notes.txt"}
    assert_too_large(docs["big.txt"], "big.txt")
    settled = wait_settled(client, [docs["東京 notes.txt"]["id"]])
    assert [d["status"] for d in settled.values()] == ["indexed"]
    assert client.get(f"/api/documents/{docs['東京 notes.txt']['id']}/file").content == tokyo


@pytest.mark.parametrize("form", ["raw UTF-8", "RFC 5987"])
def test_non_ascii_file_names_arrive_exactly(client: TestClient, form: str):
    """Browsers (and httpx) send the name as raw UTF-8 bytes; some clients send
    `filename*=UTF-8''…` with a plain ASCII fallback."""
    collection = new_collection()
    contents = [text(name) for name in NAMES]
    if form == "raw UTF-8":
        response = upload(client, collection, *zip(NAMES, contents, strict=True))
    else:
        parts = [
            (b"filename=\"fallback.txt\"; filename*=UTF-8''" + quote(name).encode(), data)
            for name, data in zip(NAMES, contents, strict=True)
        ]
        body, headers = multipart(collection, parts)
        response = client.post("/api/documents", content=body, headers=headers)
    assert response.status_code == 201, response.text
    docs = response.json()["documents"]
    assert [safe_filename(name) for name in NAMES] == NAMES  # safe_filename keeps them as sent
    assert [d["filename"] for d in docs] == NAMES
    for doc, content in zip(docs, contents, strict=True):
        assert_indexed_with(client, doc, content)
        assert client.get(f"/api/documents/{doc['id']}").json()["filename"] == doc["filename"]
    listed = client.get("/api/documents", params={"collection": collection}).json()["documents"]
    assert sorted(d["filename"] for d in listed) == sorted(NAMES)
