"""Vapi REST client (``POST /assistant``, ``POST /call``) shared by the control plane and the edge.

Neither POST is idempotent: Vapi takes no idempotency key, so a request that reached Vapi and
then failed on our side (a read or write timeout, a dropped connection, a 5xx after the work
was done) may have created the call, and sending it again would start a second call, billed,
talking to nobody (or a second assistant, orphaned). So a request is retried only when it
provably did not reach Vapi, or Vapi provably refused it:

- ``httpx.ConnectError``, ``httpx.ConnectTimeout``: no connection was made, nothing was sent;
- ``httpx.PoolTimeout``: no connection was free, nothing was sent;
- HTTP 429: Vapi refused (rate or concurrency limit); ``Retry-After`` is honoured.

(httpx's hierarchy, https://www.python-httpx.org/exceptions: ``ReadTimeout``, ``WriteTimeout``,
``ReadError``, ``WriteError`` and ``RemoteProtocolError`` can all happen after the request left.)
Retries use exponential backoff with full jitter and never outlast the caller's budget (an
inbound call cannot wait long). Everything else is raised at once: other 4xx with Vapi's own
message; 5xx and mid-request failures marked ``maybe_created``.
"""

from __future__ import annotations

import asyncio
import random
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

MAX_DETAIL_CHARS = 300
_clock = time.monotonic  # the budget's clock (tests substitute a fake one)
_wall = time.time  # for Retry-After dates
_BASE_DELAY_S = 0.2
_MAX_DELAY_S = 2.0


# Raised before the request left this process: safe to send again.
NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


class VapiApiError(Exception):
    """Vapi refused or could not be reached; ``status`` is None when no HTTP answer arrived.
    ``maybe_created``: the request may have reached Vapi, so the resource may exist."""

    def __init__(self, status: int | None, detail: str, *, maybe_created: bool = False) -> None:
        self.status = status
        self.detail = detail[:MAX_DETAIL_CHARS]
        self.maybe_created = maybe_created
        super().__init__(f"Vapi {status or 'unreachable'}: {self.detail}")


def _detail(response: httpx.Response) -> str:
    """Vapi's error message (``message`` may be a string or a list of validation messages)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:MAX_DETAIL_CHARS] or response.reason_phrase
    if isinstance(body, dict):
        message = body.get("message") or body.get("error") or body
        if isinstance(message, list):
            message = "; ".join(str(item) for item in message)
        return str(message)[:MAX_DETAIL_CHARS]
    return str(body)[:MAX_DETAIL_CHARS]


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from ``Retry-After`` (delay-seconds or an HTTP-date, RFC 9110 10.2.3)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff
    return max(0.0, when.timestamp() - _wall())


async def _post(
    client: httpx.AsyncClient, url: str, api_key: str, body: dict[str, Any], budget_s: float
) -> dict[str, Any]:
    deadline = _clock() + budget_s
    headers = {"Authorization": f"Bearer {api_key}"}
    attempt = 0
    while True:
        remaining = deadline - _clock()
        if remaining <= 0:
            raise VapiApiError(None, "time budget exhausted before Vapi answered")
        hint: float | None = None
        try:
            response = await client.post(url, json=body, headers=headers, timeout=remaining)
        except NOT_SENT as exc:
            error = VapiApiError(None, f"{type(exc).__name__} calling Vapi")
        except httpx.TransportError as exc:  # the request may have reached Vapi: never resend
            raise VapiApiError(
                None,
                f"{type(exc).__name__} calling Vapi (not retried: it may have been created)",
                maybe_created=True,
            ) from None
        else:
            if response.status_code < 300:
                try:
                    data = response.json()
                except ValueError:
                    raise VapiApiError(response.status_code, "response is not JSON") from None
                if not isinstance(data, dict):
                    raise VapiApiError(response.status_code, "response is not a JSON object")
                return data
            if response.status_code >= 500:  # Vapi may have done the work before failing
                raise VapiApiError(
                    response.status_code, _detail(response), maybe_created=True
                ) from None
            error = VapiApiError(response.status_code, _detail(response))
            if response.status_code != 429:
                raise error
            hint = _retry_after(response)
        attempt += 1
        delay = hint if hint is not None else random.uniform(0, _backoff(attempt))
        if _clock() + delay >= deadline:
            raise error
        await asyncio.sleep(delay)


def _backoff(attempt: int) -> float:
    return min(_MAX_DELAY_S, _BASE_DELAY_S * 2.0 ** (attempt - 1))


async def create_assistant(
    client: httpx.AsyncClient, base_url: str, api_key: str, body: dict[str, Any], *, budget_s: float
) -> dict[str, Any]:
    """``POST /assistant`` (CreateAssistantDTO) -> the created assistant (has ``id``)."""
    return await _post(client, f"{base_url.rstrip('/')}/assistant", api_key, body, budget_s)


async def create_call(
    client: httpx.AsyncClient, base_url: str, api_key: str, body: dict[str, Any], *, budget_s: float
) -> dict[str, Any]:
    """``POST /call`` (CreateCallDTO) -> the call (``id``, ``transport.websocketCallUrl``)."""
    return await _post(client, f"{base_url.rstrip('/')}/call", api_key, body, budget_s)
