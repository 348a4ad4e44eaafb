"""What every route shares: settings, storage/queue handles, bounded bodies, the public URL,
and the ASGI middleware that times each request into ``WebhookLatency`` and flushes EMF."""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.events import EventQueue, get_queue
from functions.observability import MetricUnit, call_context, elapsed_ms, logger_for, metrics_for
from functions.storage import Store, get_store
from voicebridge import telemetry
from voicebridge.config import Settings, get_settings

MAX_BODY_BYTES = 1024 * 1024

logger = logger_for(telemetry.SERVICE_API)
metrics = metrics_for(telemetry.SERVICE_API)


def settings() -> Settings:
    """API settings (cached; raises ConfigError naming the variable when config is wrong)."""
    return get_settings("api")


def store(config: Settings) -> Store:
    return get_store(config.sessions_table or "", config.aws_endpoint_url)


def queue(config: Settings) -> EventQueue:
    return get_queue(config.events_queue_url or "", config.aws_endpoint_url)


def count_auth_failure(route: str, reason: str) -> None:
    metrics.add_metric(name=telemetry.AUTH_FAILURES, unit=MetricUnit.Count, value=1)
    logger.warning("request rejected", extra={"route": route, "reason": reason})


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, or 413 when the declared or the actual size exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(413, "request body too large (limit 1 MiB)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, "request body too large (limit 1 MiB)")
        chunks.append(chunk)
    return b"".join(chunks)


def public_url(request: Request, config: Settings, path: str | None = None) -> str:
    """The URL the caller (Twilio) used for this request, or for ``path`` on the same API.

    ``PUBLIC_BASE_URL`` wins (custom domains, named stages); else API Gateway's own view
    (``https://{domainName}{rawPath}?{rawQueryString}`` on the ``$default`` stage); else, under
    a plain ASGI server, the request URL itself.
    """
    event: dict[str, Any] | None = request.scope.get("aws.event")
    query = request.url.query
    if event is not None:
        query = event.get("rawQueryString") or ""
    if config.public_base_url:
        base = config.public_base_url + (path or request.url.path)
    elif event is not None:
        domain = event.get("requestContext", {}).get("domainName") or request.url.hostname
        base = f"https://{domain}{path or event.get('rawPath') or request.url.path}"
    else:
        if path is not None:
            return str(request.base_url).rstrip("/") + path
        return str(request.url)
    if path is not None:
        return base
    return f"{base}?{query}" if query else base


class TimingMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead): latency metric, one EMF flush per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with call_context(None):  # the route binds the CallSid once it knows it
            try:
                await self.app(scope, receive, send_with_status)
            finally:
                metrics.add_metric(
                    name=telemetry.WEBHOOK_LATENCY,
                    unit=MetricUnit.Milliseconds,
                    value=elapsed_ms(started),
                )
                metrics.flush_metrics()
                if status >= 500:
                    logger.error(
                        "request failed", extra={"path": scope.get("path"), "status": status}
                    )
