"""The console's HTTP side: the page, sign-in/out, socket tickets, the calls list, step-in.

- ``GET /console`` (and ``/console/static/...``): plain files from ``static/``, no build step,
  no CDN; a Content-Security-Policy allows only our own scripts, styles and sockets.
- ``POST /console/login`` ``{"key"}`` -> the session cookie (``functions.console.auth``);
  ``GET /console/session`` -> ``{"csrf", "expiresAt", "socketUrl"}`` or 401;
  ``POST /console/logout``; ``POST /console/ticket`` -> ``{"ticket", "url"}`` for one socket.
- ``GET /calls?limit=&cursor=&number=&status=`` (admin key or console session): newest first;
  ``cursor`` is opaque and signed, bound to the filters it was made for.
- ``POST /calls/{callSid}/control`` ``{"action", "text"?, "to"?}`` (``functions.console.control``):
  every attempt, done or not, goes into the call record's timeline (what, who, when, outcome).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from functions import web
from functions.console import auth, control
from functions.console.auth import Authorized
from functions.console.live import LiveStore, Sockets
from voicebridge import identifiers
from voicebridge.config import Settings

router = APIRouter()
STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_KEY_CHARS = 512


def _csp(config: Settings) -> str:
    """Only our own files; sockets to the console's gateway; recordings from their bucket."""
    socket = config.console_ws_url or ""
    origin = "/".join(socket.split("/")[:3]) if socket else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {origin}; media-src 'self' https: http://127.0.0.1:*; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ).replace("  ", " ")


def _static(name: str, config: Settings) -> Response:
    path = (STATIC / name).resolve()
    kind = STATIC_TYPES.get(path.suffix)
    if kind is None or path.parent != STATIC or not path.is_file():
        raise HTTPException(404, "not found")
    headers = {
        "Content-Security-Policy": _csp(config),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return FileResponse(path, media_type=kind, headers=headers)


@router.get("/console")
async def page() -> Response:
    return _static("index.html", web.settings())


@router.get("/console/static/{name}")
async def static_file(name: str) -> Response:
    return _static(name, web.settings())


def _secure(request: Request, config: Settings) -> bool:
    return web.public_url(request, config).startswith("https://")


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/console/login")
async def login(request: Request) -> Response:
    config = web.settings()
    now = time.time()
    address = auth.source_address(request)
    if auth.too_many_failures(config, address, now):
        raise HTTPException(429, "too many wrong keys from here: wait a minute and try again")
    try:
        body = json.loads(await web.read_body(request, 4096) or b"null")
    except ValueError:
        body = None
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise HTTPException(400, 'send {"key": "<the admin API key>"}')
    if not auth.key_matches(config, key):
        await auth.count_failure(config, address, now)
        raise HTTPException(401, "that is not the admin key")
    session, cookie, expires_at = auth.mint(config, now)
    auth.store_session(config, session, expires_at)
    web.logger.info("console session started", extra={"expiresAt": expires_at})
    response = JSONResponse(
        {"csrf": auth.csrf_token(config, session), "expiresAt": expires_at}, status_code=200
    )
    response.set_cookie(
        auth.COOKIE,
        cookie,
        max_age=expires_at - int(now),
        path="/",
        httponly=True,
        secure=_secure(request, config),
        samesite="strict",
    )
    return _no_store(response)


@router.get("/console/session")
async def session_info(who: Authorized) -> Response:
    if who.session is None:
        raise HTTPException(400, "the admin key has no console session: sign in on the page")
    body = {
        "csrf": auth.csrf_token(who.config, who.session),
        "expiresAt": who.expires_at,
        "socket": bool(who.config.console_ws_url and who.config.console_connections_table),
    }
    return _no_store(JSONResponse(body))


@router.post("/console/logout")
async def logout(who: Authorized) -> Response:
    config = who.config
    if who.session is not None:
        auth.end_session(config, who.session)
        _close_sockets(config, who.session)
    response = JSONResponse({"signedOut": True})
    response.delete_cookie(auth.COOKIE, path="/", httponly=True, samesite="strict")
    return _no_store(response)


def _live(config: Settings) -> LiveStore:
    if not (config.console_connections_table and config.console_ws_url):
        raise HTTPException(503, "the live feed is not configured (CONSOLE_WS_URL)")
    return LiveStore(config.console_connections_table, None, config.aws_endpoint_url)


def _close_sockets(config: Settings, session: str) -> None:
    """Logout ends the session's sockets too (best effort: they die with the session anyway,
    since the edge skips subscriptions past their session's end)."""
    if not (config.console_connections_table and config.console_ws_management_url):
        return
    from voicebridge.live import session_hash

    try:
        sockets = Sockets(config.console_ws_management_url)
        for connection_id in _live(config).session_sockets(session_hash(session)):
            sockets.close(connection_id)
    except Exception:
        web.logger.exception("could not close the session's sockets")


@router.post("/console/ticket")
async def ticket(who: Authorized) -> Response:
    """A single-use ticket for one socket upgrade, valid seconds: the only credential that
    ever goes in a URL (browsers cannot set headers on a WebSocket upgrade)."""
    if who.session is None:
        raise HTTPException(400, "sockets are for console sessions: sign in on the page")
    store = _live(who.config)
    minted = store.mint_ticket(who.session, who.expires_at, time.time())
    return _no_store(JSONResponse({"ticket": minted, "url": who.config.console_ws_url}))


# -- the calls list ------------------------------------------------------------------------------


def _cursor_key(config: Settings) -> bytes:
    return hmac.new(
        (config.admin_api_key or "").encode(), b"voicebridge calls cursor v1", "sha256"
    ).digest()


def encode_cursor(
    config: Settings, position: tuple[str, dict[str, Any]], filters: list[str]
) -> str:
    payload = json.dumps({"m": position[0], "k": position[1], "f": filters}, separators=(",", ":"))
    mac = hmac.new(_cursor_key(config), payload.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac + payload.encode()).rstrip(b"=").decode()


def decode_cursor(config: Settings, cursor: str, filters: list[str]) -> tuple[str, dict[str, Any]]:
    """The position a cursor names: 400 if it was altered or made for other filters."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        mac, payload = raw[:16], raw[16:]
        expected = hmac.new(_cursor_key(config), payload, hashlib.sha256).digest()[:16]
        if len(cursor) > 2048 or not hmac.compare_digest(mac, expected):
            raise ValueError("signature")
        data = json.loads(payload)
        if data["f"] != filters:
            raise ValueError("filters")
        return str(data["m"]), dict(data["k"])
    except (ValueError, KeyError, TypeError):
        raise HTTPException(400, "cursor is not one this API gave for these filters") from None


def _months(now: float, retention_days: int) -> list[str]:
    """The list's partitions, newest first, back to the oldest a record can still be."""
    months: list[str] = []
    stamp = now
    oldest = now - (retention_days + 31) * 86_400
    while stamp >= oldest:
        month = time.strftime("%Y-%m", time.gmtime(stamp))
        if month not in months:
            months.append(month)
        stamp -= 27 * 86_400
    return months


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise HTTPException(400, f"limit must be a number from 1 to {MAX_LIMIT}")
    return int(raw)


STATUS_FILTERS = frozenset(
    {"live", "ended", "queued", "initiated", "ringing", "in-progress", "completed"}
    | {"busy", "failed", "no-answer", "canceled"}
)


@router.get("/calls")
async def list_calls(request: Request, who: Authorized) -> Response:
    config = who.config
    query = request.query_params
    limit = _limit(query.get("limit"))
    number = query.get("number") or None
    status = query.get("status") or None
    if number is not None and not identifiers.is_e164(number):
        raise HTTPException(400, "number must be E.164, like +14155550123")
    if status is not None and status not in STATUS_FILTERS:
        raise HTTPException(400, f"status must be one of {', '.join(sorted(STATUS_FILTERS))}")
    filters = [number or "", status or ""]
    now = time.time()
    months = _months(now, config.call_record_retention_days)
    start = None
    if query.get("cursor"):
        start = decode_cursor(config, query["cursor"], filters)
        if start[0] not in months:
            raise HTTPException(400, "cursor is older than the call records kept")
    calls, following = web.store(config).list_calls(
        limit=limit, months=months, start=start, number=number, status=status, now=now
    )
    body: dict[str, Any] = {"calls": [_summary(call) for call in calls]}
    body["cursor"] = encode_cursor(config, following, filters) if following else None
    return JSONResponse(body)


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    """A list row: who, when, how it went (the full record is ``GET /calls/{callSid}``)."""
    keep = (
        "from",
        "to",
        "direction",
        "assistant_id",
        "call_status",
        "created_at",
        "ended_at",
        "ended_reason",
        "duration_seconds",
    )
    row = {key: record[key] for key in keep if key in record}
    row["callSid"] = record.get("call_sid")
    row["live"] = record.get("call_status") in ("queued", "initiated", "ringing", "in-progress")
    return row


# -- step in ---------------------------------------------------------------------------------------


@router.post("/calls/{call_sid}/control")
async def step_in(request: Request, who: Authorized) -> Response:
    config = who.config
    call_sid = request.path_params["call_sid"]
    if not identifiers.is_call_sid(call_sid):
        raise HTTPException(404, "no such call")
    try:
        body = json.loads(await web.read_body(request, 16_384) or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("action") not in control.ACTIONS:
        raise HTTPException(400, f"action must be one of {', '.join(control.ACTIONS)}")
    action = str(body["action"])
    text = body.get("text") if action in ("say", "add-context") else ""
    if not isinstance(text, str) or (action in ("say", "add-context") and not text.strip()):
        raise HTTPException(400, f"{action} needs some text")
    if len(text) > control.MAX_TEXT_CHARS:
        raise HTTPException(400, f"text is limited to {control.MAX_TEXT_CHARS} characters")
    target = str(body.get("to") or "") if action == "transfer" else ""
    if action == "transfer" and not target:
        raise HTTPException(
            400, "transfer needs a destination: a TRANSFER_ALLOWLIST name or number"
        )
    started = time.time()
    outcome = await control.step_in(config, call_sid, action, text, target)
    detail: dict[str, Any] = {"action": action, "by": who.who, "ok": outcome.ok}
    detail["outcome"] = outcome.detail
    if text:
        detail["text"] = text
    if target:
        detail["to"] = target[:40]
    _record(config, call_sid, started, detail)
    web.logger.info("console step-in", extra={"action": action, "ok": outcome.ok, "by": who.who})
    answer = {"ok": outcome.ok, "action": action, "detail": outcome.detail}
    return JSONResponse(answer, status_code=outcome.status if not outcome.ok else 200)


def _record(config: Settings, call_sid: str, at: float, detail: dict[str, Any]) -> None:
    expires_at = int(at) + config.call_record_retention_days * 86_400
    key = f"console:{uuid.uuid4().hex}"
    try:
        web.store(config).put_event(call_sid, key, at, "console.control", detail, expires_at)
    except Exception:
        web.logger.exception("step-in not recorded in the call record")
