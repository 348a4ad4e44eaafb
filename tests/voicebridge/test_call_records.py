"""Recording configuration and the call-record shapes the edge and the API share."""

from __future__ import annotations

import pytest

from tests.voicebridge.test_config import EDGE_ENV
from voicebridge.call_records import (
    RECORDINGS_PREFIX,
    decode_picture,
    encode_picture,
    recording_key,
    recording_link,
)
from voicebridge.config import ConfigError, load_settings

CALL_SID = "CA" + "0" * 32


@pytest.mark.parametrize("bucket", ["my-recordings", "a.b-c.123", "abc"])
def test_a_valid_bucket_turns_recordings_on(bucket):
    settings = load_settings("edge", {**EDGE_ENV, "RECORDINGS_BUCKET": bucket})
    assert settings.recordings_bucket == bucket


def test_recordings_are_off_by_default():
    settings = load_settings("edge", EDGE_ENV)
    assert settings.recordings_bucket is None
    assert settings.recordings_spool_dir is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RECORDINGS_BUCKET", "ab"),
        ("RECORDINGS_BUCKET", "My-Bucket"),
        ("RECORDINGS_BUCKET", "-bucket"),
        ("RECORDINGS_BUCKET", "a..b"),
        ("RECORDINGS_BUCKET", "192.168.1.1"),
        ("RECORDINGS_BUCKET", "b" * 64),
        ("RECORDINGS_SPOOL_DIR", "relative/path"),
    ],
)
def test_a_bad_value_is_named_at_start(name, value):
    with pytest.raises(ConfigError) as info:
        load_settings("edge", {**EDGE_ENV, name: value})
    assert info.value.problems[0].startswith(f"{name} is invalid")


def test_a_recording_key_is_under_the_prefix_by_utc_day():
    assert recording_key(CALL_SID, 1_800_000_000) == f"{RECORDINGS_PREFIX}2027/01/15/{CALL_SID}.wav"
    with pytest.raises(ValueError):
        recording_key("CA../../etc", 0)  # only a real CallSid makes a key


def test_the_link_and_the_picture_round_trip():
    assert recording_link("k", 5) == {
        "key": "k",
        "durationMs": 5,
        "channels": ["caller", "assistant"],
    }
    assert decode_picture(encode_picture({"a": [1, None]})) == {"a": [1, None]}
    assert decode_picture("not json") is None
    assert decode_picture("[1]") is None
