"""Web pages by URL, against a real HTTP server on loopback (allowed by the tests'
FETCH_ALLOW_HOSTS=127.0.0.1; nothing else is): the article without its chrome, sitemaps,
re-ingesting, and every way a fetch is refused, each with its reason."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from app.config import Settings
from app.infra.worker_process import WorkerProcess
from app.ingest.parse import parse
from app.ingest.structure import Limits, ParseError
from app.web_pages import addresses
from app.web_pages.addresses import Refused, check_url, refusal
from app.web_pages.fetch import Fetcher, FetchError
from app.web_pages.service import url_name
from tests.factories import make_image
from tests.helpers import groundwork, new_collection, serving, wait_settled

CHROME = ["cookie-consent banner", "Gift shop", "Copyright 2026 Example Zoo", "Penguin parade"]
MiB = 1024 * 1024


def article(topic: str, version: int = 1) -> str:
    return f"""<!doctype html><html><head><title>{topic.title()} Care Guide | Zoo Wiki</title>
<script>var tracking = "do not index";</script></head><body>
<div class="cookie-banner">We use cookies: this cookie-consent banner asks you to accept all.</div>
<nav><a href="/">Home</a> <a href="/about">About the zoo</a> <a href="/shop">Gift shop</a></nav>
<header><p>Zoo Wiki, the keepers' handbook</p></header>
<main><article><h1>{topic.title()} Care Guide</h1>
<p>River {topic} need a pool at least two metres deep and fresh fish twice a day.</p>
<h2>Feeding</h2><p>Keepers weigh the trout ration each morning and write it in the
feeding book (version {version}).</p><p>Clams are given on Sundays as enrichment.</p>
<h2>Enclosure</h2><p>The enclosure is cleaned every Tuesday while the {topic} are in the
holding den.</p></article></main>
<aside>Related pages: Penguin parade, Seal show.</aside>
<footer>Copyright 2026 Example Zoo. Privacy policy. Terms of use.</footer></body></html>"""


class Site:
    """What the test server serves; tests change it between fetches."""

    def __init__(self) -> None:
        self.version = 1
        self.base = ""
        self.robots = "User-agent: *\nDisallow: /private/\n"


SITE = Site()


async def page(request: Request) -> Response:
    topic = request.path_params["topic"]
    return HTMLResponse(article(topic, SITE.version))


async def sitemap(request: Request) -> Response:
    pages = [f"{SITE.base}/wiki/{t}" for t in ("otters", "beavers", "herons")]
    pages += ["https://elsewhere.example/wiki/foxes", f"{SITE.base}/private/secret"]
    body = "".join(f"<url><loc>{p}</loc></url>" for p in pages)
    return Response(
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</urlset>',
        media_type="application/xml",
    )


async def redirect(request: Request) -> Response:
    target = {
        "metadata": "http://169.254.169.254/latest/meta-data/iam/",
        "localhost": SITE.base.replace("127.0.0.1", "localhost") + "/wiki/otters",
        "private": "http://10.0.0.5/admin",
        "ftp": "ftp://127.0.0.1/file",
        "loop": f"{SITE.base}/redirect/loop",
        "fine": f"{SITE.base}/wiki/otters",
    }[request.path_params["to"]]
    return Response(status_code=302, headers={"Location": target})


async def huge(request: Request) -> Response:
    """50 MB of HTML: declared, or streamed without a length (chunked)."""
    piece = b"<p>" + b"words " * 10_000 + b"</p>"

    async def stream():
        for _ in range(50 * MiB // len(piece) + 1):
            yield piece

    headers = {"Content-Length": str(50 * MiB)} if request.query_params.get("declared") else {}
    if headers:
        return Response(b"<p>x</p>" * (50 * MiB // 8), media_type="text/html", headers=headers)
    return StreamingResponse(stream(), media_type="text/html")


async def slow(request: Request) -> Response:
    async def trickle():
        yield b"<html><body><p>"
        for _ in range(120):
            await asyncio.sleep(0.5)
            yield b"x "

    return StreamingResponse(trickle(), media_type="text/html")


async def silent(request: Request) -> Response:
    await asyncio.sleep(60)
    return HTMLResponse("late")


async def image(request: Request) -> Response:
    return Response(make_image(["not a page"]), media_type="image/png")


async def disguised(request: Request) -> Response:  # an image that says it is HTML
    return Response(make_image(["not a page"]), media_type="text/html")


async def robots(request: Request) -> Response:
    return PlainTextResponse(SITE.robots)


async def missing(request: Request) -> Response:
    return PlainTextResponse("no such page", status_code=404)


ROUTES = [
    Route("/wiki/{topic}", page),
    Route("/private/{name}", page),
    Route("/sitemap.xml", sitemap),
    Route("/redirect/{to}", redirect),
    Route("/huge", huge),
    Route("/slow", slow),
    Route("/silent", silent),
    Route("/image.png", image),
    Route("/disguised", disguised),
    Route("/robots.txt", robots),
    Route("/gone", missing),
]


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with serving(Starlette(routes=ROUTES)) as url:
        SITE.base = url
        yield url


@pytest.fixture
def fetcher(settings: Settings) -> Fetcher:
    return Fetcher(settings)


# -- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "says"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("168.63.129.16", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not a public address"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_addresses_that_are_not_public_are_refused_with_the_reason(ip: str, says: str):
    reason = refusal(ipaddress.ip_address(ip))
    assert reason is not None and says in reason
    assert refusal(ipaddress.ip_address("93.184.216.34")) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("file:///etc/passwd", "only http:// and https://"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "only http:// and https://"),
        ("javascript:alert(1)", "only http:// and https://"),
        ("http://user:pass@example.org/", "user name or password"),
        ("http:///nohost", "names no host"),
        ("http://example.org:99999/", "not a valid URL"),
        ("http://exa mple.org/", "spaces or control characters"),
        ("http://example.org/" + "a" * 3000, "longer than 2,048"),
        ("", "empty"),
    ],
)
def test_urls_that_are_not_web_addresses_are_refused(url: str, says: str):
    with pytest.raises(Refused, match=says):
        check_url(url)


def test_names_resolving_to_private_addresses_are_refused_unless_allowed():
    parts = lambda u: __import__("urllib.parse").parse.urlsplit(check_url(u))  # noqa: E731
    with pytest.raises(Refused, match=r"localhost resolves to (127\.0\.0\.1|::1), which is a loop"):
        addresses.resolve(parts("http://localhost/"), frozenset(), 5)
    with pytest.raises(Refused, match=r"0x7f\.1 resolves to 127\.0\.0\.1, which is a loopback"):
        addresses.resolve(parts("http://0x7f.1/"), frozenset(), 5)  # inet_aton's spelling
    with pytest.raises(Refused, match="does not resolve"):
        addresses.resolve(parts("http://no-such-host.invalid/"), frozenset(), 5)
    assert str(addresses.resolve(parts("http://localhost/"), frozenset({"localhost"}), 5)) in (
        "127.0.0.1",
        "::1",
    )


def test_url_names_are_unique_short_and_never_an_upload_name():
    assert url_name("https://wiki.example.org/a/b?x=1") == "wiki.example.org/a/b?x=1"
    assert url_name("https://example.org") == "example.org/"
    long = url_name("https://example.org/" + "x" * 500)
    assert len(long) <= 255 and long != url_name("https://example.org/" + "x" * 499)


# -- fetching --------------------------------------------------------------------------------


def test_an_article_is_read_without_its_chrome(site: str, fetcher: Fetcher):
    fetched = fetcher.get(f"{site}/wiki/otters")
    assert fetched.content_type == "text/html"
    parsed = parse("text/html", fetched.data, "x", Limits(10, 10**6), source_url=fetched.url)
    text = " ".join(b.text for b in parsed.blocks)
    assert "two metres deep" in text and "cleaned every Tuesday" in text
    for chrome in CHROME:
        assert chrome not in text
    assert "do not index" not in text
    headings = [b.text for b in parsed.blocks if b.kind == "heading"]
    assert headings == ["Otters Care Guide", "Feeding", "Enclosure"]
    assert parsed.title == "Otters Care Guide"


def test_a_page_nested_past_the_parsers_limit_fails_rather_than_losing_text():
    page = (
        b"<html><body><article><p>Intro.</p>" + b"<div>" * 300 + b"<p>Deep.</p>"
        + b"</div>" * 300 + b"<p>After.</p></article></body></html>"
    )  # fmt: skip
    with pytest.raises(ParseError, match="nested deeper than 256 elements"):
        parse("text/html", page, "x", Limits(10, 10**6), source_url="https://example.org/deep")


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/redirect/metadata", "169.254.169.254 is a cloud metadata address"),
        ("/redirect/localhost", "localhost resolves to"),
        ("/redirect/private", "10.0.0.5 is a private network address"),
        ("/redirect/ftp", "only http:// and https://"),
        ("/redirect/loop", "more than 5 redirects"),
        ("/huge", "too large: the server sent more than 10.0 MB; the limit is 10 MB"),
        ("/huge?declared=1", "too large: the server declares 50.0 MB; the limit is 10 MB"),
        ("/gone", "answered 404 Not Found"),
        ("/private/secret", "refused by the site's robots.txt"),
        ("/slow", "did not answer within 8 s (FETCH_TIMEOUT_S)"),
        ("/silent", "did not answer within 8 s (FETCH_TIMEOUT_S)"),
    ],
)
def test_fetches_are_refused_with_the_reason(site: str, fetcher: Fetcher, path: str, says: str):
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetcher.get(site + path)
    assert says in str(err.value)
    assert time.monotonic() - started < 15  # FETCH_TIMEOUT_S is 8 in the tests


def test_a_redirect_within_the_site_is_followed(site: str, fetcher: Fetcher):
    assert fetcher.get(f"{site}/redirect/fine").url == f"{site}/wiki/otters"


# -- through the API, the worker and the CLI -------------------------------------------------


def add(client: TestClient, collection: str, *urls: str, status: int = 201) -> list[dict]:
    response = client.post(
        "/api/documents/urls", json={"urls": list(urls), "collection": collection}
    )
    assert response.status_code == status, response.text
    return response.json()["documents"]


def search(client: TestClient, collection: str, query: str) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        found = client.get(
            "/api/search", params={"q": query, "collection": collection, "mode": "bm25"}
        ).json()["results"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.mark.slow
def test_a_page_is_indexed_without_chrome_and_cited_by_its_url(client: TestClient, site: str):
    collection = new_collection()
    (doc,) = add(client, collection, f"{site}/wiki/otters")
    assert doc["status"] == "queued" and doc["source_url"] == f"{site}/wiki/otters"
    doc = wait_settled(client, [doc["id"]])[doc["id"]]
    assert doc["status"] == "indexed", doc["error"]
    assert doc["title"] == "Otters Care Guide" and doc["content_type"] == "text/html"
    (hit, *_) = search(client, collection, "trout ration feeding book")
    assert hit["document_id"] == doc["id"] and hit["url"] == f"{site}/wiki/otters"
    assert "Feeding" in hit["heading_path"]
    for chrome in ("cookie consent banner", "gift shop", "copyright example zoo"):
        assert not search(client, collection, chrome), chrome
    page = client.get("/documents", params={"collection": collection}).text
    assert f'href="{site}/wiki/otters"' in page


@pytest.mark.slow
def test_re_ingesting_a_url_keeps_unchanged_content_and_replaces_changed(
    client: TestClient, site: str
):
    collection = new_collection()
    url = f"{site}/wiki/beavers"
    (first,) = add(client, collection, url)
    wait_settled(client, [first["id"]])
    (again,) = add(client, collection, url)
    again = wait_settled(client, [again["id"]])[again["id"]]
    assert again["status"] == "indexed" and "unchanged" in again["notes"]
    assert client.get(f"/api/documents/{first['id']}").status_code == 404  # taken over
    (hit, *_) = search(client, collection, "trout ration")
    assert hit["document_id"] == again["id"]

    SITE.version = 2
    try:
        (changed,) = add(client, collection, url)
        changed = wait_settled(client, [changed["id"]])[changed["id"]]
    finally:
        SITE.version = 1
    assert changed["status"] == "indexed" and not changed["notes"]
    assert client.get(f"/api/documents/{again['id']}").status_code == 404  # replaced
    listed = client.get("/api/documents", params={"collection": collection}).json()
    assert [d["id"] for d in listed["documents"]] == [changed["id"]]
    (hit, *_) = search(client, collection, "version 2 feeding book")
    assert hit["document_id"] == changed["id"] and "version 2" in hit["text"]


@pytest.mark.slow
def test_a_sitemap_brings_its_pages_from_its_own_host(
    settings: Settings, worker: WorkerProcess, site: str
):
    collection = new_collection()
    result = groundwork(
        "ingest", f"{site}/sitemap.xml", "--collection", collection, "--wait", "--json"
    )
    out = json.loads(result.stdout)["documents"]
    by_url = {f"http://{d['filename']}": d for d in out}  # a page's name is its URL
    sitemap = by_url[f"{site}/sitemap.xml"]
    assert sitemap["status"] == "indexed" and sitemap["chunks"] == 0
    for topic in ("otters", "beavers", "herons"):
        assert by_url[f"{site}/wiki/{topic}"]["status"] == "indexed", by_url
    private = by_url[f"{site}/private/secret"]
    assert private["status"] == "failed" and "robots.txt" in private["error"]
    assert not any("elsewhere.example" in d["filename"] for d in out)
    assert result.returncode == 1  # one page failed (robots.txt), and says so


@pytest.mark.slow
def test_refused_urls_fail_or_are_rejected_with_the_reason(client: TestClient, site: str):
    collection = new_collection()
    rejected = add(
        client,
        collection,
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8000/admin",
        "file:///etc/passwd",
        status=422,
    )
    reasons = [d["error"] for d in rejected]
    assert [d["status"] for d in rejected] == ["rejected"] * 3
    assert "169.254.169.254 is a cloud metadata address" in reasons[0]
    assert "localhost is a loopback address" in reasons[1]
    assert "only http:// and https://" in reasons[2]
    docs = add(
        client,
        collection,
        f"{site}/redirect/metadata",
        f"{site}/huge",
        f"{site}/image.png",
        f"{site}/disguised",
        f"{site}/gone",
    )
    settled = wait_settled(client, [d["id"] for d in docs], timeout=120)
    errors = [settled[d["id"]]["error"] for d in docs]
    assert all(settled[d["id"]]["status"] == "failed" for d in docs), errors
    assert "169.254.169.254 is a cloud metadata address" in errors[0]
    assert "too large" in errors[1] and "FETCH_MAX_MB" in errors[1]
    assert "not HTML" in errors[2] and "image/png" in errors[2]
    assert "not HTML" in errors[3]
    assert "404" in errors[4]


def test_hostile_api_bodies_answer_4xx(client: TestClient):
    for body in (
        {"urls": []},
        {"urls": ["http://example.org/"] * 101},
        {"urls": "http://example.org/"},
        {"urls": ["http://example.org/" + "a" * 5000]},
        {"urls": ["http://example.org/\x00"]},
        {"urls": [None]},
    ):
        response = client.post("/api/documents/urls", json=body)
        assert 400 <= response.status_code < 500, (body, response.status_code)


def test_the_documents_page_field_adds_a_page_or_says_why_not(client: TestClient, site: str):
    collection = new_collection()
    page = client.get("/documents", params={"collection": collection}).text
    assert 'hx-post="/documents/urls"' in page and 'name="url"' in page
    refused = client.post(
        "/documents/urls",
        data={"url": "http://[::ffff:169.254.169.254]/", "collection": collection},
    )
    assert refused.status_code == 200 and 'data-status="rejected"' in refused.text
    assert "cloud metadata address" in refused.text
    added = client.post(
        "/documents/urls", data={"url": f"{site}/wiki/herons", "collection": collection}
    )
    assert added.status_code == 200 and f'href="{site}/wiki/herons"' in added.text
    too_long = client.post("/documents/urls", data={"url": "http://x/" + "a" * 3000})
    assert too_long.status_code == 422
