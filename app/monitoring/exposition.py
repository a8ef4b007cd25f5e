"""GET /metrics (Prometheus text format) and the timing of every HTTP request.

/metrics adds up what every process recorded (`app.monitoring.metrics`, files under
DATA_DIR/metrics) and reads two gauges at scrape time: the work waiting (tasks in the broker's
queue, jobs in the outbox not sent yet) and the documents in each status. It answers a request
from loopback (127.0.0.1, ::1) that did not come through a proxy without a token; any other
needs `Authorization: Bearer <METRICS_TOKEN>`, and with no METRICS_TOKEN set it is refused
(403)."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Metric, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.db import session_scope
from app.documents.service import documents_by_status
from app.errors import Forbidden
from app.jobs import queue_depth, unsent_due
from app.models import DocumentStatus
from app.monitoring.files import locked
from app.monitoring.metrics import record_request
from app.web.deps import SettingsDep, bearer

log = logging.getLogger(__name__)
router = APIRouter(tags=["monitoring"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A request that names a client it was forwarded for came through a proxy: it is not local,
# whatever address the proxy connected from.
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
GAUGES = ("groundwork_queue_depth", "groundwork_documents")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"},
        403: {"description": "not from loopback, and no or a wrong METRICS_TOKEN"},
    },
)
def metrics(request: Request, settings: SettingsDep) -> Response:
    """Every process's metrics in Prometheus text format (loopback, or METRICS_TOKEN)."""
    check_access(request, settings)
    return Response(scrape(settings), media_type=CONTENT_TYPE)


def check_access(request: Request, settings: Settings) -> None:
    host = request.client.host if request.client else ""
    proxied = any(name in request.headers for name in PROXY_HEADERS)
    if is_loopback(host) and not proxied:
        return
    token = settings.metrics_token
    if token is None:
        raise Forbidden(
            "/metrics answers loopback only: set METRICS_TOKEN to scrape it from elsewhere",
            code="metrics_forbidden",
        )
    sent = (bearer(request) or "").encode()
    if not hmac.compare_digest(sent, token.get_secret_value().encode()):
        raise Forbidden(
            "/metrics needs Authorization: Bearer <METRICS_TOKEN>", code="metrics_forbidden"
        )


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def scrape(settings: Settings) -> bytes:
    path = settings.metrics_path
    path.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    registry.register(ScrapeTimeGauges(settings))
    with locked(path, exclusive=False):
        return generate_latest(registry)


class ScrapeTimeGauges:
    """Gauges read when scraped, from the broker and the database (each left out while its
    part does not answer, so that /metrics still answers then)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "groundwork_queue_depth",
            "Work waiting: tasks in the broker's queue (celery), jobs not sent to it yet (outbox).",
            labels=["queue"],
        )
        documents = GaugeMetricFamily(
            "groundwork_documents", "Documents in each status.", labels=["status"]
        )
        broker = queue_depth(self.settings)
        if broker is not None:
            depth.add_metric(["celery"], broker)
        try:
            with session_scope(self.settings) as session:
                unsent = unsent_due(session)
                counts = documents_by_status(session)
        except SQLAlchemyError as err:
            log.warning("/metrics: the database did not answer: %s", str(err).splitlines()[0])
        else:
            depth.add_metric(["outbox"], unsent)
            for status in DocumentStatus:
                documents.add_metric([status.value], counts.get(status.value, 0))
        yield depth
        yield documents


class RequestMetrics:
    """Times every HTTP request until its response has been sent, labelled with the route's
    template (`/api/documents/{document_id}`, never the path itself, so ids do not make new
    series); a request no route matched is `unmatched`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path_format", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            record_request(route, method, status, time.perf_counter() - started)
