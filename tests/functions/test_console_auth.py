"""Console sign-in: the admin key exchanged for a short-lived signed session (cookie), CSRF on
every change, logout revoking it, wrong keys counted and limited, no secret in a log or URL."""

from __future__ import annotations

import json
import os
import time

import pytest

from functions.console import auth
from tests.functions.conftest import ADMIN_KEY, apigw_event, invoke, response_body
from voicebridge.config import load_settings

CALL = "CA" + "7" * 32


def _login(key: str = ADMIN_KEY, source: str = "203.0.113.9") -> dict:
    event = apigw_event(
        "POST",
        "/console/login",
        json.dumps({"key": key}).encode(),
        {"content-type": "application/json"},
    )
    event["requestContext"]["http"]["sourceIp"] = source
    return invoke(event)


def _cookie(result: dict) -> str:
    (header,) = [c for c in result.get("cookies", []) if c.startswith(f"{auth.COOKIE}=")]
    return header.split(";", 1)[0].split("=", 1)[1]


def _get(
    path: str, cookie: str | None = None, query: str = "", headers: dict | None = None
) -> dict:
    extra = dict(headers or {})
    if cookie is not None:
        extra["cookie"] = f"{auth.COOKIE}={cookie}"
    return invoke(apigw_event("GET", path, b"", extra, query=query))


def _post(path: str, body: dict, cookie: str | None, csrf: str | None) -> dict:
    headers = {"content-type": "application/json"}
    if cookie is not None:
        headers["cookie"] = f"{auth.COOKIE}={cookie}"
    if csrf is not None:
        headers["x-csrf-token"] = csrf
    return invoke(apigw_event("POST", path, json.dumps(body).encode(), headers))


@pytest.fixture
def config(aws):
    return load_settings("api")


# -- the session token ---------------------------------------------------------------------------


def _altered(token: str) -> str:
    """The token with its first character changed: a fixed replacement would be a no-op on the
    random tokens that already start with it (1 in 64), and the test would fail by chance."""
    return ("B" if token[0] == "A" else "A") + token[1:]


def test_a_session_token_verifies_until_it_expires_and_not_once_changed(config):
    session, cookie, expires_at = auth.mint(config, 1_000.0)
    assert expires_at == 1_000 + config.console_session_minutes * 60
    assert auth.verify(config, cookie, 1_001.0) == (session, expires_at)
    assert auth.verify(config, cookie, float(expires_at)) is None  # expired
    body, _, mac = cookie.rpartition(".")
    sid, _, expiry = body.partition(".")
    assert auth.verify(config, f"{sid}.{int(expiry) + 3600}.{mac}", 1_001.0) is None  # longer
    assert auth.verify(config, f"{_altered(sid)}.{expiry}.{mac}", 1_001.0) is None  # another id
    assert auth.verify(config, f"{body}.{_altered(mac)}", 1_001.0) is None  # forged MAC
    assert auth.verify(config, "garbage", 1_001.0) is None
    assert ADMIN_KEY not in cookie


def test_rotating_the_admin_key_ends_every_session(config):
    _, cookie, _ = auth.mint(config, time.time())
    rotated = load_settings("api", {**os.environ, "ADMIN_API_KEY": "k" * 32})
    assert auth.verify(rotated, cookie, time.time()) is None


# -- sign in, out -------------------------------------------------------------------------


def test_the_right_key_gives_an_httponly_strict_cookie_and_a_csrf_token(aws, log_lines):
    result = _login()
    assert result["statusCode"] == 200
    (header,) = result["cookies"]
    attributes = {part.strip().lower() for part in header.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/", "secure"} <= attributes  # https: Secure
    body = json.loads(response_body(result))
    cookie = _cookie(result)
    session = _get("/console/session", cookie)
    assert session["statusCode"] == 200
    assert json.loads(response_body(session))["csrf"] == body["csrf"]
    logged = json.dumps(log_lines())
    assert ADMIN_KEY not in logged
    assert cookie not in logged
    assert body["csrf"] not in logged


def test_a_wrong_key_is_a_clear_401_counted_and_slowed(aws, capfd, log_lines, monkeypatch):
    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(auth.asyncio, "sleep", sleep)
    result = _login("nope-" + ADMIN_KEY)
    assert result["statusCode"] == 401
    assert json.loads(response_body(result)) == {"error": "that is not the admin key"}
    assert "cookies" not in result or not result["cookies"]
    assert slept == [auth.FAILURE_DELAY_S]
    assert "AuthFailures" in capfd.readouterr().out
    assert "nope-" not in json.dumps(log_lines())


def test_wrong_keys_are_limited_per_address(aws, monkeypatch):
    async def sleep(seconds):
        return None

    monkeypatch.setattr(auth.asyncio, "sleep", sleep)
    for _ in range(auth.MAX_FAILURES):
        assert _login("wrong")["statusCode"] == 401
    assert _login("wrong")["statusCode"] == 429
    assert _login(ADMIN_KEY)["statusCode"] == 429  # even the right key waits out the minute
    assert _login(ADMIN_KEY, source="198.51.100.7")["statusCode"] == 200  # another address


def test_logout_revokes_the_session_everywhere(aws):
    result = _login()
    cookie = _cookie(result)
    csrf = json.loads(response_body(result))["csrf"]
    assert _get("/calls", cookie)["statusCode"] == 200
    assert _post("/console/logout", {}, cookie, None)["statusCode"] == 403  # CSRF first
    out = _post("/console/logout", {}, cookie, csrf)
    assert out["statusCode"] == 200
    assert any("Max-Age=0" in c or "expires=" in c.lower() for c in out["cookies"])
    assert _get("/calls", cookie)["statusCode"] == 401  # a copy of the cookie is dead too


# -- every route checks the session -------------------------------------------------------


ROUTES = [
    ("GET", "/console/session", None),
    ("GET", "/calls", None),
    ("GET", f"/calls/{CALL}", None),
    ("POST", "/console/ticket", {}),
    ("POST", "/console/logout", {}),
    ("POST", f"/calls/{CALL}/control", {"action": "mute-assistant"}),
    ("POST", "/assistants", {"name": "x"}),
]


def _forged(config) -> str:
    _session, cookie, _ = auth.mint(config, time.time())
    body, _, mac = cookie.rpartition(".")
    return f"{body}.{'A' * len(mac)}"


def _expired(config) -> str:
    _, cookie, _ = auth.mint(config, time.time() - 24 * 3600)
    return cookie


def _unstored(config) -> str:
    """Correctly signed, but never a session (or logged out): the table says no."""
    return auth.mint(config, time.time())[1]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("kind", ["missing", "forged", "expired", "revoked"])
def test_every_console_route_refuses_a_bad_session(aws, config, method, path, body, kind):
    cookie = {
        "missing": None,
        "forged": _forged(config),
        "expired": _expired(config),
        "revoked": _unstored(config),
    }[kind]
    result = _get(path, cookie) if method == "GET" else _post(path, body or {}, cookie, "any")
    assert result["statusCode"] == 401


@pytest.mark.parametrize(("method", "path", "body"), [r for r in ROUTES if r[0] == "POST"])
def test_every_change_needs_the_session_csrf_token(aws, method, path, body):
    cookie = _cookie(_login())
    assert _post(path, body or {}, cookie, None)["statusCode"] == 403
    assert _post(path, body or {}, cookie, "not-the-token")["statusCode"] == 403


def test_the_admin_key_as_bearer_still_works_for_scripts(aws):
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert _get("/calls", None, headers=headers)["statusCode"] == 200
    assert _get("/calls", None, headers={"authorization": "Bearer nope"})["statusCode"] == 401


def test_a_socket_ticket_needs_a_console_session_and_is_never_the_session(aws, monkeypatch):
    monkeypatch.setenv("CONSOLE_WS_URL", "wss://abc.execute-api.us-east-1.amazonaws.com/live")
    result = _login()
    cookie, csrf = _cookie(result), json.loads(response_body(result))["csrf"]
    answer = _post("/console/ticket", {}, cookie, csrf)
    assert answer["statusCode"] == 200
    body = json.loads(response_body(answer))
    assert body["url"] == "wss://abc.execute-api.us-east-1.amazonaws.com/live"
    assert body["ticket"] not in cookie
    assert cookie.split(".")[0] not in body["ticket"]
    stored = json.dumps(aws.dynamodb.scan(TableName=aws.env["CONSOLE_CONNECTIONS_TABLE"]))
    assert body["ticket"] not in stored  # kept hashed


def test_the_page_and_its_files_are_served_with_a_strict_policy(aws):
    page = _get("/console")
    assert page["statusCode"] == 200
    assert b'type="password"' in response_body(page)
    policy = page["headers"]["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    script = _get("/console/static/console.js")
    assert script["statusCode"] == 200
    assert script["headers"]["content-type"].startswith("text/javascript")
    for sneaky in ("../auth.py", "..%2fauth.py", "console.py", "missing.js"):
        assert _get(f"/console/static/{sneaky}")["statusCode"] == 404
