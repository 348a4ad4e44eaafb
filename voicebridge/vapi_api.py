"""Vapi REST client (``POST /assistant``, ``POST /call``) shared by the control plane and the edge.

Vapi rate-limits (429, 10 concurrent calls per org by default) and has transient 5xx: those and
connection failures are retried with exponential backoff and full jitter, honouring
``Retry-After``, but never past the caller's time budget (an inbound call cannot wait long).
Other 4xx are the caller's mistake and raised at once with Vapi's own message.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx

MAX_DETAIL_CHARS = 300
_clock = time.monotonic  # the budget's clock (tests substitute a fake one)
_BASE_DELAY_S = 0.2
_MAX_DELAY_S = 2.0


class VapiApiError(Exception):
    """Vapi refused or could not be reached; ``status`` is None when no HTTP answer arrived."""

    def __init__(self, status: int | None, detail: str) -> None:
        self.status = status
        self.detail = detail[:MAX_DETAIL_CHARS]
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
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


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
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            error = VapiApiError(None, f"{type(exc).__name__} calling Vapi")
        else:
            if response.status_code < 300:
                try:
                    data = response.json()
                except ValueError:
                    raise VapiApiError(response.status_code, "response is not JSON") from None
                if not isinstance(data, dict):
                    raise VapiApiError(response.status_code, "response is not a JSON object")
                return data
            error = VapiApiError(response.status_code, _detail(response))
            if response.status_code != 429 and response.status_code < 500:
                raise error
            hint = _retry_after(response)
        attempt += 1
        delay = hint if hint is not None else random.uniform(0, _backoff(attempt))
        if _clock() + delay >= deadline:
            raise error
        await asyncio.sleep(delay)


def _backoff(attempt: int) -> float:
    return min(_MAX_DELAY_S, _BASE_DELAY_S * 2 ** (attempt - 1))


async def create_assistant(
    client: httpx.AsyncClient, base_url: str, api_key: str, body: dict, *, budget_s: float
) -> dict:
    """``POST /assistant`` (CreateAssistantDTO) -> the created assistant (has ``id``)."""
    return await _post(client, f"{base_url.rstrip('/')}/assistant", api_key, body, budget_s)


async def create_call(
    client: httpx.AsyncClient, base_url: str, api_key: str, body: dict, *, budget_s: float
) -> dict:
    """``POST /call`` (CreateCallDTO) -> the call (``id``, ``transport.websocketCallUrl``)."""
    return await _post(client, f"{base_url.rstrip('/')}/call", api_key, body, budget_s)
