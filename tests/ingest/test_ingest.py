"""Ingestion through the real path: the JSON API or the CLI, Redis, a Celery worker process,
Postgres. Each test works in a collection of its own."""

from __future__ import annotations

import json
import os
import re
import select as io_select
import socket
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from app.config import Settings
from app.db import session_scope
from app.infra.worker_process import WorkerProcess
from app.main import create_app
from app.models import Chunk, Document, IngestionAttempt
from tests.factories import encrypt_pdf, make_docx, make_html, make_pdf, make_zip_bomb
from tests.helpers import groundwork, new_collection, serving, upload, wait_settled


def chunk_rows(document_id: int) -> list[tuple[int, str]]:
    with session_scope() as s:
        rows = s.execute(
            select(Chunk.ordinal, Chunk.text)
            .where(Chunk.document_id == document_id)
            .order_by(Chunk.ordinal)
        )
        return [(ordinal, text) for ordinal, text in rows]


GOOD = {
    "manual.pdf": make_pdf([["Groundwork manual", "Install with make run."], ["Page two."]]),
    "guide.docx": make_docx("Install guide", ["Run make to install.", "## Details", "More."]),
    "page.html": make_html("Page", "Welcome", ["Hello from an HTML page."]),
    "notes.md": b"# Notes\n\nSome notes about ducks and geese.\n",
    "readme.txt": b"Plain text about the migration of swallows.\n",
}


def test_upload_many_files_and_each_is_indexed_with_chunks(client: TestClient):
    collection = new_collection()
    response = upload(client, collection, *GOOD.items())
    assert response.status_code == 201
    docs = response.json()["documents"]
    assert [d["filename"] for d in docs] == list(GOOD)
    assert all(d["status"] == "queued" and d["collection"] == collection for d in docs)
    settled = wait_settled(client, [d["id"] for d in docs])
    for doc in settled.values():
        assert doc["status"] == "indexed", doc
        assert doc["chunks"] >= 1 and doc["error"] is None
    pdf = next(d for d in settled.values() if d["filename"] == "manual.pdf")
    assert pdf["page_count"] == 2
    listed = client.get("/api/documents", params={"collection": collection}).json()["documents"]
    assert {d["id"] for d in listed} == set(settled)
    with session_scope() as s:
        rows = s.execute(
            select(
                Chunk.page_start, Chunk.embedding_model, func.vector_dims(Chunk.embedding)
            ).where(Chunk.document_id == pdf["id"])
        ).all()
    assert rows and all(dims == 384 and "MiniLM" in model for _, model, dims in rows)
    assert {r[0] for r in rows} <= {1, 2}


@pytest.mark.parametrize(
    ("name", "data", "status", "says"),
    [
        ("evil.pdf", b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 200, 415, "Linux executable"),
        ("photo.pdf", b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, 422, "not a readable image"),
        ("anim.png", b"GIF89a" + b"\x00" * 200, 415, "image/gif"),
        ("archive.docx", b"PK\x05\x06" + b"\x00" * 18, 415, "application/zip"),
        ("empty.txt", b"", 422, "empty file"),
        ("bomb.docx", make_zip_bomb(200), 413, "zip bomb"),
    ],
)
def test_bad_files_are_rejected_with_the_reason(
    client: TestClient, name: str, data: bytes, status: int, says: str
):
    response = upload(client, new_collection(), (name, data))
    assert response.status_code == status
    (doc,) = response.json()["documents"]
    assert doc["status"] == "rejected" and says in doc["error"]


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        ("blank.pdf", make_pdf([[]]), "no extractable text in 1 page(s)"),
        ("locked.pdf", encrypt_pdf(make_pdf([["secret"]])), "encrypted"),
        ("broken.pdf", make_pdf([["x"]])[:300], "not a readable PDF"),
    ],
)
def test_unreadable_files_fail_with_a_reason_and_good_ones_are_unaffected(
    client: TestClient, name: str, data: bytes, says: str
):
    response = upload(client, new_collection(), (name, data), ("fine.md", b"# Fine\n\nAll good."))
    assert response.status_code == 201
    ids = [d["id"] for d in response.json()["documents"]]
    bad, good = (wait_settled(client, ids)[i] for i in ids)
    assert bad["status"] == "failed" and says in bad["error"]
    assert good["status"] == "indexed" and good["chunks"] == 1


def test_too_large_is_refused_while_streaming(
    settings: Settings, worker: WorkerProcess, auth: dict[str, str]
):
    """Over a real socket: the 413 arrives while the client is still sending, and the server
    never read (or stored) much past the limit."""
    small = settings.model_copy(update={"max_upload_mb": 1})
    boundary = "groundworkboundary"
    piece = b"a" * (64 * 1024)
    pieces = 8 * 16  # 8 MiB in all
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + pieces * len(piece) + len(tail)
    with serving(create_app(small)) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                f"POST /api/documents HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"
                f"Authorization: {auth['Authorization']}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
                + head
            )
            sent = 0
            while sent < pieces:
                if io_select.select([sock], [], [], 0.01)[0]:
                    break  # the server has answered
                try:
                    sock.sendall(piece)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 413 " in status_line, reply[:300]
    assert sent < pieces, "the whole body was sent before the server answered"
    (doc,) = json.loads(rest.split(b"\r\n\r\n", 1)[1])["documents"]
    assert doc["status"] == "rejected" and "1 MB limit" in doc["error"]
    assert doc["size_bytes"] < 2 * 2**20  # read no more than the limit and a piece past it
    assert not list((settings.data_path / "tmp").glob("*"))  # nothing kept on disk


def test_declared_length_past_the_limit_is_refused_before_reading(client: TestClient):
    response = client.post(
        "/api/documents",
        content=b"x",
        headers={
            "content-type": "multipart/form-data; boundary=x",
            "content-length": str(10**12),
        },
    )
    assert response.status_code == 413


def test_the_document_list_pages_and_says_how_many_there_are(client: TestClient):
    collection = new_collection()
    sent = upload(client, collection, *[(f"n{i}.txt", f"Note {i}.".encode()) for i in range(3)])
    ids = sorted((d["id"] for d in sent.json()["documents"]), reverse=True)  # newest first

    def page(**params) -> dict:
        response = client.get("/api/documents", params={"collection": collection, **params})
        return response.json()

    first, rest = page(limit=2), page(limit=2, offset=2)
    assert [d["id"] for d in first["documents"]] == ids[:2] and first["total"] == 3
    assert [d["id"] for d in rest["documents"]] == ids[2:] and rest["offset"] == 2
    assert client.get("/api/documents", params={"limit": 1001}).status_code == 422


def test_identical_content_is_one_document(client: TestClient):
    collection = new_collection()
    first = upload(client, collection, ("a.md", b"# Same\n\nSame content.")).json()["documents"][0]
    wait_settled(client, [first["id"]])
    again = upload(client, collection, ("b.md", b"# Same\n\nSame content."))
    assert again.status_code == 200
    (dup,) = again.json()["documents"]
    assert dup["id"] == first["id"] and dup["duplicate"] is True
    elsewhere = upload(client, new_collection(), ("a.md", b"# Same\n\nSame content."))
    assert elsewhere.status_code == 201  # another collection has its own copy


def test_new_version_replaces_old_chunks_atomically(client: TestClient):
    collection = new_collection()
    v1 = upload(client, collection, ("policy.md", b"# Policy\n\nVersion one of the policy."))
    v1_id = v1.json()["documents"][0]["id"]
    wait_settled(client, [v1_id])
    v2 = upload(client, collection, ("policy.md", b"# Policy\n\nVersion two, rewritten."))
    v2_id = v2.json()["documents"][0]["id"]
    seen: list[frozenset[int]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with session_scope() as s:
            owners = frozenset(
                s.scalars(
                    select(Chunk.document_id)
                    .join(Document, Document.id == Chunk.document_id)
                    .where(Document.filename == "policy.md")
                    .where(Document.collection.has(name=collection))
                )
            )
        seen.append(owners)
        if owners == {v2_id}:
            break
        time.sleep(0.02)
    assert seen[-1] == {v2_id}
    assert all(owners in ({v1_id}, {v2_id}) for owners in seen), seen  # never none, never both
    assert client.get(f"/api/documents/{v1_id}").status_code == 404
    assert chunk_rows(v2_id)[0][1] == "Version two, rewritten."


def test_one_upload_with_a_name_twice_keeps_the_later_file(client: TestClient):
    """Both versions land in one batch: the later replaces the earlier, and neither is left
    half-done (the earlier was once deleted under its own chunk insert and stuck)."""
    collection = new_collection()
    response = upload(
        client,
        collection,
        ("minutes.txt", b"Minutes, first draft: the budget is open."),
        ("minutes.txt", b"Minutes, final: the budget is approved."),
    )
    older, newer = (d["id"] for d in response.json()["documents"])
    assert older < newer
    deadline = time.monotonic() + 120
    while client.get(f"/api/documents/{newer}").json()["status"] != "indexed":
        assert time.monotonic() < deadline, client.get(f"/api/documents/{newer}").json()
        time.sleep(0.3)
    assert client.get(f"/api/documents/{older}").status_code == 404
    listed = client.get("/api/documents", params={"collection": collection}).json()["documents"]
    assert [(d["id"], d["filename"]) for d in listed] == [(newer, "minutes.txt")]
    assert chunk_rows(newer) == [(0, "Minutes, final: the budget is approved.")]
    assert chunk_rows(older) == []


def test_an_indexed_version_clears_earlier_refused_uploads_of_its_name(client: TestClient):
    collection = new_collection()
    refused = upload(client, collection, ("report.pdf", b"\x7fELF" + b"\x00" * 100)).json()
    assert refused["documents"][0]["status"] == "rejected"
    good = upload(client, collection, ("report.pdf", make_pdf([["The report."]]))).json()
    wait_settled(client, [good["documents"][0]["id"]])
    listed = client.get("/api/documents", params={"collection": collection}).json()["documents"]
    assert [(d["filename"], d["status"]) for d in listed] == [("report.pdf", "indexed")]


def test_a_document_another_worker_holds_is_ingested_once_it_is_let_go(client: TestClient):
    """A generation build holds documents' locks while it embeds them; an upload or reindex
    of one of them meanwhile finds it busy and must come back to it (it stayed queued)."""
    from app.collections.service import create_collection
    from app.db import get_engine
    from app.documents import service
    from app.ingest import attempts

    with session_scope() as s:
        collection = create_collection(s, new_collection())
        doc = service.add_document(s, collection, "held.md", b"# Held\n\nHeld for a while.", 10**6)
        s.commit()
        document = doc.document
        s.expunge(document)
    with get_engine().connect() as holder:
        holder.execute(select(func.pg_advisory_lock(attempts._LOCK_BASE + document.id)))
        with session_scope() as s:
            service.enqueue(s, [document])
        time.sleep(3)  # the worker has seen it busy by now
        assert client.get(f"/api/documents/{document.id}").json()["status"] == "queued"
        holder.execute(select(func.pg_advisory_unlock(attempts._LOCK_BASE + document.id)))
    assert wait_settled(client, [document.id])[document.id]["status"] == "indexed"


def test_delete_removes_document_file_and_chunks(client: TestClient):
    doc = upload(client, new_collection(), ("gone.md", b"# Gone\n\nSoon deleted.")).json()
    doc_id = doc["documents"][0]["id"]
    wait_settled(client, [doc_id])
    assert chunk_rows(doc_id)
    assert client.get(f"/api/documents/{doc_id}/file").content.startswith(b"# Gone")
    assert client.delete(f"/api/documents/{doc_id}").status_code == 204
    assert client.get(f"/api/documents/{doc_id}").status_code == 404
    assert client.get(f"/api/documents/{doc_id}/file").status_code == 404
    assert chunk_rows(doc_id) == []


def test_download_is_an_attachment_never_inline(client: TestClient):
    html = b"<html><body><script>alert(1)</script><p>x</p></body></html>"
    doc = upload(client, new_collection(), ("x.html", html)).json()["documents"][0]
    response = client.get(f"/api/documents/{doc['id']}/file")
    assert response.content == html
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_hostile_filenames_are_stored_safely_and_shown_escaped(client: TestClient):
    collection = new_collection()
    names = [
        b"../../etc/passwd.md",
        b"nul\x00byte.md",
        b"y" * 300 + b".md",
        b"<img src=x onerror=alert(1)>.md",
    ]
    boundary = b"hostile"
    body = (
        b"".join(
            b"--"
            + boundary
            + b'\r\nContent-Disposition: form-data; name="files"; filename="'
            + name
            + b'"\r\n\r\n# Doc %d\n\nBody %d.\r\n' % (i, i)
            for i, name in enumerate(names)
        )
        + b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="collection"\r\n\r\n'
        + collection.encode()
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )
    response = client.post(
        "/api/documents",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=hostile"},
    )
    assert response.status_code == 201, response.text
    stored = [d["filename"] for d in response.json()["documents"]]
    assert stored[0] == "passwd.md" and stored[1] == "nulbyte.md"
    assert len(stored[2]) == 255 and stored[2].endswith(".md")
    assert all("/" not in n and "\x00" not in n for n in stored)
    page = client.get("/documents", params={"collection": collection}).text
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.md" in page


def test_openapi_documents_the_document_api(client: TestClient):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    upload_op = paths["/api/documents"]["post"]
    assert "multipart/form-data" in upload_op["requestBody"]["content"]
    assert {"200", "201", "413", "415", "422"} <= set(upload_op["responses"])
    assert "get" in paths["/api/documents"]
    assert {"get", "delete"} <= set(paths["/api/documents/{document_id}"])
    page = client.get("/docs").text  # Swagger UI from this server: it works offline
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/static/swagger-ui/swagger-ui-bundle.js" in assets and "//" not in "".join(assets)
    assert all(client.get(a).status_code == 200 for a in assets)


def test_crashed_attempts_end_in_failed_after_the_limit(settings: Settings):
    from app.collections.service import create_collection
    from app.documents import service
    from app.ingest import pipeline

    with session_scope() as s:
        collection = create_collection(s, new_collection())
        doc = service.add_document(s, collection, "c.md", b"# C\n\ncrash", 2**20).document
        for _ in range(settings.max_task_attempts):  # workers that died mid-document
            s.add(IngestionAttempt(document_id=doc.id, outcome="running"))
        doc_id = doc.id
    assert pipeline.run([doc_id]) == {doc_id: "failed"}
    with session_scope() as s:
        doc = s.get(Document, doc_id)
        assert doc is not None and doc.status == "failed" and "stopped 3 times" in (doc.error or "")
        outcomes = s.scalars(
            select(IngestionAttempt.outcome).where(IngestionAttempt.document_id == doc_id)
        ).all()
    assert sorted(outcomes) == ["crashed"] * 3


def test_cli_ingest_folder(settings: Settings, worker: WorkerProcess, tmp_path: Path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for name, data in GOOD.items():
        (folder / name).write_bytes(data)
    (folder / "sub" / "evil.pdf").write_bytes(b"\x7fELF" + b"\x00" * 100)
    (folder / ".hidden.md").write_bytes(b"# hidden")
    collection = new_collection()
    result = groundwork("ingest", str(folder), "--collection", collection, "--wait", "--json")
    assert result.returncode == 1, result.stderr  # one file was rejected
    out = json.loads(result.stdout)
    by_name = {d["filename"]: d for d in out["documents"]}
    assert set(by_name) == {*GOOD, "evil.pdf"}
    assert set(out["documents"][0]) == {"id", "filename", "status", "chunks", "error", "labels"}
    assert by_name["evil.pdf"]["status"] == "rejected"
    assert all(by_name[n]["status"] == "indexed" and by_name[n]["chunks"] > 0 for n in GOOD)

    again = groundwork(
        "ingest", str(folder / "notes.md"), "--collection", collection, "--wait", "--json"
    )
    assert again.returncode == 0
    assert json.loads(again.stdout)["documents"][0]["id"] == by_name["notes.md"]["id"]

    (folder / "sub" / "notes.md").write_bytes(b"# Other notes\n\nNot the same notes.\n")
    clash = groundwork("ingest", str(folder), "--collection", collection, "--json")
    assert clash.returncode == 2 and clash.stdout == ""
    assert "2 files share a name" in clash.stderr and "sub/notes.md" in clash.stderr


@pytest.mark.slow
def test_worker_killed_mid_document_ends_indexed_exactly_once(settings: Settings):
    """SIGKILL a real worker while it embeds a long document; a new worker picks the task up
    again once the broker's visibility timeout passes, and the document is indexed once."""
    from app.collections.service import create_collection
    from app.documents import service
    from worker.tasks import ingest_documents

    paragraph = "Sentence about retrieval evaluation and careful engineering of systems. " * 14
    body = "\n\n".join(f"## Part {i}\n\n{paragraph}" for i in range(160)).encode()
    with session_scope() as s:
        collection = create_collection(s, new_collection())
        doc_id = service.add_document(
            s, collection, "long.md", b"# Long\n\n" + body, 2**24
        ).document.id
    env = {"BROKER_VISIBILITY_TIMEOUT_S": "20", "TASK_TIME_LIMIT_S": "15"}
    queue = f"kill-{uuid.uuid4().hex[:6]}"
    first = WorkerProcess(settings, name=f"doomed-{queue}@localhost", env=env, queues=[queue])
    first.start()
    try:
        ingest_documents.apply_async(args=[[doc_id]], queue=queue)
        deadline = time.monotonic() + 120
        while True:
            with session_scope() as s:
                doc = s.get(Document, doc_id)
                assert doc is not None
                if doc.status == "embedding":  # one slice of ~160 chunks: seconds of work left
                    break
                assert doc.status not in ("indexed", "failed"), doc.status
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(first.pid, 9)  # the whole worker: main process and its pool
    finally:
        first.stop()
    with session_scope() as s:
        assert s.scalar(select(func.count()).where(Chunk.document_id == doc_id)) == 0
    second = WorkerProcess(settings, name=f"revived-{queue}@localhost", env=env, queues=[queue])
    with second:
        deadline = time.monotonic() + 120
        while True:
            with session_scope() as s:
                doc = s.get(Document, doc_id)
                assert doc is not None
                if doc.status in ("indexed", "failed"):
                    break
            assert time.monotonic() < deadline, "the task was never delivered again"
            time.sleep(0.5)
    assert doc.status == "indexed", doc.error
    with session_scope() as s:
        ordinals = s.scalars(select(Chunk.ordinal).where(Chunk.document_id == doc_id)).all()
        outcomes = s.scalars(
            select(IngestionAttempt.outcome)
            .where(IngestionAttempt.document_id == doc_id)
            .order_by(IngestionAttempt.id)
        ).all()
        changes = s.scalar(
            text("SELECT count(*) FROM index_changes WHERE document_id = :d"), {"d": doc_id}
        )
    assert sorted(ordinals) == list(range(doc.chunks_total)) and doc.chunks_total > 100
    assert outcomes == ["crashed", "indexed"]
    assert changes == 1
