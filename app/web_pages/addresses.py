"""Which URLs may be fetched: no server-side request forgery.

A URL must be http(s), name a host, carry no user name or password and fit 2,048
characters. Its host is resolved here, and every address it resolves to must be public:
loopback, private, link-local, shared (CGNAT), multicast, reserved and unspecified
addresses are refused, and so are the cloud metadata services, each with its reason. The
fetcher then connects to the address that was checked (never resolving again, so DNS cannot
change its answer in between), and checks each redirect's target the same way. Hosts named
in FETCH_ALLOW_HOSTS (an intranet wiki) are fetched whatever they resolve to."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit, urlunsplit

MAX_URL_CHARS = 2048
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata (credentials live there): AWS, GCP, Azure, OpenStack, DigitalOcean
# at 169.254.169.254 (link-local anyway), AWS's IPv6 one, Alibaba's, Azure's wire server
# and Oracle's; some are public addresses, so they are named.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16", "192.0.0.192")
)
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


class Refused(Exception):
    """This URL may not be fetched; the message is the reason, for a person."""


def check_url(url: str) -> str:
    """The URL, normalised (scheme and host lower-case, no fragment), or `Refused`."""
    url = (url or "").strip()
    if not url:
        raise Refused("the URL is empty")
    if len(url) > MAX_URL_CHARS:
        raise Refused(f"the URL is longer than {MAX_URL_CHARS:,} characters")
    if any(ord(c) < 33 or c == "\x7f" for c in url):
        raise Refused("the URL has spaces or control characters in it")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise Refused(f"not a valid URL ({err})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise Refused(f"only http:// and https:// URLs are fetched, not {parts.scheme or url!r}")
    if not parts.hostname:
        raise Refused("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise Refused("URLs with a user name or password are not fetched")
    if port == 0:
        raise Refused("port 0 is not a port")
    host = parts.hostname.lower().rstrip(".")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def refusal(ip: IP) -> str | None:
    """Why this address may not be fetched from, or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return refusal(ip.ipv4_mapped)
    if ip in METADATA:
        return "a cloud metadata address"
    for test, what in (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "an unspecified address"),
        ("is_reserved", "a reserved address"),
        ("is_private", "a private network address"),
    ):
        if getattr(ip, test):
            return what
    if not ip.is_global:
        return "not a public address"
    return None


def literal_refusal(url: str, allowed: frozenset[str]) -> None:
    """What can be said without DNS (at submission, in the web process): a host that is an
    address, or `localhost`, that may not be fetched."""
    host = host_of(url)
    if host in allowed:
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise Refused(f"refused: {host} is a loopback address")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    reason = refusal(ip)
    if reason:
        raise Refused(f"refused: {host} is {reason}")


def resolve(parts: SplitResult, allowed: frozenset[str], timeout: float) -> IP:
    """The address to connect to for this URL: every address its host resolves to must be
    public (or the host allowed). DNS that does not answer within `timeout` is a refusal."""
    host = (parts.hostname or "").lower().rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=max(timeout, 0.1))
    except concurrent.futures.TimeoutError:
        raise Refused(f"{host} did not resolve within {timeout:.0f} s") from None
    except (OSError, UnicodeError) as err:
        raise Refused(f"{host} does not resolve ({err})") from None
    addresses = list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    )
    if not addresses:
        raise Refused(f"{host} does not resolve")
    if host not in allowed:
        for ip in addresses:
            reason = refusal(ip)
            if reason:
                named = host if host == str(ip) else f"{host} resolves to {ip}, which"
                raise Refused(f"refused: {named} is {reason} (FETCH_ALLOW_HOSTS allows one)")
    return addresses[0]
