"""Accounts: signing in, rate limits, sessions, API keys, CSRF, admin-only routes, and the
property that nobody ever gets a result from a collection they may not read."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, event, select, text, update
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.collections import access
from app.config import Settings
from app.db import migrate, session_scope
from app.infra.worker_process import WorkerProcess
from app.ingest.embed import get_embedder
from app.ingest.index import ensure_live_generation, record_change
from app.main import create_app
from app.models import (
    ApiKey,
    AuditEvent,
    Chunk,
    Collection,
    CollectionMember,
    Document,
    User,
    UserSession,
)
from app.retrieval.search import search
from app.retrieval.tokenize import tokenize
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.helpers import csrf_of, groundwork, serving, sign_in

PASSWORD = "a long enough password"


def new_user(role: str = "member") -> User:
    with session_scope() as s:
        return accounts.create_user(
            s, f"{role}-{uuid.uuid4().hex[:8]}@tests.example", PASSWORD, role
        )


def key_for(user: User) -> str:
    with session_scope() as s:
        row = s.get(User, user.id)
        assert row is not None
        return accounts.create_api_key(s, row, "test")[0]


def test_sign_in_sets_a_secure_http_only_session_cookie(browser: TestClient, admin_key: str):
    response = sign_in(browser, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert response.status_code == 303 and response.headers["location"] == "/documents"
    cookie = response.headers["set-cookie"]
    assert "gw_session=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
    assert "samesite=lax" in cookie.lower()
    assert browser.get("/documents").status_code == 200
    with session_scope() as s:
        assert s.scalar(
            select(AuditEvent).where(
                AuditEvent.action == "signin", AuditEvent.actor_email == ADMIN_EMAIL
            )
        )


def test_a_redirect_followed_at_once_finds_what_the_request_wrote(
    settings: Settings, admin_key: str
):
    """The request's database session commits before its response is sent: a browser that
    follows the sign-in redirect at once is signed in. (A slow commit makes the race certain;
    committing after the response, FastAPI's default for dependencies with yield, fails.)"""

    def slow_commit(session) -> None:
        time.sleep(0.5)

    with (
        serving(create_app(settings)) as url,
        httpx.Client(base_url=url, follow_redirects=True) as client,
    ):
        token = csrf_of(client, "/signin")  # type: ignore[arg-type]
        event.listen(Session, "before_commit", slow_commit)
        try:
            response = client.post(
                "/signin",
                data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token},
            )
        finally:
            event.remove(Session, "before_commit", slow_commit)
    assert response.status_code == 200 and str(response.url) == f"{url}/", response.url


@pytest.mark.parametrize(
    ("email", "password"),
    [(ADMIN_EMAIL, "wrong password!"), ("nobody@tests.example", "whatever password")],
)
def test_wrong_sign_in_gets_one_generic_error(
    browser: TestClient, admin_key: str, email: str, password: str
):
    response = sign_in(browser, email, password, headers={"X-Forwarded-For": "ignored"})
    assert response.status_code == 401
    assert "wrong email or password" in response.text
    assert "gw_session" not in response.headers.get("set-cookie", "")


def test_repeated_failures_slow_down_sign_in_per_account(browser: TestClient, admin_key: str):
    user = new_user()
    codes = [sign_in(browser, user.email, "not the password").status_code for _ in range(5)]
    assert codes[:3] == [401, 401, 401]
    assert 429 in codes[3:]  # the 4th try came sooner than the delay allows
    refused = sign_in(browser, user.email, PASSWORD)  # even the right password, for now
    assert refused.status_code == 429 and "try again in" in refused.text


def test_repeated_failures_from_one_address_slow_every_account_from_it(
    browser: TestClient, settings: Settings
):
    limiter = accounts.limiter_for(settings)
    limiter.redis.delete("gw:signin:address:testclient")  # earlier tests failed from here too
    try:
        for _ in range(limiter.FREE_PER_ADDRESS):
            assert sign_in(browser, new_user().email, "wrong password!").status_code == 401
        fresh = new_user()
        assert sign_in(browser, fresh.email, PASSWORD).status_code == 429
    finally:
        limiter.redis.delete("gw:signin:address:testclient")


def test_the_limiter_grows_the_delay(settings: Settings):
    limiter = accounts.limiter_for(settings)
    assert [limiter.delay(n) for n in range(7)] == [0, 0, 0, 1, 2, 4, 8]
    assert limiter.delay(100) == limiter.MAX_DELAY


def test_pages_need_a_session_and_apis_an_api_key(browser: TestClient, admin_key: str):
    page = browser.get("/documents", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/signin?next=")
    fragment = browser.get("/documents", headers={"HX-Request": "true"})
    assert fragment.status_code == 401 and fragment.headers["HX-Redirect"].startswith("/signin")
    assert browser.get("/api/documents").status_code == 401
    bad_key = browser.get("/api/documents", headers={"Authorization": "Bearer gw_nope"})
    assert bad_key.status_code == 401
    assert browser.get("/healthz").status_code in (200, 503)  # health stays public


def test_expired_session_goes_back_to_sign_in(browser: TestClient, admin_key: str):
    sign_in(browser, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert browser.get("/", follow_redirects=False).status_code == 200
    token = csrf_of(browser)
    with session_scope() as s:
        s.execute(update(UserSession).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    response = browser.get("/?c=5", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=%2F%3Fc%3D5"  # back to where it was
    asked = browser.post(
        "/chat/ask",
        data={"question": "half-written"},
        headers={"Accept": "text/event-stream", "X-CSRF-Token": token},
    )
    assert asked.status_code == 401  # the page keeps the draft and signs in again


def test_csrf_is_required_for_session_requests(browser: TestClient, admin_key: str):
    sign_in(browser, ADMIN_EMAIL, ADMIN_PASSWORD)
    token = csrf_of(browser, "/documents")
    name = f"csrf-{uuid.uuid4().hex[:6]}"
    missing = browser.post("/collections", data={"name": name})
    forged = browser.post(
        "/collections", data={"name": name}, headers={"X-CSRF-Token": "forged-token"}
    )
    assert missing.status_code == 403 and forged.status_code == 403
    assert "CSRF" in forged.text
    ok = browser.post("/collections", data={"name": name}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 204
    as_field = browser.post("/collections", data={"name": name + "x", "csrf_token": token})
    assert as_field.status_code == 204


def test_sign_in_form_itself_needs_its_csrf_token(browser: TestClient, admin_key: str):
    response = browser.post("/signin", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert response.status_code == 403


def test_api_keys_need_no_csrf_and_can_be_revoked(browser: TestClient, settings: Settings):
    user = new_user()
    sign_in(browser, user.email, PASSWORD)
    token = csrf_of(browser, "/account")
    made = browser.post("/account/keys", data={"name": "laptop"}, headers={"X-CSRF-Token": token})
    key = re.search(r'<code id="new-key">([^<]+)</code>', made.text).group(1)  # type: ignore[union-attr]
    members_create = settings.model_copy(update={"collection_creators": "members"})
    with TestClient(create_app(members_create)) as api:
        headers = {"Authorization": f"Bearer {key}"}
        assert api.get("/api/me", headers=headers).json()["email"] == user.email
        created = api.post(
            "/api/collections", json={"name": f"k-{uuid.uuid4().hex[:6]}"}, headers=headers
        )
        assert created.status_code == 201  # no CSRF token: API keys carry no cookie
        with session_scope() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.user_id == user.id))
            assert row is not None and row.key_hash != key and key.startswith(row.prefix)
        browser.post(f"/account/keys/{row.id}/revoke", headers={"X-CSRF-Token": token})
        assert api.get("/api/me", headers=headers).status_code == 401


def test_members_add_documents_but_change_only_their_own(
    client: TestClient, browser: TestClient, settings: Settings
):
    """Read access lets a member add documents; deleting or replacing one is for the member
    who uploaded it and for admins."""
    alice, bob = new_user(), new_user()
    name = f"shared-{uuid.uuid4().hex[:6]}"
    members_create = settings.model_copy(update={"collection_creators": "members"})
    with TestClient(create_app(members_create)) as api:
        as_alice = {"Authorization": f"Bearer {key_for(alice)}"}
        as_bob = {"Authorization": f"Bearer {key_for(bob)}"}
        assert api.post("/api/collections", json={"name": name}, headers=as_alice).is_success
        with session_scope() as s:
            collection = s.scalar(select(Collection).where(Collection.name == name))
            assert collection is not None
            s.add(CollectionMember(collection_id=collection.id, user_id=bob.id))

        def upload(headers: dict, filename: str, data: bytes) -> dict:
            response = api.post(
                "/api/documents",
                data={"collection": name},
                files=[("files", (filename, data, "text/plain"))],
                headers=headers,
            )
            return response.json()["documents"][0]

        hers = upload(as_alice, "plan.txt", b"Alice's plan: ship in May.")
        replaced = upload(as_bob, "plan.txt", b"Bob's plan: ship never.")
        assert replaced["status"] == "rejected" and "only they or an admin" in replaced["error"]
        assert api.delete(f"/api/documents/{replaced['id']}", headers=as_bob).status_code == 204
        refused = api.delete(f"/api/documents/{hers['id']}", headers=as_bob)
        assert refused.status_code == 403 and "only they or an admin" in refused.text
        assert api.get(f"/api/documents/{hers['id']}", headers=as_bob).status_code == 200

        his = upload(as_bob, "notes.txt", b"Bob's own notes.")
        assert his["status"] == "queued"
        newer = upload(as_bob, "notes.txt", b"Bob's own notes, revised.")
        assert newer["status"] == "queued" and newer["id"] != his["id"]
        sign_in(browser, bob.email, PASSWORD)
        page = browser.get("/documents", params={"collection": name}).text
        assert f"/documents/{newer['id']}/delete" in page  # his own: a Delete button
        assert f'id="doc-{hers["id"]}"' in page and f"/documents/{hers['id']}/delete" not in page
        assert api.delete(f"/api/documents/{newer['id']}", headers=as_bob).status_code == 204
    assert client.delete(f"/api/documents/{hers['id']}").status_code == 204  # an admin may


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin"),
        ("GET", "/admin/jobs"),
        ("GET", "/api/admin/jobs"),
        ("POST", "/admin/reindex"),
        ("POST", "/admin/users"),
        ("POST", "/admin/generations"),
    ],
)
def test_members_get_403_on_every_admin_route(
    settings: Settings, worker: WorkerProcess, method: str, path: str
):
    member = key_for(new_user())
    with TestClient(create_app(settings)) as c:
        response = c.request(
            method,
            path,
            headers={"Authorization": f"Bearer {member}"},
            data={"scope": "all"} if method == "POST" else None,
        )
    assert response.status_code == 403


def test_admin_api_jobs(client: TestClient):
    body = client.get("/api/admin/jobs").json()
    assert set(body) == {
        "queue_depth",
        "unsent",
        "workers",
        "restarts",
        "running",
        "queued",
        "failed",
    }
    assert body["workers"]


def test_signin_page_says_how_to_make_the_first_admin(settings: Settings):
    admin_engine = create_engine(settings.database_url or "", isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS no_admin_yet"))
        conn.execute(text("CREATE DATABASE no_admin_yet"))
    scratch = settings.model_copy(
        update={"database_url": (settings.database_url or "").rsplit("/", 1)[0] + "/no_admin_yet"}
    )
    try:
        migrate(scratch)
        with TestClient(create_app(scratch)) as c:
            page = c.get("/signin").text
        assert "No admin yet" in page and "groundwork create-admin" in page
    finally:
        from app.db import dispose_engines

        dispose_engines()
        with admin_engine.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS no_admin_yet WITH (FORCE)"))
        admin_engine.dispose()


def test_create_admin_cli(settings: Settings):
    email = f"cli-{uuid.uuid4().hex[:6]}@tests.example"
    result = groundwork("create-admin", email, "--password-stdin", input="a very good password\n")
    assert result.returncode == 0, result.stderr
    with session_scope() as s:
        user = s.scalar(select(User).where(User.email == email))
        assert (
            user is not None and user.role == "admin" and user.password_hash.startswith("$argon2")
        )
    short = groundwork("create-admin", "x" + email, "--password-stdin", input="short\n")
    assert short.returncode == 2 and "at least" in short.stderr


# -- the access property ---------------------------------------------------------------------

WORDS = ["alpha", "bravo", "delta", "falcon", "harbor", "island", "juniper", "kettle", "lantern"]


@pytest.fixture(scope="module")
def vectors() -> dict[str, np.ndarray]:
    return dict(zip(WORDS, get_embedder().encode(WORDS), strict=True))


def build_world(settings: Settings, data, vectors: dict[str, np.ndarray]) -> dict:
    """Users, groups, collections with documents (one chunk each, written straight to the
    index), and random memberships."""
    tag = uuid.uuid4().hex[:6]
    n_collections = data.draw(st.integers(1, 4))
    n_users = data.draw(st.integers(1, 3))
    n_groups = data.draw(st.integers(0, 2))
    with session_scope() as s:
        generation = ensure_live_generation(s, settings)
        collections = [Collection(name=f"prop-{tag}-{i}") for i in range(n_collections)]
        s.add_all(collections)
        users = [
            accounts.create_user(s, f"u{i}-{tag}@tests.example", PASSWORD) for i in range(n_users)
        ]
        groups = [accounts.create_group(s, f"g{i}-{tag}") for i in range(n_groups)]
        s.flush()
        docs = []
        for c in collections:
            for word in data.draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3)):
                doc = Document(
                    collection_id=c.id,
                    filename=f"{word}.md",
                    title=word,
                    content_type="text/markdown",
                    size_bytes=10,
                    sha256=uuid.uuid4().hex,
                    status="indexed",
                    text=word,
                )
                s.add(doc)
                s.flush()
                s.add(
                    Chunk(
                        document_id=doc.id,
                        generation_id=generation.id,
                        collection_id=c.id,
                        ordinal=0,
                        text=f"notes about {word}",
                        lexemes=" ".join(tokenize(f"notes about {word}")),
                        heading_path=[],
                        char_start=0,
                        char_end=len(word),
                        embedding=vectors[word],
                        embedding_model=generation.embedding_model,
                    )
                )
                docs.append(doc)
        for user in users:
            for group in groups:
                if data.draw(st.booleans()):
                    accounts.add_to_group(s, group, user)
        for c in collections:
            for user in users:
                if data.draw(st.booleans()):
                    access.add_member(s, c, user=user)
            for group in groups:
                if data.draw(st.booleans()):
                    access.add_member(s, c, group=group)
        s.flush()
        record_change(s, [d.id for d in docs])
        return {"users": [u.id for u in users], "docs": [(d.id, d.collection_id) for d in docs]}


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_result_ever_comes_from_an_unreadable_collection(
    settings: Settings, worker: WorkerProcess, vectors: dict[str, np.ndarray], data
):
    world = build_world(settings, data, vectors)
    for user_id in world["users"]:
        with session_scope() as s:
            user = s.get(User, user_id)
            readable = set(access.readable_collections(s, user) or [])
            for mode in ("bm25", "dense", "hybrid"):
                query = " ".join(
                    data.draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))
                )
                result = search(
                    s,
                    f"notes {query}",
                    mode=mode,
                    k=50,
                    collections=sorted(readable),
                    settings=settings,
                )
                found = {h.collection for h in result.hits}
                names = set(s.scalars(select(Collection.name).where(Collection.id.in_(readable))))
                assert found <= names, (mode, found, names)
        key = key_for(user)  # the same through the API, as that user
        with TestClient(create_app(settings)) as c:
            headers = {"Authorization": f"Bearer {key}"}
            listed = c.get("/api/documents", headers=headers).json()["documents"]
            assert {d["collection"] for d in listed} <= names
            for doc_id, collection_id in world["docs"]:
                status = c.get(f"/api/documents/{doc_id}", headers=headers).status_code
                assert status == (200 if collection_id in readable else 404)
            hits = c.get(
                "/api/search", params={"q": "notes alpha bravo delta", "k": 50}, headers=headers
            ).json()["results"]
            assert {h["collection"] for h in hits} <= names
