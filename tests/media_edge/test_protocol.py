"""Twilio parsing is strict and bounded; Vapi parsing is lenient; outgoing messages are exact."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from media_edge.protocol import twilio, vapi

SID = "MZ" + "a" * 32
ACCOUNT = "AC" + "b" * 32
CALL = "CA" + "c" * 32


def media(**media_fields) -> str:
    fields = {"track": "inbound", "chunk": "1", "timestamp": "40", "payload": "//8="}
    fields.update(media_fields)
    return json.dumps({"event": "media", "sequenceNumber": "3", "streamSid": SID, "media": fields})


def start(**start_fields) -> str:
    fields = {
        "accountSid": ACCOUNT,
        "streamSid": SID,
        "callSid": CALL,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"token": "t", "from": "+1"},
    }
    fields.update(start_fields)
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID, "start": fields})


def test_every_twilio_event_parses():
    assert twilio.parse('{"event":"connected","protocol":"Call","version":"1.0.0"}') == (
        twilio.TwilioConnected("Call")
    )
    assert twilio.parse(start()) == twilio.TwilioStart(
        SID, CALL, ACCOUNT, {"token": "t", "from": "+1"}
    )
    assert twilio.parse(media()) == twilio.TwilioMedia(SID, 40, b"\xff\xff")
    assert twilio.parse(media(timestamp=60)) == twilio.TwilioMedia(SID, 60, b"\xff\xff")
    dtmf = {"event": "dtmf", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "#"}}
    assert twilio.parse(json.dumps(dtmf)) == twilio.TwilioDtmf(SID, "#")
    mark = {"event": "mark", "streamSid": SID, "mark": {"name": "m7"}}
    assert twilio.parse(json.dumps(mark)) == twilio.TwilioMark(SID, "m7")
    stop = {"event": "stop", "streamSid": SID, "stop": {"accountSid": "AC1", "callSid": "CA1"}}
    assert twilio.parse(json.dumps(stop)) == twilio.TwilioStop(SID)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"event":"media"}', "binary_frame"),
        ("x" * (twilio.MAX_MESSAGE_CHARS + 1), "oversize"),
        ("{nope", "malformed_json"),
        ("[1,2]", "malformed_json"),
        ('{"streamSid":"MZ"}', "missing_event"),
        ('{"event":5,"streamSid":"MZ"}', "missing_event"),
        ('{"event":"","streamSid":"MZ"}', "missing_event"),
        ('{"event":null}', "missing_event"),
        # The bounds hold before the event type is looked at: unknown or not.
        (b'{"event":"party"}', "binary_frame"),
        (json.dumps({"event": "party", "x": "a" * twilio.MAX_MESSAGE_CHARS}), "oversize"),
        ('{"event":"party",', "malformed_json"),
        (media(payload="not base64!"), "bad_base64"),
        (media(payload="//8"), "bad_base64"),  # missing padding
        (media(payload=""), "bad_payload"),
        (media(payload=5), "bad_payload"),
        (media(payload="A" * (twilio.MAX_PAYLOAD_CHARS + 4)), "bad_payload"),
        (media(timestamp="-5"), "missing_field"),
        (media(timestamp="1e3"), "missing_field"),
        (media(timestamp=True), "missing_field"),
        (
            json.dumps({"event": "media", "media": {"timestamp": "0", "payload": "//8="}}),
            "missing_field",
        ),
        (json.dumps({"event": "media", "streamSid": SID}), "missing_field"),
        (json.dumps({"event": "mark", "streamSid": SID, "mark": {}}), "missing_field"),
        (json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "12"}}), "bad_dtmf"),
        (json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "x"}}), "bad_dtmf"),
        (start(callSid=None), "bad_sid"),
        (start(callSid=CALL + "CallStatusringing"), "bad_sid"),  # the separator-less splice
        (start(callSid=CALL + "\n"), "bad_sid"),
        (start(callSid="CA" + "g" * 32), "bad_sid"),
        (start(accountSid="AC1"), "bad_sid"),
        (start(accountSid=ACCOUNT + "0"), "bad_sid"),
        (start(streamSid="MZ" + "a" * 31), "stream_sid_mismatch"),
        (
            start().replace(f'"streamSid": "{SID}", "start"', '"streamSid": "MZ1", "start"'),
            "bad_sid",
        ),
        (start(streamSid="MZother"), "stream_sid_mismatch"),
        (
            start(mediaFormat={"encoding": "audio/l16", "sampleRate": 16000}),
            "unsupported_media_format",
        ),
        (start(customParameters=["token"]), "bad_parameters"),
        (start(customParameters={"token": 5}), "bad_parameters"),
        (start(customParameters={"k": "v" * 600}), "bad_parameters"),
        (start(customParameters={f"k{i}": "v" for i in range(40)}), "bad_parameters"),
    ],
)
def test_bad_twilio_messages_raise_a_labelled_error(raw, reason):
    with pytest.raises(twilio.ProtocolError) as info:
        twilio.parse(raw)
    assert info.value.reason == reason


def test_unknown_twilio_event_types_are_events_not_errors():
    """Twilio adds message types over time (its list of messages from Twilio grew ``dtmf``):
    a well-formed message of a type we do not know is handed on, its name bounded."""
    assert twilio.parse('{"event":"party","streamSid":"MZ1"}') == twilio.TwilioUnknown("party")
    assert twilio.parse(json.dumps({"event": "x" * 100})) == twilio.TwilioUnknown("x" * 32)
    assert twilio.parse('{"event":"Media"}') == twilio.TwilioUnknown("Media")  # case matters


def test_writer_builds_exact_json():
    writer = twilio.TwilioWriter(SID)
    assert json.loads(writer.media(b"\x00\xff")) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": base64.b64encode(b"\x00\xff").decode()},
    }
    assert json.loads(writer.mark("m3")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "m3"},
    }
    assert json.loads(writer.clear()) == {"event": "clear", "streamSid": SID}


def test_apology_twiml_escapes_the_fallback_number():
    assert twilio.apology_twiml("+1<2>") == "<Response><Dial>+1&lt;2&gt;</Dial></Response>"
    assert twilio.apology_twiml(None).endswith("<Hangup/></Response>")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"user-interrupted"}', vapi.VapiUserInterrupted()),
        (
            '{"type":"speech-update","status":"started","role":"user","turn":2}',
            vapi.VapiSpeechUpdate("user", "started"),
        ),
        (
            '{"type":"status-update","status":"ended","endedReason":"customer-ended-call"}',
            vapi.VapiCallEnded("customer-ended-call"),
        ),
        ('{"type":"status-update","status":"in-progress"}', vapi.VapiIgnored("status-update")),
        ('{"type":"end-of-call-report"}', vapi.VapiCallEnded("end-of-call-report")),
        ('{"type":"hang"}', vapi.VapiIgnored("hang")),
        ('{"type":"transcript","transcript":"hi"}', vapi.VapiIgnored("transcript-malformed")),
        (
            '{"type":"transcript","role":"user","transcriptType":"partial","transcript":"hi <b>"}',
            vapi.VapiTranscript("user", False, "hi <b>"),
        ),
        (
            '{"type":"transcript","role":"assistant","transcriptType":"final","transcript":" Hi "}',
            vapi.VapiTranscript("assistant", True, " Hi "),
        ),
        (  # ClientMessageTranscript.type's enum also names a final one in the type
            '{"type":"transcript[transcriptType=\\"final\\"]","role":"user",'
            '"transcriptType":"final","transcript":"yes"}',
            vapi.VapiTranscript("user", True, "yes"),
        ),
        (
            '{"type":"transcript","role":"bot","transcriptType":"final","transcript":"x"}',
            vapi.VapiIgnored("transcript-malformed"),
        ),
        (
            '{"type":"transcript","role":"user","transcriptType":"final","transcript":5}',
            vapi.VapiIgnored("transcript-malformed"),
        ),
        ('{"type":"brand-new-thing"}', vapi.VapiIgnored("brand-new-thing")),
        ('{"message":{"type":"user-interrupted"}}', vapi.VapiUserInterrupted()),
        ("{broken", vapi.VapiIgnored("malformed")),
        ("[]", vapi.VapiIgnored("malformed")),
        ('{"type":5}', vapi.VapiIgnored("untyped")),
    ],
)
def test_vapi_parsing_is_lenient(text, expected):
    assert vapi.parse(text) == expected


def test_create_call_body_and_websocket_url():
    body = vapi.create_call_body("a1", "mulaw", {"callSid": "CA1"}, "+14155550100")
    assert body == {
        "assistantId": "a1",
        "transport": {
            "provider": "vapi.websocket",
            "audioFormat": {"format": "mulaw", "container": "raw", "sampleRate": 8000},
        },
        "assistantOverrides": {
            "clientMessages": ["speech-update", "user-interrupted", "status-update", "transcript"],
            "metadata": {"callSid": "CA1"},
            "variableValues": {"callSid": "CA1"},
            "monitorPlan": {"listenEnabled": False, "controlEnabled": False},
        },
        "customer": {"number": "+14155550100"},
    }
    with_control = vapi.create_call_body("a1", "mulaw", {}, None, control=True)
    assert with_control["assistantOverrides"]["monitorPlan"]["controlEnabled"] is True
    control = "https://phone-call-websocket.vapi.ai/abc/control"
    assert vapi.control_url({"monitor": {"controlUrl": control}}) == control
    for answer in ({}, {"monitor": None}, {"monitor": {"controlUrl": "ftp://x"}}):
        assert vapi.control_url(answer) is None
    assert "customer" not in vapi.create_call_body("a1", "pcm16", {}, "anonymous")
    url = "wss://api.vapi.ai/abc/transport"
    assert vapi.websocket_url({"transport": {"websocketCallUrl": url}}) == url
    for answer in ({}, {"transport": {}}, {"transport": {"websocketCallUrl": "http://x"}}):
        with pytest.raises(ValueError, match="websocketCallUrl"):
            vapi.websocket_url(answer)


def test_every_call_asks_for_the_events_the_bridge_acts_on():
    """Whatever the assistant's own clientMessages say, the socket carries what barge-in and
    the goodbye need (and the transcript a live console shows)."""
    for fmt in vapi.AUDIO_FORMATS:
        body = vapi.create_call_body("a1", fmt, {}, None)
        assert body["assistantOverrides"]["clientMessages"] == list(vapi.CLIENT_MESSAGES)
    assert {"speech-update", "user-interrupted", "status-update"} <= set(vapi.CLIENT_MESSAGES)
    assert len(set(vapi.CLIENT_MESSAGES)) == len(vapi.CLIENT_MESSAGES)
    # What the edge acts on is typed; everything asked for parses without error.
    for kind in vapi.CLIENT_MESSAGES:
        assert vapi.parse(json.dumps({"type": kind, "role": "user", "status": "started"}))


SPEC = Path(__file__).resolve().parents[2].parent / "shared/reference/vapi-openapi.json"


def test_client_messages_are_members_of_vapis_enum():
    if not SPEC.exists():
        pytest.skip(f"Vapi's OpenAPI schema is not beside the repo ({SPEC}); CI provides it")
    schema = json.loads(SPEC.read_text())["components"]["schemas"]["AssistantOverrides"]
    allowed = set(schema["properties"]["clientMessages"]["items"]["enum"])
    assert set(vapi.CLIENT_MESSAGES) <= allowed, set(vapi.CLIENT_MESSAGES) - allowed
