"""The simulated caller's Twilio rules, without sockets: TwiML reading and the playout buffer."""

import pytest

from infra.caller.playout import FRAME_BYTES, SILENCE, Playout
from infra.caller.twiml import TwimlError, parse

AUDIO = bytes(range(1, 161))


def test_connect_stream_with_parameters():
    twiml = parse(
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://edge.example/media" statusCallback="https://api/twilio/status">'
        '<Parameter name="callSid" value="CA1"/><Parameter name="token" value="v1.x.y"/>'
        "</Stream></Connect></Response>"
    )
    assert twiml.stream.url == "wss://edge.example/media"
    assert twiml.stream.parameters == {"callSid": "CA1", "token": "v1.x.y"}
    assert twiml.stream.status_callback == "https://api/twilio/status"


def test_say_hangup_has_no_stream():
    twiml = parse("<Response><Say>Not set up.</Say><Hangup/></Response>")
    assert twiml.stream is None
    assert twiml.say == ["Not set up."]
    assert twiml.hangup


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ('<Response><Connect><Stream url="https://x/media"/></Connect></Response>', "wss"),
        ('<Response><Connect><Stream url="wss://x/media?t=1"/></Connect></Response>', "query"),
        ('<Response><Start><Stream url="wss://x/media"/></Start></Response>', "one-way"),
        ("<Reply/>", "Response"),
        ("<Response>", "invalid XML"),
        ("<Response>" + " " * 70_000 + "</Response>", "64 kB"),
        (
            '<Response><Connect><Stream url="wss://x/m"><Parameter name="t" value="'
            + "x" * 500
            + '"/></Stream></Connect></Response>',
            "500",
        ),
    ],
)
def test_what_twilio_would_refuse(document, reason):
    with pytest.raises(TwimlError, match=reason):
        parse(document)


def test_playout_is_real_time_and_marks_follow_the_audio():
    playout = Playout()
    assert playout.mark("idle") == ["idle"]  # nothing buffered: echoed at once
    playout.media(AUDIO * 2)
    assert playout.mark("after-two-frames") == []
    frame, ours, marks = playout.play()
    assert (frame, ours, marks) == (AUDIO, True, [])
    frame, ours, marks = playout.play()
    assert (frame, ours, marks) == (AUDIO, True, ["after-two-frames"])
    frame, ours, marks = playout.play()
    assert (frame, ours, marks) == (SILENCE, False, [])


def test_partial_frames_are_joined_and_padded():
    playout = Playout()
    playout.media(AUDIO[:100])
    playout.media(AUDIO[100:])
    playout.media(AUDIO[:40])
    assert playout.play()[0] == AUDIO
    frame, ours, _ = playout.play()
    assert ours
    assert frame == AUDIO[:40] + SILENCE[: FRAME_BYTES - 40]


def test_clear_drops_audio_and_echoes_pending_marks():
    playout = Playout()
    playout.media(AUDIO * 5)
    playout.mark("a")
    playout.media(AUDIO)
    playout.mark("b")
    playout.play()
    dropped, marks = playout.clear()
    assert dropped == 5 * FRAME_BYTES
    assert marks == ["a", "b"]
    assert playout.buffered_bytes == 0
    assert playout.play() == (SILENCE, False, [])
