"""The edge passes an outbound call's signed options into its Vapi call, and only those."""

from __future__ import annotations

from media_edge.core import Call, CallConfig
from media_edge.core.actions import ClaimStream, CloseTwilio, CreateVapiCall
from media_edge.core.events import ClaimOutcome, StreamClaimed
from media_edge.protocol.twilio import TwilioConnected, TwilioStart
from voicebridge import call_overrides, stream_token

SECRET = "s" * 32
EPOCH = 1_800_000_000.0
CALL_SID = "CA" + "1" * 32
STREAM_SID = "MZ" + "2" * 32
OUR_NUMBER, CALLEE = "+14155550100", "+14155550123"
ACCOUNT_SID = "AC" + "3" * 32


def start(extra: dict[str, str]) -> list:
    config = CallConfig(token_secret=SECRET, account_sid=ACCOUNT_SID)
    call = Call(config, now=0.0, epoch_offset_s=EPOCH)
    call.feed(TwilioConnected("Call"), 0.0)
    params = {
        "callSid": CALL_SID,
        "from": OUR_NUMBER,
        "to": CALLEE,
        "token": stream_token.mint(SECRET, CALL_SID, "asst-1", EPOCH, 120),
        **extra,
    }
    actions = call.feed(TwilioStart(STREAM_SID, CALL_SID, ACCOUNT_SID, params), 1.0)
    if any(isinstance(a, ClaimStream) for a in actions):  # the stream is admitted: Vapi next
        actions += call.feed(StreamClaimed(ClaimOutcome.CLAIMED), 1.0)
    return actions


def test_signed_options_reach_the_vapi_call_and_the_callee_is_the_customer():
    options = call_overrides.CallOptions(
        {"variableValues": {"name": "Ada", "callSid": "spoofed"}, "firstMessage": "Hi {{name}}"},
        CALLEE,
    )
    actions = start(call_overrides.encode(SECRET, CALL_SID, options))
    (create,) = [a for a in actions if isinstance(a, CreateVapiCall)]
    overrides = create.body["assistantOverrides"]
    assert overrides["firstMessage"] == "Hi {{name}}"
    assert overrides["variableValues"]["name"] == "Ada"
    assert overrides["variableValues"]["callSid"] == CALL_SID  # metadata wins over variables
    assert overrides["metadata"]["callSid"] == CALL_SID
    assert create.body["customer"] == {"number": CALLEE}


def test_an_inbound_call_keeps_the_caller_as_the_customer():
    (create,) = [a for a in start({}) if isinstance(a, CreateVapiCall)]
    assert create.body["customer"] == {"number": OUR_NUMBER}
    assert "firstMessage" not in create.body["assistantOverrides"]


def test_tampered_options_end_the_stream_like_a_bad_token():
    params = call_overrides.encode(
        SECRET, CALL_SID, call_overrides.CallOptions({"firstMessage": "Hi"}, CALLEE)
    )
    params["o0"] = params["o0"].replace("Hi", "Yo")
    actions = start(params)
    assert not [a for a in actions if isinstance(a, CreateVapiCall)]
    assert [a.code for a in actions if isinstance(a, CloseTwilio)] == [1008]
