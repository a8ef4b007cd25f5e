"""Robustness: the embedded LLM ignores a hosting platform's PORT/HOST, single-byte text files
decode to the characters written, and bad admin and command-line input is a clear error."""

from __future__ import annotations

import codecs
import html
import signal
import socket
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app import cli
from app.config import Settings
from app.db import session_scope
from app.infra.parts import LlamaKind, llama_child_env
from app.infra.processes import stop_process
from app.infra.worker_process import WorkerProcess
from app.ingest import detect
from app.ingest.parse import parse
from app.ingest.parse.text import decode
from app.ingest.structure import Limits
from app.main import create_app
from app.models import (
    AuditEvent,
    Collection,
    CollectionMember,
    Document,
    IndexGeneration,
    ReindexJob,
)
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.helpers import csrf_of, new_collection, sign_in, upload, wait_settled

# -- 1. the embedded llama.cpp server takes its address from its command line only ----------


def test_llama_child_env_drops_what_would_override_its_command_line():
    dropped = {
        "PORT": "8080",
        "HOST": "0.0.0.0",
        "port": "8081",  # pydantic-settings reads field names case-insensitively
        "CONFIG_FILE": "/etc/llama.json",
        "API_KEY": "platform-secret",
        "SSL_KEYFILE": "/k.pem",
        "SSL_CERTFILE": "/c.pem",
        "WEB_CONCURRENCY": "4",
    }
    kept = {  # needed by the child, or overridden by the command line anyway, or ours
        "PATH": "/usr/bin",
        "MODEL": "/elsewhere.gguf",
        "N_CTX": "1",
        "LLM_API_KEY": "kept",
        "DATABASE_URL": "postgresql://x",
        "PORTAL": "kept",
    }
    assert llama_child_env({**dropped, **kept}) == kept


def test_embedded_llm_answers_on_its_own_port_when_the_platform_sets_port(
    tmp_path, monkeypatch: pytest.MonkeyPatch
):
    """A hosting platform's PORT (and HOST, WEB_CONCURRENCY, API_KEY) are for the web app:
    the llama.cpp child must still serve, without a key, where Groundwork told it to."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        platform_port = taken.getsockname()[1]
        monkeypatch.setenv("PORT", str(platform_port))
        monkeypatch.setenv("HOST", "0.0.0.0")
        monkeypatch.setenv("WEB_CONCURRENCY", "4")
        monkeypatch.setenv("API_KEY", "for-the-web-app")
        proc, url = LlamaKind(tmp_path, "SmolLM2-135M-Instruct", 512, 2).launch()
        try:
            assert url.startswith("http://127.0.0.1:") and f":{platform_port}/" not in url
            models = httpx.get(f"{url}/models", timeout=10)
            assert models.status_code == 200
            assert [m["id"] for m in models.json()["data"]] == ["SmolLM2-135M-Instruct"]
        finally:
            stop_process(proc.pid, signal.SIGTERM, proc)


# -- 2. single-byte text decodes to the characters written -----------------------------------

FRENCH = (
    "Les élèves étudièrent la thèse du célèbre mathématicien à l'école normale. Ça coûte "
    "très cher, déclarèrent-ils, mais l'été précédent fut agréable au bord de la mer."
)
GERMAN = "Die Bäcker öffnen früh; Grüße aus München und schöne Größe für Äpfel."
RUSSIAN = (
    "Съешь же ещё этих мягких французских булок, да выпей чаю. Широкая электрификация "
    "южных губерний даст мощный толчок подъёму сельского хозяйства."
)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        # Western text that charset_normalizer used to misread (cp1250, cp1006).
        ("Café crème brûlée", "cp1252"),
        ("à", "cp1252"),
        ("naïve café", "latin-1"),
        ("A ação e a emoção do coração não são iguais à razão.", "cp1252"),
        ("It’s “quoted” — Paris–Rome… for €5", "cp1252"),
        (GERMAN, "cp1252"),
        (GERMAN, "latin-1"),
        (FRENCH, "latin-1"),
        (FRENCH + "\n\n" + GERMAN, "cp1252"),
        # Other encodings are still detected (also decodable as cp1252, but not Western).
        ("Привет, мир! Как дела?", "cp1251"),
        (RUSSIAN, "cp1251"),
        ("Zażółć gęślą jaźń", "cp1250"),
        ("Καλημέρα κόσμε, τι κάνεις;", "cp1253"),
        ("日本語のテキストです。これはテストです。", "shift_jis"),
    ],
)
def test_single_byte_text_decodes_to_the_characters_written(text: str, encoding: str):
    assert decode(text.encode(encoding)) == text


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (codecs.BOM_UTF32_LE + "Grüße, à bientôt".encode("utf-32-le"), "Grüße, à bientôt"),
        (codecs.BOM_UTF16_BE + "Grüße, à bientôt".encode("utf-16-be"), "Grüße, à bientôt"),
        (codecs.BOM_UTF8 + "Grüße, à bientôt".encode(), "Grüße, à bientôt"),
    ],
)
def test_byte_order_marks_decide_the_encoding(data: bytes, text: str):
    assert decode(data) == text


def test_latin1_text_file_parses_into_exact_paragraphs():
    data = ("Crème brûlée\n\n" + FRENCH + "\n\nnaïve café").encode("latin-1")
    parsed = parse(detect.TEXT, data, "menu.txt", Limits(10, 10_000))
    assert [b.text for b in parsed.blocks] == ["Crème brûlée", FRENCH, "naïve café"]


# -- 3. bad input is a clear error, not a crash ----------------------------------------------


@pytest.fixture
def admin_browser(
    settings: Settings, worker: WorkerProcess, admin_key: str
) -> Iterator[TestClient]:
    """The admin signed in with a session cookie, as the admin page's forms are sent."""
    with TestClient(
        create_app(settings), base_url="https://testserver", headers={"Accept": "text/html"}
    ) as c:
        assert sign_in(c, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303
        yield c


def _counts() -> tuple[int, int, int, int]:
    with session_scope() as s:
        return (
            s.scalar(select(func.count()).select_from(ReindexJob)) or 0,
            s.scalar(select(func.count()).select_from(IndexGeneration)) or 0,
            s.scalar(select(func.count()).where(AuditEvent.action == "reindex")) or 0,
            s.scalar(select(func.count()).where(Document.status == "queued")) or 0,
        )


@pytest.mark.parametrize("target", ["abc", "99999999999999999999", "-3", "1.5", ""])
def test_reindex_of_a_bad_document_id_is_a_clear_error(
    admin_browser: TestClient, client: TestClient, target: str
):
    # An indexed document exists, so a crash or a silent reindex would have work to do.
    doc = upload(client, new_collection(), ("kept.md", b"# Kept\n\nNothing to reindex here."))
    wait_settled(client, [doc.json()["documents"][0]["id"]])
    before = _counts()
    token = csrf_of(admin_browser, "/admin")
    response = admin_browser.post(
        "/admin/reindex",
        data={"scope": "document", "target": target},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert response.status_code in (400, 422), response.text[:300]
    message = html.unescape(response.text)
    assert "is not a document id" in message or "name the id of the document" in message
    assert _counts() == before


def test_reindex_of_a_collection_without_a_name_is_a_clear_error(admin_browser: TestClient):
    before = _counts()
    token = csrf_of(admin_browser, "/admin")
    response = admin_browser.post(
        "/admin/reindex",
        data={"scope": "collection", "target": "  "},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert response.status_code == 422 and "name the collection" in html.unescape(response.text)
    assert "None" not in response.text
    assert _counts() == before


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "hotel", "--k=-5"],
        ["search", "hotel", "--k", "0"],
        ["search", "hotel", "--k=100000", "--mode", "dense"],
        ["search", "hotel", "--k", "101", "--mode", "bm25"],
    ],
)
def test_cli_search_rejects_k_outside_the_api_bounds(
    settings: Settings,
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(cli, "configure_logging", lambda settings: None)
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    k = argv[2].removeprefix("--k=") if argv[2].startswith("--k=") else argv[3]
    assert err == f"groundwork: --k must be from 1 to 100 (got {k})\n" and out == ""


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/documents?offset=100000000000000000000"),
        ("GET", "/api/documents/99999999999999999999"),
        ("DELETE", "/api/documents/99999999999999999999"),
        ("DELETE", "/api/admin/collections/99999999999"),
    ],
)
def test_a_number_past_its_column_is_a_clear_error_in_every_route(
    client: TestClient, method: str, path: str
):
    response = client.request(method, path)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == "a number in the request is out of range"
    assert client.get("/api/documents", params={"limit": 1}).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/ask", {"question": "What is kept?", "colection": "handbook"}, "colection"),
        ("/api/documents/urls", {"urls": ["https://example.org/"], "colection": "x"}, "colection"),
        ("/api/collections", {"name": "fine-name", "nmae": "typo"}, "nmae"),
    ],
)
def test_a_misspelt_field_is_refused_not_ignored(
    client: TestClient, path: str, body: dict, field: str
):
    # Ignored, a misspelt "collection" would widen an answer to every collection, or put
    # pages into the default one.
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/api/ask", "/api/collections"])
def test_json_too_deep_to_parse_is_a_400_in_the_apis_shape(client: TestClient, path: str):
    response = client.post(
        path,
        content=b"[" * 100_000 + b"]" * 100_000,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "bad_request",
        "message": "There was an error parsing the body",
    }


def test_a_taken_group_name_is_a_409_and_no_audit_row(admin_browser: TestClient):
    name = f"team-{new_collection()}"
    token = csrf_of(admin_browser, "/admin")
    headers = {"X-CSRF-Token": token, "HX-Request": "true"}

    def audited() -> int:
        with session_scope() as s:
            return (
                s.scalar(
                    select(func.count()).where(
                        AuditEvent.action == "group.create", AuditEvent.target == name
                    )
                )
                or 0
            )

    assert admin_browser.post("/admin/groups", data={"name": name}, headers=headers).is_success
    again = admin_browser.post("/admin/groups", data={"name": f" {name} "}, headers=headers)
    assert again.status_code == 409 and "exists already" in html.unescape(again.text)
    assert audited() == 1


def test_a_grant_naming_a_user_and_a_group_grants_both(
    admin_browser: TestClient, client: TestClient
):
    collection = new_collection()
    assert client.post("/api/collections", json={"name": collection}).status_code == 201
    group = f"team-{collection}"
    token = csrf_of(admin_browser, "/admin")
    headers = {"X-CSRF-Token": token, "HX-Request": "true"}
    assert admin_browser.post("/admin/groups", data={"name": group}, headers=headers).is_success
    with session_scope() as s:
        cid = s.scalar(select(Collection.id).where(Collection.name == collection))
    granted = admin_browser.post(
        f"/admin/collections/{cid}/members",
        data={"email": ADMIN_EMAIL, "group": group},
        headers=headers,
    )
    assert granted.status_code == 200
    with session_scope() as s:
        members = s.execute(
            select(CollectionMember.user_id, CollectionMember.group_id).where(
                CollectionMember.collection_id == cid
            )
        ).all()
    assert sorted((u is None, g is None) for u, g in members) == [(False, True), (True, False)]
