"""The authentication rules on their own, with an explicit clock (no wall-time dependence)."""

import pytest

from functions.vapi_auth import WINDOW_SECONDS, is_authentic, sign

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
