"""Request ids, the access log and Prometheus metrics, as one outermost ASGI layer.

It wraps the whole application (routing included) so that 404 and 405 answers carry a request id and
are counted too. Metrics are labelled by the route template, never by the raw path, so that ids in
paths do not explode the number of series.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import secrets
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.logs import request_id_var

access_log = logging.getLogger("ihanoi.access")

_REQUEST_ID_OK = re.compile(r"^[\w.:-]{1,128}$")
# A random prefix per process and a counter: unique across processes, and far cheaper per request
# than a uuid4 (one getrandom system call each).
_PROCESS_PREFIX = secrets.token_hex(6)
_SEQUENCE = itertools.count(1)


def new_request_id() -> str:
    return f"{_PROCESS_PREFIX}{next(_SEQUENCE):08x}"

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route and status", ["method", "route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
POOL_IN_USE = Gauge(
    "db_pool_connections_in_use", "asyncpg connections checked out", registry=REGISTRY, multiprocess_mode="livesum"
)
POOL_SIZE = Gauge(
    "db_pool_connections", "asyncpg connections open", registry=REGISTRY, multiprocess_mode="livesum"
)


def update_pool_gauges(pool: Any) -> None:
    if pool is None:
        return
    size = pool.get_size()
    POOL_SIZE.set(size)
    POOL_IN_USE.set(size - pool.get_idle_size())


async def sample_pool_gauges(get_pool: Any, every: float = 1.0) -> None:
    """Keep the pool gauges current in every process (a scrape reaches only one of them)."""
    while True:
        update_pool_gauges(get_pool())
        await asyncio.sleep(every)


def render_metrics() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class ObserveMiddleware:
    """Outermost layer: request id in and out, one access-log line and the metrics per request.

    It runs for every request, so it does as little as it can: the labelled children of the two metrics are
    looked up once per (method, route, status) and kept, and the access-log line is built only when INFO is on.
    """

    def __init__(self, app: Any, *, quiet_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.quiet_paths = quiet_paths
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    def _observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        counted = self._counted.get((method, route, status))
        if counted is None:  # the set of routes is bounded (templates, "unmatched"), so is this dict
            counted = self._counted[(method, route, status)] = REQUESTS.labels(method, route, str(status))
        timed = self._timed.get((method, route))
        if timed is None:
            timed = self._timed[(method, route)] = LATENCY.labels(method, route)
        counted.inc()
        timed.observe(elapsed)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _REQUEST_ID_OK.match(incoming) else new_request_id()
        token = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]  # a copy: a cached answer's list
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope.get("method", "GET")
            self._observe(method, route, status, elapsed)
            if (status >= 400 or route not in self.quiet_paths) and access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %s",
                    method,
                    route,
                    status,
                    extra={"method": method, "route": route, "status": status, "ms": round(elapsed * 1000, 2)},
                )
            request_id_var.reset(token)
