"""Fetching one URL, safely: every hop (redirects, robots.txt) is checked and connected by
the address that was checked (`addresses`), the body is read as a stream and refused past
FETCH_MAX_MB (declared or counted, after decompression), the whole fetch has FETCH_TIMEOUT_S
(a server that trickles a byte a second is cut off too), and the site's robots.txt is
obeyed (RFC 9309: a robots.txt that is missing allows everything; one that cannot be read
for a server error or a time-out allows nothing). Every failure is a `FetchError` whose
message says why, for a person."""

from __future__ import annotations

import time
import urllib.robotparser
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from app.config import Settings
from app.web_pages.addresses import Refused, check_url, resolve

USER_AGENT = "GroundworkBot/0.1 (self-hosted document search)"
ROBOTS_AGENT = "GroundworkBot"
MAX_REDIRECTS = 5
ROBOTS_MAX_BYTES = 512 * 1024  # what RFC 9309 asks crawlers to read at least
REDIRECTS = {301, 302, 303, 307, 308}


class FetchError(Exception):
    """The URL could not be fetched; the message says why (`status`: the server's answer)."""

    def __init__(self, reason: str, status: int | None = None, refused: bool = False):
        super().__init__(reason)
        self.status = status
        self.refused = refused  # an address or URL that may not be fetched


@dataclass
class Page:
    url: str  # where it was found, after redirects
    content_type: str  # the media type the server sent, lower-case, without parameters
    data: bytes


@dataclass
class Fetcher:
    """Fetches for one task: robots.txt is read once per site."""

    settings: Settings
    robots: dict[str, urllib.robotparser.RobotFileParser | None] = field(default_factory=dict)

    def get(self, url: str, *, max_bytes: int | None = None, obey_robots: bool = True) -> Page:
        limit = max_bytes or self.settings.fetch_max_bytes
        deadline = time.monotonic() + self.settings.fetch_timeout_s
        try:
            for _ in range(MAX_REDIRECTS + 1):
                url = check_url(url)
                if obey_robots and not self._robots_allow(url, deadline):
                    raise FetchError(f"refused by the site's robots.txt: {url}")
                status, location, page = self._request(url, deadline, limit)
                if page is not None:
                    return page
                if status in REDIRECTS:
                    if not location:
                        raise FetchError(f"the server answered {status} without a Location")
                    url = urljoin(url, location)
                    continue
                raise FetchError(
                    f"the server answered {status} {_reason(status)} for {url}", status
                )
            raise FetchError(f"more than {MAX_REDIRECTS} redirects")
        except Refused as err:
            raise FetchError(str(err), refused=True) from None

    def _request(self, url: str, deadline: float, limit: int) -> tuple[int, str, Page | None]:
        parts = urlsplit(url)
        left = deadline - time.monotonic()
        ip = resolve(parts, self.settings.fetch_allowed, left)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = f"[{ip}]" if ip.version == 6 else str(ip)
        pinned = urlunsplit((parts.scheme, f"{address}:{port}", parts.path, parts.query, ""))
        headers = {
            "Host": parts.netloc,
            "User-Agent": USER_AGENT,
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.5",
            "Accept-Encoding": "gzip, deflate",
        }
        timeout = httpx.Timeout(max(0.1, min(left, 10.0)))
        try:
            with (
                httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
                client.stream(
                    "GET", pinned, headers=headers, extensions={"sni_hostname": host}
                ) as response,
            ):
                status = response.status_code
                if status != 200:
                    return status, response.headers.get("location", ""), None
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise FetchError(_too_large(int(declared), limit, "declares"))
                body = bytearray()
                for piece in response.iter_bytes():
                    body += piece
                    if len(body) > limit:
                        raise FetchError(_too_large(len(body), limit, "sent more than"))
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("too slow")
                media = response.headers.get("content-type", "").split(";")[0].strip().lower()
                return status, "", Page(url, media, bytes(body))
        except httpx.TimeoutException:
            seconds = self.settings.fetch_timeout_s
            raise FetchError(
                f"{host} did not answer within {seconds:g} s (FETCH_TIMEOUT_S)"
            ) from None
        except httpx.HTTPError as err:
            raise FetchError(f"could not fetch {url} ({type(err).__name__}: {err})") from None

    def _robots_allow(self, url: str, deadline: float) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self.robots:
            self.robots[origin] = self._read_robots(origin + "/robots.txt", deadline)
        rules = self.robots[origin]
        return rules is None or rules.can_fetch(ROBOTS_AGENT, url)

    def _read_robots(self, url: str, deadline: float) -> urllib.robotparser.RobotFileParser | None:
        """The site's rules; None when it has none (allowed). A server error or time-out
        reading it allows nothing."""
        rules = urllib.robotparser.RobotFileParser(url)
        left = max(1.0, deadline - time.monotonic())
        sub = Fetcher(self.settings.model_copy(update={"fetch_timeout_s": left}), self.robots)
        try:
            page = sub.get(url, max_bytes=ROBOTS_MAX_BYTES, obey_robots=False)
        except FetchError as err:
            if err.refused:  # the site itself may not be fetched: say so, not "robots.txt"
                raise
            if err.status is not None and 400 <= err.status < 500:  # none there: no rules
                return None
            setattr(rules, "disallow_all", True)  # noqa: B010 (not in its type stubs)
            return rules
        rules.parse(page.data.decode("utf-8", errors="replace").splitlines())
        return rules


def _too_large(size: int, limit: int, how: str) -> str:
    return (
        f"too large: the server {how} {size / 2**20:.1f} MB; "
        f"the limit is {limit / 2**20:g} MB (FETCH_MAX_MB)"
    )


def _reason(status: int) -> str:
    try:
        from http import HTTPStatus

        return HTTPStatus(status).phrase
    except ValueError:
        return ""
