"""The stream token: the control plane's signed grant that lets one call's media stream in.

``/twilio/voice`` mints it into a ``<Parameter>`` of the TwiML ``<Stream>``; the media edge
verifies it at the stream's ``start`` before creating a Vapi call. It binds the CallSid, the
assistant and an expiry (at most 5 minutes), so a leaked token is useless for any other call
and soon for this one.

Format: ``v1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(secret, "v1." + payload_b64))>``
with payload ``{"c": call_sid, "a": assistant_id, "e": expires_at_epoch_seconds}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

VERSION = "v1"
MAX_TTL_SECONDS = 300
MAX_TOKEN_LENGTH = 480  # a <Parameter> name+value pair must stay under 500 characters


class StreamTokenError(ValueError):
    """The token is malformed, forged, expired or for another call; ``reason`` is a metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StreamGrant:
    call_sid: str
    assistant_id: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, signed: str) -> bytes:
    return hmac.new(secret.encode(), signed.encode("ascii"), hashlib.sha256).digest()


def mint(secret: str, call_sid: str, assistant_id: str, now: float, ttl_seconds: int) -> str:
    """A token for ``call_sid`` and ``assistant_id`` valid ``ttl_seconds`` (<= 300) from ``now``."""
    if not secret:
        raise ValueError("stream token secret is empty")
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl_seconds must be in (0, {MAX_TTL_SECONDS}]")
    payload = {"c": call_sid, "a": assistant_id, "e": int(now) + ttl_seconds}
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    signed = f"{VERSION}.{body}"
    token = f"{signed}.{_b64(_mac(secret, signed))}"
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError("call sid or assistant id too long for a stream token")
    return token


def verify(secret: str, token: str, call_sid: str, now: float) -> StreamGrant:
    """Check signature, expiry and CallSid; return the grant or raise StreamTokenError."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise StreamTokenError("malformed")
    version, _, rest = token.partition(".")
    body, _, signature = rest.partition(".")
    if version != VERSION or not body or not signature:
        raise StreamTokenError("malformed")
    try:
        given = _unb64(signature)
        expected = _mac(secret, f"{version}.{body}")
    except (ValueError, UnicodeEncodeError):
        raise StreamTokenError("malformed") from None
    if not hmac.compare_digest(given, expected):
        raise StreamTokenError("bad_signature")
    try:
        payload = json.loads(_unb64(body))
        grant = StreamGrant(str(payload["c"]), str(payload["a"]), int(payload["e"]))
    except (ValueError, KeyError, TypeError):
        raise StreamTokenError("malformed") from None
    if grant.expires_at < now:
        raise StreamTokenError("expired")
    if grant.expires_at > now + MAX_TTL_SECONDS + 5:
        raise StreamTokenError("expiry_too_far")
    if not hmac.compare_digest(grant.call_sid.encode(), call_sid.encode()):
        raise StreamTokenError("call_mismatch")
    return grant
