"""Outbound HTTP client factory (Vapi, Twilio REST). httpx is imported only when a route needs
it; tests replace ``new_http_client`` to point at a fake vendor."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


def new_http_client() -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
