"""Prometheus metrics: HTTP request counts and latency, plus helpers for service metrics."""

from __future__ import annotations

import time
import uuid

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rescind_common.logs import request_id_var

HTTP_REQUESTS = Counter(
    "rescind_http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "rescind_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_PUBLISHED = Counter(
    "rescind_outbox_published_total", "Outbox events published to Kafka", ["service", "topic"]
)
OUTBOX_REPLAYED = Counter(
    "rescind_outbox_replayed_total", "Outbox events re-published after the broker lost its log", ["service"]
)
OUTBOX_PUBLISH_ERRORS = Counter(
    "rescind_outbox_publish_errors_total", "Failed attempts to publish outbox events", ["service"]
)
OUTBOX_BACKLOG = Gauge(
    "rescind_outbox_backlog", "Outbox events committed but not yet published to Kafka", ["service"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "rescind_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest unpublished outbox event (0 when the outbox is drained)",
    ["service"],
)


class ObserveMiddleware:
    """Request ids and HTTP metrics as plain ASGI (BaseHTTPMiddleware adds a task per request)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                rid = value.decode("latin-1")[:64]
                break
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            request_id_var.reset(token)
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(self.service, method, path, str(status)).inc()
            HTTP_LATENCY.labels(self.service, method, path).observe(time.perf_counter() - start)


def install_metrics(app: FastAPI, service: str) -> None:
    app.add_middleware(ObserveMiddleware, service=service)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
