"""What every route shares: settings, storage/queue handles, bounded bodies, the public URL,
the time budget of a webhook's AWS work, and the ASGI middleware that times each request into
``WebhookLatency`` and flushes EMF.

A webhook's AWS work (binding read, session write, queueing) runs under one
``WEBHOOK_DEADLINE_S`` deadline (``functions.aws``), plus ``outbox.FALLBACK_DEADLINE_S`` when an
event must go to its fallback: at most ~4.5 s, inside every caller's patience. Twilio waits 15 s
for a webhook's answer (connect 5 s, retried once; read 15 s; 15 s in all: "Connection
Overrides", https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides); Vapi
waits 7.5 s for an assistant-request and ``server.timeoutSeconds`` (20 s, as admin.py sets it)
for the rest; the API function's timeout (template.yaml) is 10 s.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions import aws
from functions.events import Envelope, EventQueue, get_queue
from functions.observability import MetricUnit, call_context, elapsed_ms, logger_for, metrics_for
from functions.outbox import NotAccepted, Outbox, Route, spool_for
from functions.storage import Store, get_store
from voicebridge import telemetry
from voicebridge.config import Settings, get_settings
from voicebridge.identifiers import is_e164

MAX_BODY_BYTES = 1024 * 1024
WEBHOOK_DEADLINE_S = 3.0
BINDING_DEADLINE_S = 1.5  # its share: the session write or the enqueue after it gets the rest

logger = logger_for(telemetry.SERVICE_API)
metrics = metrics_for(telemetry.SERVICE_API)


def settings() -> Settings:
    """API settings (cached; raises ConfigError naming the variable when config is wrong)."""
    return get_settings("api")


def store(config: Settings) -> Store:
    return get_store(config.sessions_table or "", config.aws_endpoint_url)


def queue(config: Settings) -> EventQueue:
    return get_queue(config.events_queue_url or "", config.aws_endpoint_url)


def outbox(config: Settings) -> Outbox:
    """SQS, then the fallbacks ``functions.outbox`` describes."""
    return Outbox(
        queue(config), spool_for(config), config.worker_function_name, config.aws_endpoint_url
    )


def deadline() -> aws.Deadline:
    """The deadline for one webhook's AWS work, starting now."""
    return aws.Deadline.after(WEBHOOK_DEADLINE_S)


async def assistant_for(config: Settings, number: str | None, until: aws.Deadline) -> str | None:
    """The assistant bound to ``number``, else ``VAPI_ASSISTANT_ID``.

    Stale-while-error: when the binding cannot be read in time, the last value this process
    read for the number is served (a call answered by its own assistant, even during an
    outage); only a number never seen here falls back to the default assistant.
    """
    if number and is_e164(number):
        bindings = store(config)
        known, bound = bindings.cached_binding(number)
        if not known:
            try:
                bound = await aws.call(
                    until.within(BINDING_DEADLINE_S),
                    bindings.dependency,
                    bindings.get_binding,
                    number,
                )
            except Exception as exc:
                known, bound = bindings.cached_binding(number, stale=True)
                reason = {"error": type(exc).__name__}
                if known:
                    metrics.add_metric(
                        name=telemetry.STALE_BINDINGS, unit=MetricUnit.Count, value=1
                    )
                    logger.warning(
                        "binding lookup failed; serving the last known one", extra=reason
                    )
                else:
                    logger.error("binding lookup failed; using the default assistant", extra=reason)
        if bound:
            return bound
    return config.vapi_assistant_id


async def enqueue(config: Settings, envelope: Envelope, until: aws.Deadline) -> bool:
    """Hand ``envelope`` to the worker: SQS, else a durable fallback (``functions.outbox``).
    False only when nothing would take it (the route answers 503 then: not accepted)."""
    try:
        route = await outbox(config).put(envelope, until)
    except NotAccepted:
        logger.exception("event not accepted: SQS and every fallback failed")
        return False
    if route is Route.QUEUED:
        metrics.add_metric(name=telemetry.EVENTS_ENQUEUED, unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name=telemetry.EVENTS_DEFERRED, unit=MetricUnit.Count, value=1)
        logger.warning("SQS did not take the event; kept for replay", extra={"route": route.value})
    return True


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
