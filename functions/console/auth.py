"""Who may use the console: the admin key, exchanged once for a short-lived signed session.

``POST /console/login`` checks the key (constant time) and sets one cookie, ``vb_console`` =
``{sessionId}.{expiry}.{HMAC}``: HttpOnly (page scripts never see it), SameSite=Strict (no other
site's page sends it), Secure over https, Path=/. The HMAC key is derived from
``ADMIN_API_KEY``, so rotating the key ends every session. A session is also an item in the
sessions table (``CONSOLE#{sha256(id)}``, TTL): logout deletes it, which revokes the cookie
everywhere at once, and every request checks it is still there.

Mutations made with the cookie also need ``X-CSRF-Token`` (an HMAC of the session id the page
gets from ``GET /console/session``, compared in constant time): SameSite=Strict already keeps
other sites' requests cookie-less, the token is the second lock. The admin key itself keeps
working as ``Authorization: Bearer`` for the CLI and scripts; neither it nor a session token
is ever written to a log or put in a URL.

Wrong keys are counted (``AuthFailures``), slowed (a fixed delay) and limited per source
address: ``MAX_FAILURES`` a minute, then 429 until the minute is over.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from functions import web
from voicebridge.config import Settings

COOKIE = "vb_console"
CSRF_HEADER = "x-csrf-token"
MAX_FAILURES = 10  # wrong keys per source address per minute
FAILURE_DELAY_S = 0.4  # every wrong key costs the guesser this long
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Operator:
    """Whoever is acting: a console session (``session`` is its id) or the admin key (CLI)."""

    config: Settings
    session: str | None
    expires_at: int = 0

    @property
    def who(self) -> str:
        """What the call record says did it: never the session id itself."""
        if self.session is None:
            return "admin-api-key"
        return f"console:{hashlib.sha256(self.session.encode()).hexdigest()[:8]}"


def _key(config: Settings, purpose: bytes) -> bytes:
    return hmac.new((config.admin_api_key or "").encode(), purpose, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _mac(config: Settings, text: str) -> str:
    return _b64(
        hmac.new(_key(config, b"voicebridge console session v1"), text.encode(), "sha256").digest()
    )


def csrf_token(config: Settings, session: str) -> str:
    return _b64(
        hmac.new(_key(config, b"voicebridge console csrf v1"), session.encode(), "sha256").digest()
    )


def mint(config: Settings, now: float) -> tuple[str, str, int]:
    """(session id, cookie value, expiry): a new session's credentials."""
    session = secrets.token_urlsafe(32)
    expires_at = int(now) + config.console_session_minutes * 60
    body = f"{session}.{expires_at}"
    return session, f"{body}.{_mac(config, body)}", expires_at


def verify(config: Settings, cookie: str, now: float) -> tuple[str, int] | None:
    """(session id, expiry) if the cookie is ours, untampered and unexpired; else None."""
    session, _, rest = cookie.partition(".")
    expiry, _, mac = rest.partition(".")
    if not (session and expiry.isdigit() and mac) or len(cookie) > 200:
        return None
    if not hmac.compare_digest(mac.encode(), _mac(config, f"{session}.{expiry}").encode()):
        return None
    if int(expiry) <= now:
        return None
    return session, int(expiry)


def _session_key(session: str) -> dict[str, Any]:
    digest = hashlib.sha256(session.encode()).hexdigest()
    return {"pk": {"S": f"CONSOLE#{digest}"}, "sk": {"S": "SESSION"}}


def store_session(config: Settings, session: str, expires_at: int) -> None:
    item = {**_session_key(session), "expires_at": {"N": str(expires_at)}}
    web.store(config).client.put_item(TableName=config.sessions_table, Item=item)


def session_alive(config: Settings, session: str, now: float) -> bool:
    """Not logged out (the item is there) and not expired (TTL deletes lazily)."""
    item = (
        web.store(config)
        .client.get_item(TableName=config.sessions_table, Key=_session_key(session))
        .get("Item")
    )
    return bool(item) and int(item["expires_at"]["N"]) > now


def end_session(config: Settings, session: str) -> None:
    web.store(config).client.delete_item(TableName=config.sessions_table, Key=_session_key(session))


def source_address(request: Request) -> str:
    """The caller's address as API Gateway saw it (never X-Forwarded-For: anyone can write it)."""
    event = request.scope.get("aws.event") or {}
    address = event.get("requestContext", {}).get("http", {}).get("sourceIp")
    if not address and request.client is not None:
        address = request.client.host
    return str(address or "unknown")[:64]


def _failure_key(address: str, now: float) -> dict[str, Any]:
    minute = int(now // 60)
    return {"pk": {"S": f"LOGINFAIL#{address}#{minute}"}, "sk": {"S": "COUNT"}}


def too_many_failures(config: Settings, address: str, now: float) -> bool:
    item = (
        web.store(config)
        .client.get_item(TableName=config.sessions_table, Key=_failure_key(address, now))
        .get("Item")
    )
    return bool(item) and int(item["failures"]["N"]) >= MAX_FAILURES


async def count_failure(config: Settings, address: str, now: float) -> None:
    """Count a wrong key for this address and minute (TTL cleans up), then make it wait."""
    web.count_auth_failure("/console/login", "wrong admin key")
    try:
        web.store(config).client.update_item(
            TableName=config.sessions_table,
            Key=_failure_key(address, now),
            UpdateExpression="ADD failures :one SET expires_at = :exp",
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":exp": {"N": str(int(now) + 120)},
            },
        )
    except Exception:  # the limit is a brake, not a gate: a write failure must not lock out
        web.logger.exception("login failure not counted")
    await asyncio.sleep(FAILURE_DELAY_S)


def key_matches(config: Settings, key: str) -> bool:
    expected = (config.admin_api_key or "").encode()
    return bool(expected) and hmac.compare_digest(key.encode(), expected)


def operator(request: Request) -> Operator:
    """The admin key (Bearer) or a live console session (cookie, plus the CSRF header for a
    mutation); 401 otherwise, 403 for a missing or wrong CSRF token."""
    config = web.settings()
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer":
        if key_matches(config, token.strip()):
            return Operator(config, None)
        web.count_auth_failure(request.url.path, "admin key")
        raise HTTPException(401, "admin API key required", {"WWW-Authenticate": "Bearer"})
    cookie = request.cookies.get(COOKIE)
    now = time.time()
    verified = verify(config, cookie, now) if cookie else None
    if verified is None or not session_alive(config, verified[0], now):
        web.count_auth_failure(request.url.path, "console session" if cookie else "no credentials")
        raise HTTPException(
            401,
            "admin API key required (or sign in to the console)",
            {"WWW-Authenticate": "Bearer"},
        )
    session, expires_at = verified
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER) or ""
        if not hmac.compare_digest(sent.encode(), csrf_token(config, session).encode()):
            web.count_auth_failure(request.url.path, "csrf token")
            raise HTTPException(403, "missing or wrong X-CSRF-Token")
    return Operator(config, session, expires_at)


Authorized = Annotated[Operator, Depends(operator)]
