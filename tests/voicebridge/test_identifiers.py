"""The one definition of Twilio SIDs and E.164 numbers."""

from __future__ import annotations

import pytest

from voicebridge import identifiers as ids

CALL = "CA" + "0123456789abcdef" * 2


@pytest.mark.parametrize(
    ("check", "good"),
    [
        (ids.is_call_sid, CALL),
        (ids.is_call_sid, "CA" + "0123456789ABCDEF" * 2),
        (ids.is_account_sid, "AC" + "f" * 32),
        (ids.is_stream_sid, "MZ" + "a" * 32),
        (ids.is_phone_number_sid, "PN" + "1" * 32),
        (ids.is_e164, "+14155550123"),
        (ids.is_e164, "+442071838750"),
    ],
)
def test_accepts_the_real_shape(check, good):
    assert check(good)


@pytest.mark.parametrize(
    "bad",
    [
        CALL + "CallStatusringing",  # the signature splice: names and values run together
        CALL + "\n",  # `$` would match before a trailing newline
        CALL[:-1],
        CALL + "0",
        "CA" + "g" * 32,
        "AC" + CALL[2:],
        " " + CALL,
        "CA1",
        "",
        None,
        123,
    ],
)
def test_call_sid_is_matched_in_full(bad):
    assert not ids.is_call_sid(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "14155550123",
        "+04155550123",
        "+1415555012345678",
        "+1 415 555 0123",
        "+14155550123\n",
        "+123456",
        "sip:alice@example.com",
        "",
    ],
)
def test_e164_rejects(bad):
    assert not ids.is_e164(bad)
