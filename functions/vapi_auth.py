"""Vapi server-URL authentication, any of the three ways Vapi can be configured (DESIGN.md).

1. ``x-vapi-secret: <secret>`` (legacy shared secret);
2. ``Authorization: Bearer <secret>`` (bearer credential);
3. HMAC credential: ``x-signature`` = hex HMAC-SHA256(secret, ``"{x-timestamp}.{raw body}"``)
   (a ``sha256=`` prefix tolerated), timestamp in seconds or milliseconds within +-300 s.

Every comparison is constant-time, and the HMAC is computed over the raw bytes as received:
re-serialised JSON would not match what Vapi signed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

WINDOW_SECONDS = 300
_MS_THRESHOLD = 10_000_000_000  # epoch seconds pass 1e10 in the year 2286


def _equal(given: str | None, expected: str) -> bool:
    if not given or len(given) > 512:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _timestamp_fresh(raw: str | None, now: float) -> bool:
    if not raw or len(raw) > 20:
        return False
    try:
        stamp = float(raw)
    except ValueError:
        return False
    if stamp > _MS_THRESHOLD:
        stamp /= 1000.0
    return abs(now - stamp) <= WINDOW_SECONDS


def _hmac_valid(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    signature = headers.get("x-signature")
    timestamp = headers.get("x-timestamp")
    if not signature or not timestamp or not _timestamp_fresh(timestamp, now):
        return False
    signature = signature.strip().removeprefix("sha256=")
    return _equal(signature.lower(), _digest(secret, timestamp, body))


def _digest(secret: str, timestamp: str, body: bytes) -> str:
    """Vapi's HMAC credential: hex HMAC-SHA256 of ``"{timestamp}.{raw body}"``."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def is_authentic(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """True if the request proves knowledge of ``secret``; ``headers`` keys are lower-case."""
    if not secret:
        return False
    if _equal(headers.get("x-vapi-secret"), secret):
        return True
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and _equal(token.strip(), secret):
        return True
    return _hmac_valid(secret, headers, body, now)


def sign(secret: str, body: bytes, timestamp: int | str) -> dict[str, str]:
    """The HMAC headers Vapi would send (tests; the emulator signs independently on purpose)."""
    stamp = str(timestamp)
    return {"x-signature": _digest(secret, stamp, body), "x-timestamp": stamp}
