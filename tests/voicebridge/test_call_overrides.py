"""Signed per-call options: what the control plane decided reaches the edge unchanged, or not at
all."""

import json

import pytest

from voicebridge.call_overrides import (
    CHUNK_CHARS,
    MAC_PARAMETER,
    CallOptions,
    OverridesError,
    decode,
    encode,
)

SECRET = "s" * 40
CALL = "CA" + "1" * 32
OPTIONS = CallOptions(
    {
        "variableValues": {"name": "Ada", "slot": "Tue 9:30"},
        "firstMessage": "Hi {{name}}, about your appointment " + "x" * 900,
        "firstMessageMode": "assistant-speaks-first",
    },
    "+14155550123",
)


def test_round_trip_in_parameters_twilio_accepts():
    params = encode(SECRET, CALL, OPTIONS)
    assert all(len(name) + len(value) < 500 for name, value in params.items())  # Twilio's cap
    assert len([n for n in params if n != MAC_PARAMETER]) > 1  # the document was split
    assert all(len(v) <= CHUNK_CHARS for n, v in params.items() if n != MAC_PARAMETER)
    assert decode(SECRET, CALL, {"token": "t", "from": "+1", **params}) == OPTIONS


def test_no_options_means_no_parameters_and_decodes_to_none():
    assert encode(SECRET, CALL, CallOptions()) == {}
    assert decode(SECRET, CALL, {"token": "t"}) == CallOptions()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: {**p, "o0": p["o0"].replace("Hi", "Yo")},  # a changed value
        lambda p: {k: v for k, v in p.items() if k != "o1"},  # a chunk dropped
        lambda p: {k: v for k, v in p.items() if k != MAC_PARAMETER},  # the signature dropped
        lambda p: {**p, MAC_PARAMETER: "v1.AAAA"},  # a made-up signature
    ],
    ids=["changed", "truncated", "unsigned", "forged"],
)
def test_anything_changed_on_the_way_is_refused(tamper):
    with pytest.raises(OverridesError):
        decode(SECRET, CALL, tamper(encode(SECRET, CALL, OPTIONS)))


def test_options_signed_for_one_call_do_not_work_for_another():
    params = encode(SECRET, CALL, OPTIONS)
    with pytest.raises(OverridesError, match="bad_signature"):
        decode(SECRET, "CA" + "2" * 32, params)
    with pytest.raises(OverridesError, match="bad_signature"):
        decode("another secret", CALL, params)


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": {"provider": "openai"}},  # not a whitelisted override
        {"variableValues": {"a": 1}},
        {"firstMessageMode": "shout"},
        {"maxDurationSeconds": 5},
        {"firstMessage": "x" * 5000},  # over the document cap
    ],
)
def test_only_whitelisted_bounded_fields_are_carried(overrides):
    with pytest.raises(OverridesError):
        encode(SECRET, CALL, CallOptions(overrides))


def test_a_signed_document_with_other_fields_is_still_refused():
    # Even correctly signed (a bug elsewhere), fields outside the whitelist never reach Vapi.
    from voicebridge.call_overrides import _mac

    document = json.dumps({"assistantOverrides": {"server": {"url": "https://evil"}}})
    params = {"o0": document, MAC_PARAMETER: _mac(SECRET, CALL, document)}
    with pytest.raises(OverridesError, match="unsupported override"):
        decode(SECRET, CALL, params)


def test_the_customer_must_be_e164():
    with pytest.raises(OverridesError):
        encode(SECRET, CALL, CallOptions({}, "555-0100"))
