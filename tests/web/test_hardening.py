"""Hardening at the edges: collection names cannot be squatted, NUL characters are refused
in every kind of route, every response carries the security headers, anonymous health shows
statuses only, forwarded HTTPS makes cookies Secure, and a cross-site state change with a
valid token is refused."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.accounts import service as accounts
from app.config import Settings
from app.db import session_scope
from app.infra.processes import free_port
from app.infra.worker_process import WorkerProcess
from app.main import create_app
from app.models import User
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.helpers import csrf_of, new_collection, sign_in, upload

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a long enough password"


def member() -> tuple[User, str]:
    with session_scope() as s:
        user = accounts.create_user(s, f"m-{uuid.uuid4().hex[:8]}@tests.example", PASSWORD)
        key, _ = accounts.create_api_key(s, user, "test")
    return user, key


@pytest.fixture
def members_create(settings: Settings, worker: WorkerProcess) -> Iterator[TestClient]:
    """The app with COLLECTION_CREATORS=members (no default credentials)."""
    with TestClient(
        create_app(settings.model_copy(update={"collection_creators": "members"}))
    ) as c:
        yield c


# -- 3. collection squatting -----------------------------------------------------------------


def test_members_cannot_create_collections_by_default(client: TestClient):
    _, key = member()
    as_member = {"Authorization": f"Bearer {key}"}
    name = new_collection()
    made = client.post("/api/collections", json={"name": name}, headers=as_member)
    assert made.status_code == 403 and "COLLECTION_CREATORS" in made.text

    def upload_to(collection: str):
        return client.post(
            "/api/documents",
            data={"collection": collection},
            files=[("files", ("a.md", b"# A\n\nsquatting by upload", "text/markdown"))],
            headers=as_member,
        )

    uploaded = upload_to(name)
    assert uploaded.status_code == 404 and "only admins create collections" in uploaded.text
    assert name not in [c["name"] for c in client.get("/api/collections").json()]
    # A collection that exists but that the member may not read gets the same answer: an
    # upload does not tell which names are taken.
    taken = new_collection()
    assert client.post("/api/collections", json={"name": taken}).status_code == 201
    refused = upload_to(taken)
    assert refused.status_code == 404
    assert refused.json()["error"]["message"] == uploaded.json()["error"]["message"].replace(
        name, taken
    )


def test_a_taken_name_is_refused_and_never_handed_back(
    client: TestClient, members_create: TestClient, auth: dict[str, str]
):
    _, key = member()
    as_member = {"Authorization": f"Bearer {key}"}
    name = f"hr-payroll-{uuid.uuid4().hex[:6]}"
    squatted = members_create.post("/api/collections", json={"name": name}, headers=as_member)
    assert squatted.status_code == 201
    # The admin "creates" it: refused, by the API and by the page's form alike.
    again = members_create.post("/api/collections", json={"name": name}, headers=auth)
    assert again.status_code == 409 and "taken" in again.json()["error"]["message"]
    page = members_create.post("/collections", data={"name": name}, headers=auth)
    assert page.status_code == 409
    # So the admin's salaries go into a collection of their own, which the member cannot see.
    own = members_create.post("/api/collections", json={"name": name + "-admin"}, headers=auth)
    assert own.status_code == 201
    stored = upload(client, name + "-admin", ("salaries.txt", b"Alice earns 100,000."))
    salaries = stored.json()["documents"][0]["id"]
    mine = members_create.get("/api/documents", headers=as_member).json()["documents"]
    assert all(d["id"] != salaries for d in mine)
    assert members_create.get(f"/api/documents/{salaries}", headers=as_member).status_code == 404
    listed = members_create.get("/api/collections", headers=as_member).json()
    assert [c["name"] for c in listed if c["name"].startswith(name)] == [name]


# -- 5. NUL characters -----------------------------------------------------------------------


def test_nul_is_a_422_in_every_kind_of_route(client: TestClient, browser: TestClient):
    assert client.post("/api/ask", json={"question": "quokka\u0000?"}).status_code == 422
    assert client.get("/api/search", params={"q": "quokka\x00"}).status_code == 422
    assert client.get("/search?q=quokka%00").status_code == 422
    assert client.get("/api/documents/1%00").status_code == 422
    multipart = client.post(
        "/api/documents",
        data={"collection": "a\x00b"},
        files=[("files", ("n.md", b"# N\n\nnul field", "text/markdown"))],
    )
    assert multipart.status_code == 422 and "NUL" in multipart.text
    # Forms: sign-in, API key names, feedback, admin forms (tokens as a browser sends them).
    token = csrf_of(browser, "/signin")
    signin = browser.post(
        "/signin", data={"email": "a\x00@example.com", "password": "x", "csrf_token": token}
    )
    assert signin.status_code == 422
    sign_in(browser, ADMIN_EMAIL, ADMIN_PASSWORD)
    token = csrf_of(browser, "/account")
    for path, form in (
        ("/account/keys", {"name": "key\x00"}),
        ("/chat/messages/1/feedback", {"value": "1", "comment": "bad\x00"}),
        ("/admin/users", {"email": "x\x00@example.com", "password": PASSWORD}),
        ("/admin/groups", {"name": "g\x00"}),
        ("/collections", {"name": "c\x00"}),
    ):
        response = browser.post(path, data=form, headers={"X-CSRF-Token": token})
        assert response.status_code == 422, (path, response.status_code, response.text[:200])
        assert "NUL" in response.text


# -- 6. security headers ---------------------------------------------------------------------

EXPECTED = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@pytest.mark.parametrize(
    "path", ["/signin", "/api/me", "/api/documents/999999999", "/static/app.css", "/nowhere"]
)
def test_every_response_carries_the_security_headers(client: TestClient, path: str):
    response = client.get(path)
    for name, value in EXPECTED.items():
        assert response.headers[name] == value, (path, name)
    csp = response.headers["content-security-policy"]
    for part in (
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'self'",
    ):
        assert part in csp, (path, csp)
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


def test_pages_have_no_inline_script(browser: TestClient):
    sign_in(browser, ADMIN_EMAIL, ADMIN_PASSWORD)
    for path in ("/", "/documents", "/search", "/admin", "/account", "/docs"):
        page = browser.get(path).text
        scripts = page.split("<script")[1:]
        assert scripts, path
        assert all(s.lstrip().startswith("src=") for s in scripts), (path, scripts)
        assert " onclick=" not in page and "javascript:" not in page


# -- 7. health, proxies, origins -------------------------------------------------------------


def test_anonymous_health_shows_statuses_only(settings: Settings, client: TestClient):
    with TestClient(create_app(settings)) as anonymous:
        body = anonymous.get("/healthz").json()
    assert set(body["database"]) == {"status"} and set(body["llm"]) == {"status"}
    detailed = client.get("/healthz").json()  # an admin's API key
    assert "postgres" in detailed["database"]["detail"]


def test_compose_trusts_forwarded_headers_only_from_the_configured_proxy():
    compose = (ROOT / "docker-compose.yml").read_text()
    assert '"--proxy-headers"' in compose
    assert '"--forwarded-allow-ips", "${FORWARDED_ALLOW_IPS:-127.0.0.1}"' in compose
    assert "FORWARDED_ALLOW_IPS=" in (ROOT / ".env.example").read_text()


@pytest.mark.parametrize(("trusted", "secure"), [("127.0.0.1", True), ("10.9.9.9", False)])
def test_https_behind_a_trusted_proxy_makes_the_session_cookie_secure(
    settings: Settings, worker: WorkerProcess, trusted: str, secure: bool
):
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        proxy_headers=True,
        forwarded_allow_ips=trusted,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            page = c.get("/signin", headers={"X-Forwarded-Proto": "https"})
            token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
            # The proxy speaks https to the browser: its (maybe Secure) cookie comes back.
            cookie = page.headers["set-cookie"].split(";")[0]
            signed = c.post(
                "/signin",
                data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token},
                headers={"X-Forwarded-Proto": "https", "Cookie": cookie},
            )
        cookie = signed.headers["set-cookie"]
        assert "gw_session=" in cookie and ("Secure" in cookie) is secure, cookie
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_cross_site_state_change_is_refused_even_with_a_valid_token(browser: TestClient):
    sign_in(browser, ADMIN_EMAIL, ADMIN_PASSWORD)
    token = csrf_of(browser, "/documents")
    name = new_collection()
    headers = {"X-CSRF-Token": token}
    for evil in ({"Origin": "http://127.0.0.1:9999"}, {"Referer": "https://evil.example/x"}):
        refused = browser.post("/collections", data={"name": name}, headers={**headers, **evil})
        assert refused.status_code == 403 and "another site" in refused.text, evil
    same = browser.post(
        "/collections", data={"name": name}, headers={**headers, "Origin": "https://testserver"}
    )
    assert same.status_code == 204
