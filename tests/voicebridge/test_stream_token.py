import pytest

from voicebridge import stream_token
from voicebridge.stream_token import StreamTokenError

NOW = 1_800_000_000


def test_round_trip():
    token = stream_token.mint("secret", "CA1", "asst-1", NOW, 120)
    grant = stream_token.verify("secret", token, "CA1", NOW + 119)
    assert (grant.call_sid, grant.assistant_id, grant.expires_at) == ("CA1", "asst-1", NOW + 120)


@pytest.mark.parametrize(
    ("secret", "call_sid", "at", "reason"),
    [
        ("other", "CA1", NOW, "bad_signature"),
        ("secret", "CA2", NOW, "call_mismatch"),
        ("secret", "CA1", NOW + 121, "expired"),
    ],
)
def test_rejections(secret, call_sid, at, reason):
    token = stream_token.mint("secret", "CA1", "asst-1", NOW, 120)
    with pytest.raises(StreamTokenError) as err:
        stream_token.verify(secret, token, call_sid, at)
    assert err.value.reason == reason


def test_tampered_payload_is_rejected():
    token = stream_token.mint("secret", "CA1", "asst-1", NOW, 120)
    forged = stream_token.mint("secret", "CA1", "asst-evil", NOW, 120)
    spliced = ".".join([*forged.split(".")[:2], token.split(".")[2]])
    with pytest.raises(StreamTokenError, match="bad_signature"):
        stream_token.verify("secret", spliced, "CA1", NOW)


@pytest.mark.parametrize("garbage", ["", "v1", "v1..", "v2.abc.def", "v1.!!.??", "x" * 1000])
def test_malformed_tokens(garbage):
    with pytest.raises(StreamTokenError):
        stream_token.verify("secret", garbage, "CA1", NOW)


def test_ttl_is_capped_at_five_minutes():
    with pytest.raises(ValueError):
        stream_token.mint("secret", "CA1", "a", NOW, 301)
