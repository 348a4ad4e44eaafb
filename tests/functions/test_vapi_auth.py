"""The authentication rules on their own, with an explicit clock (no wall-time dependence)."""

import base64
import hashlib
import hmac
import re

import pytest

from functions.vapi_auth import WINDOW_SECONDS, is_authentic, sign
from voicebridge.vapi_credentials import HmacPlan, Plan, parse_plans

SECRET = "s3cret"
BODY = b'{"message":{"type":"hang"}}'
NOW = 1_795_000_000.0


def test_window_is_inclusive_at_300_seconds_either_way():
    for offset in (-WINDOW_SECONDS, 0, WINDOW_SECONDS):
        assert is_authentic(SECRET, sign(SECRET, BODY, int(NOW + offset)), BODY, NOW)
    for offset in (-WINDOW_SECONDS - 1, WINDOW_SECONDS + 1):
        assert not is_authentic(SECRET, sign(SECRET, BODY, int(NOW + offset)), BODY, NOW)


def test_millisecond_timestamps_use_the_same_window():
    assert is_authentic(SECRET, sign(SECRET, BODY, int(NOW * 1000) - 299_000), BODY, NOW)
    assert not is_authentic(SECRET, sign(SECRET, BODY, int(NOW * 1000) - 301_000), BODY, NOW)


def test_signature_is_over_the_raw_bytes():
    headers = sign(SECRET, BODY, int(NOW))
    reserialised = b'{"message": {"type": "hang"}}'  # same JSON, other bytes
    assert not is_authentic(SECRET, headers, reserialised, NOW)


def test_uppercase_hex_and_prefix_are_accepted():
    headers = sign(SECRET, BODY, int(NOW))
    headers["x-signature"] = "sha256=" + headers["x-signature"].upper()
    assert is_authentic(SECRET, headers, BODY, NOW)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-vapi-secret": SECRET + "x"},
        {"x-vapi-secret": SECRET[:-1]},
        {"x-vapi-secret": "x" * 10_000},
        {"authorization": f"Basic {SECRET}"},
        {"x-timestamp": str(int(NOW)), "x-signature": ""},
        {"x-timestamp": "1e9", "x-signature": "00" * 32},
    ],
)
def test_near_misses_fail(headers):
    assert not is_authentic(SECRET, headers, BODY, NOW)


def test_no_configured_secret_accepts_nothing():
    assert not is_authentic("", {"x-vapi-secret": ""}, BODY, NOW)
    assert not is_authentic("", sign("", BODY, int(NOW)), BODY, NOW)


# Every credential option Vapi's schema offers, each with a valid and a forged request.
# (#/components/schemas/HMACAuthenticationPlan, BearerAuthenticationPlan; legacy x-vapi-secret)

URL = "https://api.example.com/vapi/webhook"
B64_SECRET = base64.b64encode(b"\x00raw key bytes\xff").decode()


def _plan(spec: str) -> Plan:
    (plan,) = parse_plans(spec)
    return plan


HMAC_PLANS = {
    "default": '{"type": "hmac", "algorithm": "sha256"}',
    "sha512": '{"type": "hmac", "algorithm": "sha512"}',
    "sha1": '{"type": "hmac", "algorithm": "sha1"}',
    "base64": '{"type": "hmac", "algorithm": "sha256", "signatureEncoding": "base64"}',
    "headers": (
        '{"type": "hmac", "algorithm": "sha256", "signatureHeader": "X-Vapi-Signature",'
        ' "timestampHeader": "X-Vapi-Timestamp"}'
    ),
    "prefix": '{"type": "hmac", "algorithm": "sha256", "signaturePrefix": "sha256="}',
    "no-timestamp": '{"type": "hmac", "algorithm": "sha256", "includeTimestamp": false}',
    "format": (
        '{"type": "hmac", "algorithm": "sha512",'
        ' "payloadFormat": "{method} {url}\\n{timestamp}\\n{body}"}'
    ),
    "svix": (
        '{"type": "hmac", "algorithm": "sha256", "signatureEncoding": "base64",'
        ' "secretIsBase64": true, "signatureHeader": "svix-signature", "signaturePrefix": "v1,",'
        ' "timestampHeader": "svix-timestamp", "messageIdHeader": "svix-id",'
        ' "payloadFormat": "{svix-id}.{timestamp}.{body}"}'
    ),
}


def _secret_for(plan: HmacPlan) -> str:
    return B64_SECRET if plan.secret_is_base64 else SECRET


def _independent_hmac(plan: HmacPlan, secret: str, signed: bytes) -> str:
    """The expected signature, computed here without the module's helpers."""
    key = base64.b64decode(secret) if plan.secret_is_base64 else secret.encode()
    digest = hmac.new(key, signed, getattr(hashlib, plan.algorithm)).digest()
    encoded = (
        digest.hex() if plan.signature_encoding == "hex" else base64.b64encode(digest).decode()
    )
    return (plan.signature_prefix or "") + encoded


@pytest.mark.parametrize("name", HMAC_PLANS)
def test_hmac_plan_valid_and_forged(name):
    plan = _plan(HMAC_PLANS[name])
    secret = _secret_for(plan)
    plans = (plan,)
    headers = sign(secret, BODY, int(NOW), plan, url=URL, message_id="msg_42")
    stamp = str(int(NOW))
    signed = {
        "default": f"{stamp}.".encode() + BODY,
        "sha512": f"{stamp}.".encode() + BODY,
        "sha1": f"{stamp}.".encode() + BODY,
        "base64": f"{stamp}.".encode() + BODY,
        "headers": f"{stamp}.".encode() + BODY,
        "prefix": f"{stamp}.".encode() + BODY,
        "no-timestamp": BODY,
        "format": f"POST {URL}\n{stamp}\n".encode() + BODY,
        "svix": f"msg_42.{stamp}.".encode() + BODY,
    }[name]
    assert headers[plan.signature_header] == _independent_hmac(plan, secret, signed)
    headers = {k.lower(): v for k, v in headers.items()}
    assert is_authentic(secret, headers, BODY, NOW, plans=plans, url=URL)
    # Forged: another key, another body, another URL (when signed), a stripped prefix.
    forged = sign(
        secret + "x" if not plan.secret_is_base64 else B64_SECRET[:-4] + "AAA=",
        BODY,
        int(NOW),
        plan,
        url=URL,
        message_id="msg_42",
    )
    assert not is_authentic(secret, forged, BODY, NOW, plans=plans, url=URL)
    assert not is_authentic(secret, headers, BODY + b" ", NOW, plans=plans, url=URL)
    if "{url}" in plan.payload_format:
        assert not is_authentic(secret, headers, BODY, NOW, plans=plans, url=URL + "?x=1")
    if plan.signature_prefix:
        bare = {
            **headers,
            plan.signature_header: headers[plan.signature_header][len(plan.signature_prefix) :],
        }
        assert not is_authentic(secret, bare, BODY, NOW, plans=plans, url=URL)
    # The plan is the only way in: the legacy header and a Bearer token are refused.
    assert not is_authentic(secret, {"x-vapi-secret": secret}, BODY, NOW, plans=plans)
    assert not is_authentic(secret, {"authorization": f"Bearer {secret}"}, BODY, NOW, plans=plans)


@pytest.mark.parametrize("name", ["default", "headers", "format", "svix"])
def test_a_signed_timestamp_must_be_fresh(name):
    plan = _plan(HMAC_PLANS[name])
    secret = _secret_for(plan)
    stale = sign(secret, BODY, int(NOW) - WINDOW_SECONDS - 1, plan, url=URL, message_id="m")
    stale = {k.lower(): v for k, v in stale.items()}
    assert not is_authentic(secret, stale, BODY, NOW, plans=(plan,), url=URL)
    missing = {k: v for k, v in stale.items() if k != plan.timestamp_header}
    assert not is_authentic(secret, missing, BODY, NOW - WINDOW_SECONDS, plans=(plan,), url=URL)


def test_svix_message_id_is_signed():
    plan = _plan(HMAC_PLANS["svix"])
    headers = sign(B64_SECRET, BODY, int(NOW), plan, message_id="msg_1")
    assert is_authentic(B64_SECRET, headers, BODY, NOW, plans=(plan,))
    assert not is_authentic(B64_SECRET, {**headers, "svix-id": "msg_2"}, BODY, NOW, plans=(plan,))
    no_id = {k: v for k, v in headers.items() if k != "svix-id"}
    assert not is_authentic(B64_SECRET, no_id, BODY, NOW, plans=(plan,))


def test_a_base64_secret_that_is_not_base64_verifies_nothing():
    plan = _plan(HMAC_PLANS["svix"])
    headers = sign(B64_SECRET, BODY, int(NOW), plan)
    assert not is_authentic("not base64!", headers, BODY, NOW, plans=(plan,))


BEARER_PLANS = {
    "default": ('{"type": "bearer"}', "authorization", f"Bearer {SECRET}"),
    "header": ('{"type": "bearer", "headerName": "X-Api-Key"}', "x-api-key", f"Bearer {SECRET}"),
    "no-prefix": (
        '{"type": "bearer", "headerName": "X-Api-Key", "bearerPrefixEnabled": false}',
        "x-api-key",
        SECRET,
    ),
    "legacy": ('{"type": "x-vapi-secret"}', "x-vapi-secret", SECRET),
}


@pytest.mark.parametrize("name", BEARER_PLANS)
def test_token_plans_valid_and_forged(name):
    spec, header, value = BEARER_PLANS[name]
    plans = parse_plans(spec)
    assert is_authentic(SECRET, {header: value}, BODY, NOW, plans=plans)
    assert not is_authentic(SECRET, {header: value + "x"}, BODY, NOW, plans=plans)  # forged
    assert not is_authentic(
        SECRET, {header: value.replace(SECRET, "guess")}, BODY, NOW, plans=plans
    )
    assert not is_authentic(SECRET, {"x-other": value}, BODY, NOW, plans=plans)  # wrong header
    assert not is_authentic(SECRET, sign(SECRET, BODY, int(NOW)), BODY, NOW, plans=plans)


def test_bearer_prefix_is_required_when_enabled_and_refused_when_disabled():
    with_prefix = parse_plans('{"type": "bearer", "headerName": "x-api-key"}')
    without = parse_plans(
        '{"type": "bearer", "headerName": "x-api-key", "bearerPrefixEnabled": false}'
    )
    assert not is_authentic(SECRET, {"x-api-key": SECRET}, BODY, NOW, plans=with_prefix)
    assert not is_authentic(SECRET, {"x-api-key": f"Bearer {SECRET}"}, BODY, NOW, plans=without)


def test_several_plans_accept_any_of_them():
    plans = parse_plans("x-vapi-secret,hmac")
    assert is_authentic(SECRET, {"x-vapi-secret": SECRET}, BODY, NOW, plans=plans)
    assert is_authentic(SECRET, sign(SECRET, BODY, int(NOW)), BODY, NOW, plans=plans)
    assert not is_authentic(SECRET, {"authorization": f"Bearer {SECRET}"}, BODY, NOW, plans=plans)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('{"type": "hmac", "algorithm": "md5"}', "algorithm must be one of sha256, sha512, sha1"),
        ('{"type": "hmac", "signatureEncoding": "base32"}', "signatureEncoding must be one of"),
        ('{"type": "hmac", "secretKey": "s"}', "the secret is VAPI_WEBHOOK_SECRET"),
        ('{"type": "bearer", "token": "s"}', "the secret is VAPI_WEBHOOK_SECRET"),
        ('{"type": "oauth2"}', "token endpoint"),
        ('{"type": "hmac", "signatureHeader": "bad header"}', "HTTP header name"),
        ('{"type": "hmac", "payloadFormat": "{timestamp}"}', "must contain {body}"),
        ('{"type": "hmac", "payloadFormat": "{nonce}.{body}"}', "{nonce}"),
        ('{"type": "hmac", "payloadFormat": "{svix-id}.{body}"}', "messageIdHeader"),
        (
            '{"type": "hmac", "includeTimestamp": false, "payloadFormat": "{timestamp}.{body}"}',
            "includeTimestamp is false",
        ),
        ('{"type": "hmac", "includeTimestamp": "no"}', "true or false"),
        ('{"type": "bearer", "prefix": "Token"}', "no property 'prefix'"),
        ('{"type": "hmac"', "not valid JSON"),
        ("[]", "1 to 8"),
        ("basic", "type must be hmac, bearer or x-vapi-secret"),
    ],
)
def test_bad_plans_are_refused_with_a_reason(value, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_plans(value)
