"""Vapi server-URL authentication: every credential form Vapi can send (``VAPI_WEBHOOK_AUTH``).

A request passes when it satisfies any configured plan (``voicebridge.vapi_credentials``):

- HMAC (``#/components/schemas/HMACAuthenticationPlan``): the signature header carries the
  ``algorithm`` HMAC (sha256/sha512/sha1) of ``payloadFormat`` filled in (``{timestamp}.{body}``
  by default), hex or base64, after an optional ``signaturePrefix``; the key is the secret, or
  its base64 decoding with ``secretIsBase64``. When the payload covers ``{timestamp}``, the
  timestamp (seconds or milliseconds: Vapi does not document the unit) must be within +-300 s;
- Bearer (``#/components/schemas/BearerAuthenticationPlan``): ``headerName`` (Authorization)
  holds ``Bearer <secret>``, or the bare secret with ``bearerPrefixEnabled: false``;
- legacy: ``x-vapi-secret: <secret>``.

With ``VAPI_WEBHOOK_AUTH`` unset the defaults are today's forms: ``x-vapi-secret``, Bearer in
``Authorization``, and hex HMAC-SHA256 of ``"{x-timestamp}.{body}"`` (a ``sha256=`` prefix
tolerated, upper-case hex too). Every comparison is constant-time, and the HMAC is computed over
the raw bytes as received: re-serialised JSON would not match what Vapi signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from voicebridge.vapi_credentials import (
    DEFAULT_PLANS,
    PLACEHOLDER,
    BearerPlan,
    HmacPlan,
    Plan,
)

WINDOW_SECONDS = 300
MAX_HEADER_CHARS = 1024
_MS_THRESHOLD = 10_000_000_000  # epoch seconds pass 1e10 in the year 2286
_DIGESTS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512, "sha1": hashlib.sha1}


def _equal(given: str | None, expected: str) -> bool:
    if not given or len(given) > MAX_HEADER_CHARS:
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


def _key(plan: HmacPlan, secret: str) -> bytes | None:
    if not plan.secret_is_base64:
        return secret.encode()
    try:
        return base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        return None  # a secret that is not base64 can verify nothing


def payload(plan: HmacPlan, values: Mapping[str, bytes]) -> bytes:
    """``payloadFormat`` with each ``{placeholder}`` replaced by its raw bytes."""
    parts = PLACEHOLDER.split(plan.payload_format)  # literal, name, literal, name, ...
    return b"".join(
        values[part] if index % 2 else part.encode() for index, part in enumerate(parts)
    )


def signature(plan: HmacPlan, key: bytes, signed: bytes) -> str:
    """The signature, encoded as the plan says (no prefix)."""
    digest = hmac.new(key, signed, _DIGESTS[plan.algorithm]).digest()
    return digest.hex() if plan.signature_encoding == "hex" else base64.b64encode(digest).decode()


def _hmac_valid(
    plan: HmacPlan,
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    method: str,
    url: str,
) -> bool:
    given = headers.get(plan.signature_header)
    key = _key(plan, secret)
    if not given or len(given) > MAX_HEADER_CHARS or key is None:
        return False
    values = {"body": body, "method": method.encode(), "url": url.encode()}
    needed = set(PLACEHOLDER.findall(plan.payload_format))
    if "timestamp" in needed:
        stamp = headers.get(plan.timestamp_header)
        if stamp is None or not _timestamp_fresh(stamp, now):
            return False
        values["timestamp"] = stamp.encode()
    if "svix-id" in needed:
        message_id = headers.get(plan.message_id_header or "")
        if not message_id or len(message_id) > 256:
            return False
        values["svix-id"] = message_id.encode()
    given = given.strip()
    if plan.signature_prefix is not None:
        if not given.startswith(plan.signature_prefix):
            return False
        given = given[len(plan.signature_prefix) :]
    else:
        given = given.removeprefix(f"{plan.algorithm}=")  # GitHub style, tolerated
    if plan.signature_encoding == "hex":
        given = given.lower()
    return _equal(given, signature(plan, key, payload(plan, values)))


def _bearer_valid(plan: BearerPlan, secret: str, headers: Mapping[str, str]) -> bool:
    value = headers.get(plan.header_name)
    if value is None:
        return False
    if not plan.bearer_prefix_enabled:
        return _equal(value.strip(), secret)
    scheme, _, token = value.partition(" ")
    return scheme.lower() == "bearer" and _equal(token.strip(), secret)


def is_authentic(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    *,
    plans: tuple[Plan, ...] = DEFAULT_PLANS,
    method: str = "POST",
    url: str = "",
) -> bool:
    """True if the request proves knowledge of ``secret`` in one of ``plans``' ways. ``headers``
    are looked up by lower-case name; ``method`` and ``url`` fill ``{method}`` and ``{url}``."""
    if not secret:
        return False
    for plan in plans:
        if isinstance(plan, HmacPlan):
            ok = _hmac_valid(plan, secret, headers, body, now, method, url)
        elif isinstance(plan, BearerPlan):
            ok = _bearer_valid(plan, secret, headers)
        else:
            ok = _equal(headers.get(plan.header_name), secret)
        if ok:
            return True
    return False


def sign(
    secret: str,
    body: bytes,
    timestamp: int | str,
    plan: HmacPlan = HmacPlan(),  # noqa: B008 - frozen, shared safely
    *,
    method: str = "POST",
    url: str = "",
    message_id: str = "msg_1",
) -> dict[str, str]:
    """The headers Vapi sends for ``plan`` (tests; the emulator signs independently on purpose)."""
    stamp = str(timestamp)
    values = {
        "body": body,
        "timestamp": stamp.encode(),
        "method": method.encode(),
        "url": url.encode(),
        "svix-id": message_id.encode(),
    }
    key = _key(plan, secret)
    assert key is not None, "secretIsBase64 needs a base64 secret"
    headers = {
        plan.signature_header: (plan.signature_prefix or "")
        + signature(plan, key, payload(plan, values)),
    }
    if plan.include_timestamp:
        headers[plan.timestamp_header] = stamp
    if plan.message_id_header:
        headers[plan.message_id_header] = message_id
    return headers
