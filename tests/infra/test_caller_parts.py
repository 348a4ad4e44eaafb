"""The simulated caller's Twilio rules, without sockets: TwiML, the playout buffer, and what the
edge may send (each case is a rule on the Twilio page cited in the module under test)."""

import pytest

from infra.caller.edge_messages import Clear, Mark, Media, StreamWarning, read
from infra.caller.playout import FRAME_BYTES, SILENCE, Playout
from infra.caller.twiml import TwimlError, parse

AUDIO = bytes(range(1, 161))
MZ = "MZ" + "a" * 32


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
    assert twiml.stream.status_callback_method == "POST"
    assert twiml.stream.name is None


def test_stream_name_method_and_loopback_ws_for_the_local_stack():
    twiml = parse(
        '<Response><Connect><Stream url="ws://127.0.0.1:8080/media" name="bridge" '
        'statusCallback="http://127.0.0.1:8000/s" statusCallbackMethod="GET"/></Connect></Response>'
    )
    assert twiml.stream.name == "bridge"
    assert twiml.stream.status_callback_method == "GET"
    assert (
        parse(
            '<Response><Connect><Stream url="ws://localhost/media"/></Connect></Response>'
        ).stream.url
        == "ws://localhost/media"
    )


def test_parameter_length_limit_is_under_500_characters():
    ok = "x" * (499 - len("t"))
    twiml = parse(
        f'<Response><Connect><Stream url="wss://x/m"><Parameter name="t" value="{ok}"/>'
        "</Stream></Connect></Response>"
    )
    assert twiml.stream.parameters["t"] == ok


def test_say_hangup_has_no_stream():
    twiml = parse("<Response><Say>Not set up.</Say><Hangup/></Response>")
    assert twiml.stream is None
    assert twiml.say == ["Not set up."]
    assert twiml.hangup


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ('<Response><Connect><Stream url="https://x/media"/></Connect></Response>', "31922"),
        ('<Response><Connect><Stream url="ws://edge.example/m"/></Connect></Response>', "31922"),
        ('<Response><Connect><Stream url="/media"/></Connect></Response>', "31922"),
        (
            '<Response><Connect><Stream url="wss://x/m" statusCallback="/status"/>'
            "</Connect></Response>",
            "absolute URL",
        ),
        (
            '<Response><Connect><Stream url="wss://x/m" statusCallback="https://a/s" '
            'statusCallbackMethod="PUT"/></Connect></Response>',
            "GET or POST",
        ),
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


def test_playout_is_real_time_and_marks_come_back_once_their_audio_has_played():
    playout = Playout()
    assert playout.mark("idle") == ["idle"]  # nothing buffered: echoed at once
    playout.media(AUDIO * 2)
    assert playout.mark("after-two-frames") == []
    assert playout.play() == (AUDIO, True, [])
    # The second frame is handed to the ear now and heard during the next 20 ms: its mark is
    # not echoed until that frame has played.
    assert playout.play() == (AUDIO, True, [])
    assert playout.play() == (SILENCE, False, ["after-two-frames"])
    assert playout.play() == (SILENCE, False, [])


def test_a_mark_inside_a_frame_comes_back_after_that_frame():
    playout = Playout()
    playout.media(AUDIO[:100])
    playout.mark("mid")
    playout.media(AUDIO[100:])
    assert playout.play() == (AUDIO, True, [])
    assert playout.play() == (SILENCE, False, ["mid"])


def test_a_mark_sent_while_the_last_frame_plays_waits_for_it():
    playout = Playout()
    playout.media(AUDIO)
    playout.play()  # the last audio is being heard now; nothing is buffered any more
    assert playout.buffered_bytes == 0
    assert playout.mark("end") == []
    playout.media(AUDIO[:40])  # later audio goes after the mark
    playout.mark("after")
    assert playout.play()[2] == ["end"]
    assert playout.play() == (SILENCE, False, ["after"])
    assert playout.mark("quiet") == ["quiet"]  # silence playing, nothing buffered: at once


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


def test_clear_also_echoes_a_mark_whose_audio_is_still_playing():
    playout = Playout()
    playout.media(AUDIO[:80])
    playout.mark("in-frame")
    playout.media(AUDIO * 3)
    playout.mark("queued")
    playout.play()
    dropped, marks = playout.clear()
    assert marks == ["in-frame", "queued"]  # every pending mark, in order, exactly once
    assert dropped == 3 * FRAME_BYTES - 80
    assert playout.play() == (SILENCE, False, [])


def test_what_the_edge_sends_that_twilio_acts_on():
    assert read(f'{{"event":"media","streamSid":"{MZ}","media":{{"payload":"AQI="}}}}', MZ) == (
        Media(b"\x01\x02")
    )
    assert read(f'{{"event":"mark","streamSid":"{MZ}","mark":{{"name":"m1"}}}}', MZ) == Mark("m1")
    assert read(f'{{"event":"clear","streamSid":"{MZ}"}}', MZ) == Clear()


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        (b"\x00\x01", 31950, "binary"),
        ("not json", 31951, "not valid JSON"),
        ("[1]", 31951, "not a JSON object"),
        (f'{{"event":"stop","streamSid":"{MZ}"}}', 31951, "unsupported event"),
        (f'{{"event":"clear","streamSid":"MZ{"b" * 32}"}}', 31951, "wrong streamSid"),
        (f'{{"event":"clear","streamSid":"{MZ}","clear":{{}}}}', 31951, "fields"),
        (
            f'{{"event":"media","streamSid":"{MZ}","sequenceNumber":"1","media":{{"payload":""}}}}',
            31951,
            "fields",
        ),
        (f'{{"event":"media","streamSid":"{MZ}","media":{{"payload":"!!"}}}}', 31951, "base64"),
        (f'{{"event":"media","streamSid":"{MZ}","media":{{"payload":1}}}}', 31951, "base64"),
        (
            f'{{"event":"media","streamSid":"{MZ}","media":{{"payload":"","track":"outbound"}}}}',
            31951,
            "must hold exactly",
        ),
        (f'{{"event":"mark","streamSid":"{MZ}","mark":{{}}}}', 31951, "must hold exactly"),
        (f'{{"event":"mark","streamSid":"{MZ}","mark":{{"name":7}}}}', 31951, "string"),
        (f'{{"event":"mark","streamSid":"{MZ}"}}', 31951, "fields"),
    ],
)
def test_what_twilio_logs_as_31950_or_31951_and_ignores(message, code, reason):
    with pytest.raises(StreamWarning, match=reason) as caught:
        read(message, MZ)
    assert caught.value.code == code
