"""The call state machine, driven with events and explicit times only (no sockets, no clock)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from websockets.frames import CloseCode

from media_edge.core import Call, CallConfig, State
from media_edge.core.actions import (
    Action,
    ClaimStream,
    CloseTwilio,
    CloseVapi,
    CreateVapiCall,
    EndCallViaTwilio,
    Latency,
    Log,
    Metric,
    Publish,
    SendAudioToVapi,
    SendJsonToVapi,
    SendToTwilio,
)
from media_edge.core.audio import VAD_HANGOVER_MS
from media_edge.core.call import PAUSE_LIMIT_MS
from media_edge.core.events import (
    ClaimOutcome,
    ProtocolViolation,
    Shutdown,
    SocketClosed,
    StreamClaimed,
    Tick,
    VapiAudio,
    VapiConnected,
    VapiConnectFailed,
)
from media_edge.dsp import VadDecision
from media_edge.protocol.twilio import (
    TwilioConnected,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
    TwilioUnknown,
)
from media_edge.protocol.vapi import (
    VapiCallEnded,
    VapiIgnored,
    VapiSpeechUpdate,
    VapiTranscript,
    VapiUserInterrupted,
)
from voicebridge import stream_token, telemetry

SECRET = "s" * 32
ACCOUNT_SID = "AC" + "3" * 32
EPOCH = 1_800_000_000.0  # wall clock at now=0
CALL_SID = "CA" + "1" * 32
STREAM_SID = "MZ" + "2" * 32
ASSISTANT = "asst-123"
FRAME = bytes(range(160))


def token(call_sid: str = CALL_SID, secret: str = SECRET, now: float = EPOCH) -> str:
    return stream_token.mint(secret, call_sid, ASSISTANT, now, 120)


def start_event(tok: str | None = None, call_sid: str = CALL_SID) -> TwilioStart:
    params = {"from": "+14155550100", "to": "+14155550199", "callSid": call_sid}
    params["token"] = token() if tok is None else tok
    return TwilioStart(STREAM_SID, call_sid, ACCOUNT_SID, params)


def start(call: Call, now: float) -> list[Action]:
    """``start`` with a valid token, then the claim granted: the actions of both, in order."""
    actions = call.feed(start_event(), now)
    if of(actions, ClaimStream):
        actions += call.feed(StreamClaimed(ClaimOutcome.CLAIMED), now)
    return actions


def make(**overrides) -> Call:
    config = CallConfig(token_secret=SECRET, account_sid=ACCOUNT_SID, **overrides)
    return Call(config, now=0.0, epoch_offset_s=EPOCH)


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def twilio_messages(actions) -> list[dict]:
    return [json.loads(a.text) for a in of(actions, SendToTwilio)]


def media_payloads(actions) -> list[bytes]:
    return [
        base64.b64decode(m["media"]["payload"])
        for m in twilio_messages(actions)
        if m["event"] == "media"
    ]


def errors(actions) -> list[str]:
    return [a.reason for a in of(actions, Metric) if a.name == telemetry.CALL_ERRORS]


def bridged(**overrides) -> Call:
    call = make(**overrides)
    call.feed(TwilioConnected("Call"), 0.0)
    start(call, 1.0)
    call.feed(VapiConnected("vapi-call-1"), 301.0)
    assert call.state is State.BRIDGING
    return call


def media(ts: int, payload: bytes = FRAME) -> TwilioMedia:
    return TwilioMedia(STREAM_SID, ts, payload)


# -- start and the stream token -------------------------------------------------------------


def test_valid_start_creates_the_vapi_call_with_assistant_format_and_metadata():
    call = make(audio_format="pcm16")
    assert call.feed(TwilioConnected("Call"), 0.0) == []
    actions = start(call, 5.0)
    (create,) = of(actions, CreateVapiCall)
    body = create.body
    assert body["assistantId"] == ASSISTANT
    assert body["transport"] == {
        "provider": "vapi.websocket",
        "audioFormat": {"format": "pcm_s16le", "container": "raw", "sampleRate": 16000},
    }
    metadata = body["assistantOverrides"]["metadata"]
    assert metadata == {
        "callSid": CALL_SID,
        "streamSid": STREAM_SID,
        "from": "+14155550100",
        "to": "+14155550199",
    }
    assert call.state is State.STARTED
    assert call.log_keys == {"callSid": CALL_SID, "streamSid": STREAM_SID}


def test_every_vapi_call_asks_for_the_events_barge_in_needs():
    (create,) = of(start(make(), 0.0), CreateVapiCall)
    asked = create.body["assistantOverrides"]["clientMessages"]
    assert {"speech-update", "user-interrupted", "status-update"} <= set(asked)


def test_mulaw_is_the_default_vapi_format():
    call = make()
    (create,) = of(start(call, 0.0), CreateVapiCall)
    assert create.body["transport"]["audioFormat"] == {
        "format": "mulaw",
        "container": "raw",
        "sampleRate": 8000,
    }


@pytest.mark.parametrize(
    "bad_token",
    [
        "",
        "garbage",
        token(secret="x" * 32),  # forged
        token(now=EPOCH - 500),  # expired
        token(call_sid="CA" + "9" * 32),  # minted for another call
    ],
    ids=["missing", "malformed", "forged", "expired", "other-call"],
)
def test_rejected_token_closes_1008_and_never_creates_a_vapi_call(bad_token):
    call = make()
    actions = call.feed(start_event(bad_token), 0.0)
    assert not of(actions, CreateVapiCall)
    assert [(c.code) for c in of(actions, CloseTwilio)] == [CloseCode.POLICY_VIOLATION]
    assert errors(actions) == ["token_rejected"]
    assert call.closed
    assert call.next_deadline is None


def test_token_expiry_uses_the_injected_clock():
    call = make()
    # 121 s after minting (TTL 120): expired by the machine's own notion of time.
    actions = start(call, 121_000.0)
    assert errors(actions) == ["token_rejected"]


def test_start_from_another_twilio_account_is_refused_without_a_vapi_call():
    call = make()
    other = TwilioStart(STREAM_SID, CALL_SID, "AC" + "4" * 32, start_event().custom_parameters)
    actions = call.feed(other, 0.0)
    assert not of(actions, ClaimStream)
    assert not of(actions, CreateVapiCall)
    assert [c.code for c in of(actions, CloseTwilio)] == [CloseCode.POLICY_VIOLATION]
    assert errors(actions) == ["wrong_account"]


def test_a_valid_start_claims_the_stream_before_anything_reaches_vapi():
    call = make()
    actions = call.feed(start_event(), 0.0)
    assert of(actions, ClaimStream) == [ClaimStream(CALL_SID, STREAM_SID)]
    assert not of(actions, CreateVapiCall)
    held = call.feed(media(0), 20.0)  # the caller's audio is held while we claim
    assert not of(held, SendAudioToVapi)
    assert call.feed(VapiConnected("not yet"), 30.0) == [CloseVapi()]  # no call before the claim
    (create,) = of(call.feed(StreamClaimed(ClaimOutcome.CLAIMED), 40.0), CreateVapiCall)
    assert create.body["assistantId"] == ASSISTANT
    sent = of(call.feed(VapiConnected("v"), 300.0), SendAudioToVapi)
    assert [a.data for a in sent] == [FRAME]


def test_a_stream_whose_call_is_already_claimed_ends_without_vapi_or_rest():
    call = make()
    call.feed(start_event(), 0.0)
    actions = call.feed(StreamClaimed(ClaimOutcome.ALREADY_CLAIMED), 10.0)
    assert not of(actions, CreateVapiCall)
    assert not of(actions, EndCallViaTwilio)  # the REST update would hit the real call
    assert [c.code for c in of(actions, CloseTwilio)] == [CloseCode.POLICY_VIOLATION]
    assert errors(actions) == ["stream_already_claimed"]
    assert call.closed


def test_a_full_edge_apologises_to_a_valid_stream_through_rest():
    call = make(fallback_number="+14155550123")
    call.feed(start_event(), 0.0)
    actions = call.feed(StreamClaimed(ClaimOutcome.NO_CAPACITY), 10.0)
    assert not of(actions, CreateVapiCall)
    (end,) = of(actions, EndCallViaTwilio)
    assert end.twiml == "<Response><Dial>+14155550123</Dial></Response>"
    assert [c.code for c in of(actions, CloseTwilio)] == [CloseCode.TRY_AGAIN_LATER]
    assert errors(actions) == ["no_capacity"]


def test_claim_store_down_fails_open_with_an_error_log_and_a_metric():
    call = make()
    call.feed(start_event(), 0.0)
    actions = call.feed(StreamClaimed(ClaimOutcome.CLAIMED_LOCALLY, "EndpointConnectionError"), 9.0)
    assert of(actions, CreateVapiCall)
    (log,) = [a for a in of(actions, Log) if a.level == "error"]
    assert log.fields == {"detail": "EndpointConnectionError"}
    assert [(m.name, m.value) for m in of(actions, Metric)] == [(telemetry.CLAIM_STORE_ERRORS, 1)]
    assert errors(actions) == []


def test_duplicate_start_ends_the_call():
    call = bridged()
    actions = start(call, 400.0)
    assert errors(actions) == ["duplicate_start"]
    assert of(actions, SendJsonToVapi)[0].message == {"type": "end-call"}


@pytest.mark.parametrize(
    "event",
    [media(0), TwilioMark(STREAM_SID, "m1"), TwilioDtmf(STREAM_SID, "1"), TwilioStop(STREAM_SID)],
    ids=["media", "mark", "dtmf", "stop"],
)
def test_events_before_start_end_the_call(event):
    call = make()
    actions = call.feed(event, 0.0)
    assert errors(actions) == ["event_before_start"]
    assert of(actions, CloseTwilio)[0].code == CloseCode.POLICY_VIOLATION
    assert call.closed


def test_unknown_twilio_events_are_counted_logged_once_and_ignored():
    call = make()
    assert of(call.feed(TwilioUnknown("hello"), 0.0), Log)  # even before start: not fatal
    start(call, 1.0)
    call.feed(VapiConnected("vapi-call-1"), 301.0)
    actions = []
    for i in range(3):
        actions += call.feed(TwilioUnknown("transcription"), 400.0 + i)
    counted = [a.value for a in of(actions, Metric) if a.name == telemetry.UNKNOWN_TWILIO_EVENTS]
    assert counted == [1, 1, 1]
    assert not of(actions, Log)  # one line per call, not per message
    assert errors(actions) == []
    assert not of(actions, CloseTwilio)
    assert call.state is State.BRIDGING
    assert of(call.feed(media(0), 500.0), SendAudioToVapi)  # the call goes on


def test_unknown_twilio_events_still_count_towards_the_flood_limit():
    call = bridged(max_twilio_messages_per_s=100, twilio_burst_messages=5)
    actions = []
    for _ in range(10):
        actions += call.feed(TwilioUnknown("spam"), 400.0)
    assert errors(actions) == ["flood"]


def test_second_connected_is_a_violation():
    call = bridged()
    assert errors(call.feed(TwilioConnected("Call"), 400.0)) == ["unexpected_connected"]


# -- inbound audio ----------------------------------------------------------------------------


def connecting(**overrides) -> Call:
    call = make(**overrides)
    call.feed(TwilioConnected("Call"), 0.0)
    start(call, 1.0)
    assert call.state is State.STARTED
    return call


def numbered(i: int) -> bytes:
    return bytes([i % 250]) * 160


def test_media_while_vapi_connects_is_held_then_sent_in_order_before_new_frames():
    call = connecting()
    for i in range(10):
        assert not of(call.feed(media(i * 20, numbered(i)), 20.0 + i * 20), SendAudioToVapi)
    actions = call.feed(VapiConnected("v"), 230.0)
    assert [a.data for a in of(actions, SendAudioToVapi)] == [numbered(i) for i in range(10)]
    (log,) = [a for a in of(actions, Log) if a.message == "vapi connected"]
    assert log.fields["heldMs"] == 200
    # The next frame is live and follows the held ones without a gap or a repeat.
    actions = call.feed(media(200, numbered(10)), 240.0)
    assert [a.data for a in of(actions, SendAudioToVapi)] == [numbered(10)]
    assert call.frames_in == 11
    assert call.frames_dropped == 0


def test_held_audio_keeps_gap_filling_and_drops_duplicates():
    call = connecting()
    call.feed(media(0, numbered(0)), 20.0)
    call.feed(media(60, numbered(3)), 80.0)  # 20 and 40 lost
    dup = call.feed(media(60, numbered(3)), 81.0)
    assert [(m.name, m.value) for m in of(dup, Metric)] == [(telemetry.FRAMES_DROPPED, 1)]
    sent = of(call.feed(VapiConnected("v"), 100.0), SendAudioToVapi)
    assert b"".join(a.data for a in sent) == numbered(0) + b"\xff" * 320 + numbered(3)


def test_hold_is_bounded_to_the_most_recent_audio_and_overflow_is_counted():
    call = connecting(connect_hold_ms=100)  # 5 frames
    dropped = []
    for i in range(8):
        actions = call.feed(media(i * 20, numbered(i)), 20.0 + i * 20)
        dropped += [m.value for m in of(actions, Metric) if m.name == telemetry.FRAMES_DROPPED]
    assert dropped == [1, 1, 1]  # frames 0, 1, 2 fell off as 5, 6, 7 arrived
    assert call.frames_dropped == 3
    sent = of(call.feed(VapiConnected("v"), 200.0), SendAudioToVapi)
    assert [a.data for a in sent] == [numbered(i) for i in range(3, 8)]


def test_hold_bound_counts_frames_in_pcm16_too():
    call = connecting(audio_format="pcm16", connect_hold_ms=60)
    for i in range(5):
        call.feed(media(i * 20, numbered(i)), 20.0 + i * 20)
    assert call.frames_dropped == 2
    sent = of(call.feed(VapiConnected("v"), 200.0), SendAudioToVapi)
    assert [len(a.data) for a in sent] == [640, 640, 640]  # 3 x 20 ms at 16 kHz


def test_holding_can_be_switched_off():
    call = connecting(connect_hold_ms=0)
    actions = call.feed(media(0), 20.0)
    assert [(m.name, m.value) for m in of(actions, Metric)] == [(telemetry.FRAMES_DROPPED, 1)]
    assert not of(call.feed(VapiConnected("v"), 100.0), SendAudioToVapi)


def test_nothing_is_held_after_a_failed_connect_and_a_late_socket_gets_nothing():
    call = connecting()
    call.feed(media(0), 20.0)
    call.feed(VapiConnectFailed("timeout"), 3000.0)
    assert call.closed
    assert call._held is None  # freed at teardown, not when the task ends
    assert call.feed(media(20), 3001.0) == []
    assert call.feed(VapiConnected("late"), 3500.0) == [CloseVapi()]


def test_held_audio_is_freed_when_the_caller_hangs_up_while_connecting():
    call = connecting()
    call.feed(media(0), 20.0)
    actions = call.feed(TwilioStop(STREAM_SID), 40.0)
    assert not of(actions, SendAudioToVapi)
    assert call._held is None
    assert call.feed(VapiConnected("late"), 100.0) == [CloseVapi()]


def test_each_inbound_frame_is_forwarded_at_once_unchanged_in_mulaw():
    call = bridged()
    for i in range(5):
        payload = bytes([i]) * 160
        actions = call.feed(media(i * 20, payload), 400.0 + i * 20)
        assert [a.data for a in of(actions, SendAudioToVapi)] == [payload]


def test_timestamp_gap_is_filled_with_silence_in_the_same_frame():
    call = bridged()
    call.feed(media(0), 400.0)
    actions = call.feed(media(60), 460.0)  # 20 and 40 missing
    (sent,) = of(actions, SendAudioToVapi)
    assert sent.data == b"\xff" * 320 + FRAME
    assert [(m.name, m.value) for m in of(actions, Metric)] == [(telemetry.FRAMES_FILLED, 2)]
    assert call.frames_filled == 2


def test_duplicate_frame_is_dropped_and_counted():
    call = bridged()
    call.feed(media(0), 400.0)
    call.feed(media(20), 420.0)
    actions = call.feed(media(20), 421.0)
    assert not of(actions, SendAudioToVapi)
    assert [(m.name, m.value) for m in of(actions, Metric)] == [(telemetry.FRAMES_DROPPED, 1)]


def test_pcm16_inbound_is_decoded_and_upsampled():
    call = bridged(audio_format="pcm16")
    (sent,) = of(call.feed(media(0, b"\xff" * 160), 400.0), SendAudioToVapi)
    assert len(sent.data) == 640  # 320 samples at 16 kHz, 2 bytes each
    assert not np.frombuffer(sent.data, "<i2").any()  # mu-law silence decodes to zero


def test_wrong_stream_sid_ends_only_with_a_reason():
    call = bridged()
    actions = call.feed(TwilioMedia("MZ" + "0" * 32, 0, FRAME), 400.0)
    assert errors(actions) == ["wrong_stream_sid"]
    assert of(actions, SendJsonToVapi)[0].message == {"type": "end-call"}
    assert of(actions, CloseVapi)
    assert of(actions, CloseTwilio)[0].code == CloseCode.POLICY_VIOLATION


def test_message_flood_ends_the_call():
    call = bridged(max_twilio_messages_per_s=100, twilio_burst_messages=50)
    actions: list = []
    for i in range(60):
        actions += call.feed(media(i * 20), 400.0 + i)  # 60 messages in 60 ms
    assert errors(actions) == ["flood"]
    assert call.closed


def test_sustained_flood_ends_the_call_after_the_burst_allowance():
    call = bridged(max_twilio_messages_per_s=100, twilio_burst_messages=50)
    actions: list = []
    for i in range(400):  # 200 messages/s against a limit of 100/s
        actions += call.feed(media(i * 20), 400.0 + i * 5)
    assert errors(actions) == ["flood"]


def test_normal_rate_and_a_catch_up_burst_are_not_a_flood():
    call = bridged(max_twilio_messages_per_s=100, twilio_burst_messages=200)
    for i in range(300):  # 50/s for 6 s
        call.feed(media(i * 20), 400.0 + i * 20)
    for i in range(300, 450):  # then 3 s of frames Twilio held back, all at once
        call.feed(media(i * 20), 6400.0)
    assert call.state is State.BRIDGING


# -- outbound audio: framing, pacing, marks ----------------------------------------------------


def assistant_audio(frames: int) -> bytes:
    return b"".join(bytes([i % 200]) * 160 for i in range(frames))


def run_clock(call: Call, until: float, start: float) -> list:
    """Advance time the way the shell does: a Tick at every deadline the machine asks for."""
    actions = []
    now = start
    while True:
        deadline = call.next_deadline
        if deadline is None or deadline > until:
            return actions
        now = max(now, deadline)
        actions += call.feed(Tick(), now)


def test_first_audio_goes_out_immediately_up_to_the_lead():
    call = bridged(lead_ms=100)
    actions = call.feed(VapiAudio(assistant_audio(50)), 1000.0)
    payloads = media_payloads(actions)
    assert [len(p) for p in payloads] == [800]  # 5 frames = 100 ms lead in one message
    assert payloads[0] == assistant_audio(5)
    (first,) = [a for a in of(actions, Latency) if a.name == telemetry.FIRST_AUDIO_LATENCY]
    assert first.since_ms == 1.0  # the stream's start


def test_pacing_never_exceeds_the_lead_and_delivers_everything_in_order():
    lead = 100
    call = bridged(lead_ms=lead)
    audio = assistant_audio(50)
    sent = media_payloads(call.feed(VapiAudio(audio), 1000.0))
    now = 1000.0
    while call.next_deadline is not None and call.next_deadline < 3000.0:
        now = max(now, call.next_deadline)
        sent += media_payloads(call.feed(Tick(), now))
        played = max(0.0, now - 1000.0)
        assert sum(len(p) for p in sent) / 8 <= played + lead  # ms sent <= ms played + lead
    assert b"".join(sent) == audio
    assert call.state is State.BRIDGING  # idle/max deadlines are far away


def test_inbound_media_drives_pacing_so_no_timer_is_needed_while_the_caller_streams():
    call = bridged(lead_ms=100)
    call.feed(VapiAudio(assistant_audio(50)), 1000.0)
    sent = 5
    for i in range(1, 20):
        now = 1000.0 + i * 20
        payloads = media_payloads(call.feed(media(i * 20), now))
        assert all(len(p) == 320 for p in payloads)  # 40 ms per message: half the messages
        sent += sum(len(p) for p in payloads) // 160
        assert call.next_deadline > now  # the timer stays ahead: inbound frames did the work
        buffered_at_twilio = sent * 20 - (now - 1000.0)
        assert 60 <= buffered_at_twilio <= 100  # shallow, and never starved


def test_odd_sized_chunks_are_reframed_and_the_tail_flushed_when_playout_runs_dry():
    call = bridged(lead_ms=60)
    sent = media_payloads(call.feed(VapiAudio(b"\x01" * 100), 1000.0))
    assert sent == []  # less than a frame: wait for more
    sent += media_payloads(call.feed(VapiAudio(b"\x01" * 250), 1001.0))  # 350 B = 2 frames + 30
    assert [len(p) for p in sent] == [320]
    sent += media_payloads(run_clock(call, 2000.0, 1001.0))
    tail = b"".join(sent)[320:]
    assert tail == b"\x01" * 30 + b"\xff" * 130  # padded with silence, not held back


def test_marks_track_what_played():
    call = bridged(lead_ms=100)
    actions = call.feed(VapiAudio(assistant_audio(12)), 1000.0)
    actions += run_clock(call, 2000.0, 1000.0)
    marks = [m["mark"]["name"] for m in twilio_messages(actions) if m["event"] == "mark"]
    assert len(marks) >= 2  # one every 10 frames and one when the queue empties
    for name in marks:
        call.feed(TwilioMark(STREAM_SID, name), 1500.0)
    assert call._playout.frames_played == 12
    assert not call._playout.pending


def test_audio_streamed_in_real_time_costs_few_marks():
    """Vapi sending exactly one frame per 20 ms empties our queue after every frame: that must
    not cost a mark per frame (a message out and one back)."""
    call = bridged(lead_ms=100)
    messages: list = []
    now = 1000.0
    for i in range(100):  # 2 s of assistant audio, one frame at a time, caller silent
        now = 1000.0 + i * 20
        messages += twilio_messages(run_clock(call, now, now - 20))
        messages += twilio_messages(call.feed(VapiAudio(assistant_audio(1)), now))
    messages += twilio_messages(run_clock(call, now + 1000, now))
    media_sizes = [
        len(base64.b64decode(m["media"]["payload"])) for m in messages if m["event"] == "media"
    ]
    marks = [m["mark"]["name"] for m in messages if m["event"] == "mark"]
    assert sum(media_sizes) == 100 * 160  # everything went out
    assert len(marks) <= 100 // 10 + 2  # one per 10 frames and one at the end
    for name in marks:
        call.feed(TwilioMark(STREAM_SID, name), now + 2000)
    assert call._playout.frames_played == 100
    assert not call._playout.pending


def test_pcm16_outbound_is_downsampled_and_encoded_to_mulaw_frames():
    call = bridged(audio_format="pcm16", lead_ms=100)
    silence = np.zeros(320 * 5, dtype="<i2").tobytes()  # 100 ms at 16 kHz
    payloads = media_payloads(call.feed(VapiAudio(silence), 1000.0))
    assert [len(p) for p in payloads] == [800]
    assert set(b"".join(payloads)) == {0xFF}


def test_pcm16_odd_byte_chunks_are_carried():
    call = bridged(audio_format="pcm16", lead_ms=100)
    data = np.zeros(320, dtype="<i2").tobytes()  # one 20 ms frame at 16 kHz
    sent = media_payloads(call.feed(VapiAudio(data[:333]), 1000.0))
    sent += media_payloads(call.feed(VapiAudio(data[333:]), 1000.0))
    assert [len(p) for p in sent] == [160]


# -- barge-in ---------------------------------------------------------------------------------


def test_user_interrupted_clears_at_once_and_drops_the_queue():
    call = bridged(lead_ms=100)
    first = call.feed(VapiAudio(assistant_audio(100)), 1000.0)
    marks = [m["mark"]["name"] for m in twilio_messages(first) if m["event"] == "mark"]
    actions = call.feed(VapiUserInterrupted(), 1010.0)
    assert twilio_messages(actions) == [{"event": "clear", "streamSid": STREAM_SID}]
    (latency,) = of(actions, Latency)
    assert (latency.name, latency.since_ms) == (telemetry.BARGE_IN_LATENCY, 1010.0)
    assert call.next_deadline > 5000.0  # nothing left to pace
    assert media_payloads(run_clock(call, 3000.0, 1010.0)) == []
    for name in marks:  # Twilio echoes the cleared marks: they did not play
        call.feed(TwilioMark(STREAM_SID, name), 1020.0)
    assert call._playout.frames_played == 0
    assert call._playout.frames_cleared == 100
    # New assistant audio after the interruption plays normally.
    assert media_payloads(call.feed(VapiAudio(assistant_audio(2)), 1100.0)) == [assistant_audio(2)]


def play_until(call: Call, until: float, now: float) -> tuple[list[bytes], list]:
    """Run the clock and echo every mark at once (Twilio with nothing to wait for): the media
    sent and all actions."""
    actions = run_clock(call, until, now)
    for m in twilio_messages(actions):
        if m["event"] == "mark":
            actions += call.feed(TwilioMark(STREAM_SID, m["mark"]["name"]), until)
    return media_payloads(actions), actions


def test_caller_sound_pauses_playout_without_clearing():
    call = bridged(lead_ms=100)
    sent = media_payloads(call.feed(VapiAudio(assistant_audio(100)), 1000.0))
    sent += play_until(call, 1200.0, 1000.0)[0]
    actions = call.feed(VapiSpeechUpdate("user", "started"), 1200.0)
    messages = twilio_messages(actions)
    assert {"event": "clear", "streamSid": STREAM_SID} not in messages
    assert [m["event"] for m in messages] == ["mark"]  # what Twilio still plays is accounted
    assert not of(actions, Latency)  # BargeInLatency is user-interrupted -> clear only
    # Paused: no media goes out, whatever drives the clock, while Vapi decides.
    for i in range(20):
        assert media_payloads(call.feed(media(i * 20), 1200.0 + i * 20)) == []
    assert media_payloads(call.feed(VapiAudio(assistant_audio(10)), 1500.0)) == []
    assert call.next_deadline >= 1600.0  # no pacing timer while paused


def test_backchannel_costs_no_assistant_audio():
    """speech-update (user) started then stopped with no user-interrupted: a "mm-hmm". Every
    frame of the reply reaches Twilio, in order, nothing cleared."""
    call = bridged(lead_ms=100)
    reply = assistant_audio(150)  # 3 s
    sent = media_payloads(call.feed(VapiAudio(reply[:16000]), 1000.0))
    sent += play_until(call, 1500.0, 1000.0)[0]
    call.feed(VapiSpeechUpdate("user", "started"), 1500.0)
    call.feed(VapiAudio(reply[16000:]), 1600.0)  # Vapi keeps speaking during the "mm-hmm"
    sent += play_until(call, 1900.0, 1500.0)[0]
    resumed = call.feed(VapiSpeechUpdate("user", "stopped"), 1900.0)
    assert [len(p) for p in media_payloads(resumed)] == [800]  # refills the lead at once
    assert any(log.message == "barge-in: playout resumed" for log in of(resumed, Log))
    sent += media_payloads(resumed) + play_until(call, 6000.0, 1900.0)[0]
    assert b"".join(sent) == reply
    assert call._playout.frames_cleared == 0
    assert call._playout.frames_played == 150
    assert not call._playout.pending


def test_interruption_after_a_pause_drops_what_is_held_and_clears():
    call = bridged(lead_ms=100)
    sent = media_payloads(call.feed(VapiAudio(assistant_audio(100)), 1000.0))
    sent += play_until(call, 1200.0, 1000.0)[0]
    (pause_mark,) = twilio_messages(call.feed(VapiSpeechUpdate("user", "started"), 1200.0))
    assert play_until(call, 1500.0, 1200.0)[0] == []  # Twilio's lead drains meanwhile...
    call.feed(TwilioMark(STREAM_SID, pause_mark["mark"]["name"]), 1300.0)  # ...and says so
    actions = call.feed(VapiUserInterrupted(), 1500.0)
    assert twilio_messages(actions) == [{"event": "clear", "streamSid": STREAM_SID}]
    (latency,) = of(actions, Latency)
    assert (latency.name, latency.since_ms) == (telemetry.BARGE_IN_LATENCY, 1500.0)
    played = sum(len(p) for p in sent) // 160
    assert call._playout.frames_played == played  # the marks at the pause accounted for them
    assert call._playout.frames_cleared == 100 - played
    # No stale audio: the speech-update "stopped" that follows does not bring any back...
    assert media_payloads(call.feed(VapiSpeechUpdate("user", "stopped"), 1600.0)) == []
    assert media_payloads(run_clock(call, 4000.0, 1600.0)) == []
    # ...and the next reply plays at once.
    assert media_payloads(call.feed(VapiAudio(assistant_audio(2)), 4000.0)) == [assistant_audio(2)]


def test_a_pause_without_a_verdict_resumes_after_the_limit():
    call = bridged(lead_ms=100)
    reply = assistant_audio(100)
    sent = media_payloads(call.feed(VapiAudio(reply), 1000.0))
    call.feed(VapiSpeechUpdate("user", "started"), 1010.0)
    assert call.next_deadline == 1010.0 + PAUSE_LIMIT_MS  # the shell's timer resumes it
    assert play_until(call, 1010.0 + PAUSE_LIMIT_MS - 1, 1010.0)[0] == []
    resumed, actions = play_until(call, 10_000.0, 1010.0)
    assert any(log.fields.get("why") == "limit" for log in of(actions, Log))
    assert b"".join(sent + resumed) == reply


def test_a_second_caller_sound_extends_the_pause():
    call = bridged(lead_ms=100)
    call.feed(VapiAudio(assistant_audio(100)), 1000.0)
    call.feed(VapiSpeechUpdate("user", "started"), 1010.0)
    call.feed(VapiSpeechUpdate("user", "started"), 2000.0)
    assert call.next_deadline == 2000.0 + PAUSE_LIMIT_MS


def test_vapi_ending_during_a_pause_plays_the_last_words():
    call = bridged(lead_ms=100)
    reply = assistant_audio(30)
    sent = media_payloads(call.feed(VapiAudio(reply), 1000.0))
    call.feed(VapiSpeechUpdate("user", "started"), 1010.0)
    sent += media_payloads(call.feed(VapiCallEnded("assistant-ended-call"), 1100.0))
    more, actions = play_until(call, 2000.0, 1100.0)
    assert b"".join(sent + more) == reply
    assert [a.code for a in of(actions, CloseTwilio)] == [1000]


def test_a_caller_turn_with_nothing_playing_pauses_nothing_audible():
    """The caller talks with the assistant silent, then Vapi replies after "stopped": the reply
    goes out at once and is a response (ResponseLatency), not a resumed pause."""
    call = bridged(lead_ms=100)
    started = call.feed(VapiSpeechUpdate("user", "started"), 1000.0)
    # nothing to Twilio, no pause: only the turn's own line for the operator
    assert [a for a in started if not isinstance(a, Publish)] == [Log("info", "caller speaking")]
    call.feed(VapiSpeechUpdate("user", "stopped"), 2000.0)
    reply = call.feed(VapiAudio(assistant_audio(5)), 2300.0)
    assert media_payloads(reply) == [assistant_audio(5)]


def test_no_clear_when_nothing_is_playing():
    call = bridged()
    (published,) = call.feed(VapiUserInterrupted(), 1000.0)  # shown, but nothing cleared
    assert published == Publish("interrupted", {"at": 999, "cleared": False})
    actions = call.feed(VapiAudio(assistant_audio(2)), 1000.0)
    actions += run_clock(call, 2000.0, 1000.0)
    for m in twilio_messages(actions):
        if m["event"] == "mark":
            call.feed(TwilioMark(STREAM_SID, m["mark"]["name"]), 1100.0)
    assert of(call.feed(VapiUserInterrupted(), 1200.0), SendToTwilio) == []


def test_assistant_speech_update_is_not_an_interruption():
    call = bridged()
    call.feed(VapiAudio(assistant_audio(20)), 1000.0)
    assert of(call.feed(VapiSpeechUpdate("assistant", "started"), 1001.0), SendToTwilio) == []
    assert of(call.feed(VapiSpeechUpdate("user", "stopped"), 1001.0), SendToTwilio) == []
    assert call.next_deadline < 1100.0  # still pacing: nothing paused it


def decision(speech: bool, onset: bool, offset: bool, level_dbfs: float) -> VadDecision:
    """A VAD decision as the DSP's VAD returns it (``active`` is not read by the machine)."""
    return VadDecision(speech, onset, offset, level_dbfs, speech)


class ScriptedVad:
    """Stands in for the DSP VAD: returns the decisions a test scripts, frame by frame."""

    def __init__(self) -> None:
        self.script: list[VadDecision] = []

    def process_ulaw(self, data: bytes) -> VadDecision:
        if self.script:
            return self.script.pop(0)
        return decision(False, False, False, -80.0)


def speech(level: float = -20.0, onset: bool = False) -> VadDecision:
    return decision(True, onset, False, level)


def test_response_latency_runs_from_speech_end_to_first_reply_audio():
    vad = ScriptedVad()
    call = make()
    call._vad_factory = lambda: vad
    start(call, 0.0)
    call.feed(VapiConnected("v"), 100.0)
    vad.script = [speech(onset=True), speech(), decision(False, False, True, -70.0)]
    for i in range(3):
        call.feed(media(i * 20), 1000.0 + i * 20)
    actions = call.feed(VapiAudio(assistant_audio(5)), 1500.0)
    (response,) = [a for a in of(actions, Latency) if a.name == telemetry.RESPONSE_LATENCY]
    assert response.since_ms == 1040.0 - VAD_HANGOVER_MS  # offset time minus the hangover


@pytest.mark.parametrize(
    ("enabled", "level", "paused"),
    [(True, -20.0, True), (False, -20.0, False), (True, -45.0, False)],
    ids=["loud-speech", "disabled", "echo-level"],
)
def test_local_vad_barge_in_is_optional_echo_gated_and_only_pauses(enabled, level, paused):
    """Our VAD cannot tell "mm-hmm" from "stop": 200 ms of loud speech over the assistant pauses
    playout (as Vapi's speech-update does); only Vapi's user-interrupted drops audio."""
    vad = ScriptedVad()
    call = make(local_barge_in=enabled, lead_ms=100)
    call._vad_factory = lambda: vad
    start(call, 0.0)
    call.feed(VapiConnected("v"), 100.0)
    call.feed(VapiAudio(assistant_audio(200)), 1000.0)
    vad.script = [speech(level) for _ in range(20)]
    sent = [twilio_messages(call.feed(media(i * 20), 1000.0 + i * 20)) for i in range(20)]
    assert all(m["event"] != "clear" for frame in sent for m in frame)
    media_after = [m for frame in sent[10:] for m in frame if m["event"] == "media"]
    assert (media_after == []) is paused
    if paused:  # Vapi heard no interruption ("stopped"): everything still plays
        assert media_payloads(call.feed(VapiSpeechUpdate("user", "stopped"), 1400.0))
        assert call._playout.frames_cleared == 0


# -- DTMF ---------------------------------------------------------------------------------------


def test_dtmf_becomes_an_add_message():
    call = bridged()
    (sent,) = of(call.feed(TwilioDtmf(STREAM_SID, "7"), 500.0), SendJsonToVapi)
    assert sent.message["type"] == "add-message"
    assert "7" in sent.message["message"]["content"]
    logs = of(call.feed(TwilioDtmf(STREAM_SID, "8"), 501.0), Log)
    assert all("8" not in str(log.fields) for log in logs)  # digits may be card numbers


def test_dtmf_forwarding_can_be_disabled():
    call = bridged(dtmf_to_vapi=False)
    assert not of(call.feed(TwilioDtmf(STREAM_SID, "7"), 500.0), SendJsonToVapi)


def test_dtmf_pressed_while_vapi_connects_follows_the_held_audio_in_order():
    call = make()
    call.feed(TwilioConnected("Call"), 0.0)
    start(call, 1.0)
    call.feed(media(0), 20.0)
    assert call.feed(TwilioDtmf(STREAM_SID, "4"), 30.0) == []  # nothing to send it to yet
    call.feed(TwilioDtmf(STREAM_SID, "2"), 40.0)
    actions = call.feed(VapiConnected("vapi-call-1"), 300.0)
    kinds = [type(a) for a in actions if isinstance(a, (SendAudioToVapi, SendJsonToVapi))]
    assert kinds == [SendAudioToVapi, SendJsonToVapi, SendJsonToVapi]
    digits = [a.message["message"]["content"] for a in of(actions, SendJsonToVapi)]
    assert "4" in digits[0]
    assert "2" in digits[1]
    (later,) = of(call.feed(TwilioDtmf(STREAM_SID, "9"), 400.0), SendJsonToVapi)  # now live
    assert "9" in later.message["message"]["content"]


def test_dtmf_held_while_connecting_is_bounded_and_dropped_if_vapi_never_comes():
    call = make()
    start(call, 1.0)
    logs = []
    for i in range(40):
        logs += of(call.feed(TwilioDtmf(STREAM_SID, "1"), 10.0 + i), Log)
    assert len([log for log in logs if "too many" in log.message]) == 8
    actions = call.feed(VapiConnected("vapi-call-1"), 300.0)
    assert len(of(actions, SendJsonToVapi)) == 32


# -- teardown paths -------------------------------------------------------------------------


def test_stop_ends_vapi_and_closes_twilio_once():
    call = bridged()
    actions = call.feed(TwilioStop(STREAM_SID), 900.0)
    assert [a.message for a in of(actions, SendJsonToVapi)] == [{"type": "end-call"}]
    assert len(of(actions, CloseVapi)) == 1
    assert [a.code for a in of(actions, CloseTwilio)] == [CloseCode.NORMAL_CLOSURE]
    assert errors(actions) == []
    assert call.closed
    assert call.end_reason == "twilio_stop"
    for event in (TwilioStop(STREAM_SID), SocketClosed("twilio"), SocketClosed("vapi"), Tick()):
        assert call.feed(event, 1000.0) == []  # idempotent


def test_twilio_socket_close_ends_vapi_without_closing_twilio_again():
    call = bridged()
    actions = call.feed(SocketClosed("twilio", CloseCode.ABNORMAL_CLOSURE), 900.0)
    assert [a.message for a in of(actions, SendJsonToVapi)] == [{"type": "end-call"}]
    assert of(actions, CloseVapi)
    assert not of(actions, CloseTwilio)
    assert call.closed


def test_vapi_end_lets_the_last_words_play_then_hangs_up():
    call = bridged(lead_ms=100)
    call.feed(VapiAudio(assistant_audio(20)), 1000.0)
    actions = call.feed(VapiCallEnded("assistant-ended-call"), 1001.0)
    assert of(actions, CloseVapi)
    assert not of(actions, SendJsonToVapi)  # Vapi ended it: no end-call back
    assert not of(actions, CloseTwilio)
    assert call.state is State.ENDING
    assert not of(call.feed(media(0), 1002.0), SendAudioToVapi)  # nobody listens any more
    actions = run_clock(call, 1400.0, 1002.0)  # 400 ms of goodbye: done by ~1400
    assert sum(len(p) for p in media_payloads(actions)) == 15 * 160  # the rest of the goodbye
    marks = [m["mark"]["name"] for m in twilio_messages(actions) if m["event"] == "mark"]
    assert not of(actions, CloseTwilio)  # waits for Twilio to confirm playback...
    final = []
    for name in marks:
        final += call.feed(TwilioMark(STREAM_SID, name), 1500.0)
    assert [a.code for a in of(final, CloseTwilio)] == [
        CloseCode.NORMAL_CLOSURE
    ]  # ...then hangs up
    assert call.closed
    assert errors(final) == []


def test_vapi_end_hangs_up_after_a_grace_even_without_marks():
    call = bridged()
    call.feed(VapiAudio(assistant_audio(5)), 1000.0)
    call.feed(VapiCallEnded("x"), 1001.0)
    actions = run_clock(call, 10_000.0, 1001.0)
    assert of(actions, CloseTwilio)
    assert call.closed


def test_vapi_end_with_nothing_playing_hangs_up_at_once():
    call = bridged()
    actions = call.feed(VapiCallEnded("customer-ended-call"), 1000.0)
    assert [a.code for a in of(actions, CloseTwilio)] == [CloseCode.NORMAL_CLOSURE]
    assert call.closed


def apologised(actions) -> EndCallViaTwilio:
    """The connect-failure way out: REST update first, then the stream closes 1011."""
    (end,) = of(actions, EndCallViaTwilio)
    assert end.call_sid == CALL_SID
    kinds = [type(a) for a in actions]
    assert kinds.index(EndCallViaTwilio) < kinds.index(CloseTwilio)
    assert [a.code for a in of(actions, CloseTwilio)] == [CloseCode.INTERNAL_ERROR]
    return end


@pytest.mark.parametrize(
    "code",
    [CloseCode.ABNORMAL_CLOSURE, CloseCode.INTERNAL_ERROR, CloseCode.GOING_AWAY, None],
)
def test_vapi_drop_mid_call_apologises_through_twilio_rest(code):
    call = bridged()
    actions = call.feed(SocketClosed("vapi", code), 1000.0)
    end = apologised(actions)
    assert "<Say>" in end.twiml
    assert "<Hangup/>" in end.twiml
    assert not of(actions, SendJsonToVapi)  # the socket is gone: no end-call into it
    assert errors(actions) == ["vapi_dropped"]
    assert call.closed
    assert call.end_reason == "vapi_dropped"


def test_real_time_assistant_audio_is_marked_every_200_ms_not_every_frame():
    call = bridged(lead_ms=100)
    actions = []
    for i in range(50):  # Vapi streams 1 s of speech in real time, one 20 ms chunk at a time
        now = 1000.0 + i * 20
        actions += call.feed(VapiAudio(assistant_audio(1)), now)
        actions += run_clock(call, now + 19.9, now)
    kinds = [m["event"] for m in twilio_messages(actions)]
    assert kinds.count("media") == 50
    assert kinds.count("mark") == 5  # one per 10 frames while the stream flows
    actions = run_clock(call, 2100.0, 1980.0)  # the stream stops: the trailing mark goes out
    assert [m["event"] for m in twilio_messages(actions)] == []  # 50 frames: 5 marks covered all
    call.feed(VapiAudio(assistant_audio(3)), 2100.0)
    actions = run_clock(call, 2200.0, 2100.0)
    assert [m["event"] for m in twilio_messages(actions)] == ["mark"]  # the 3-frame tail's end


def test_vapi_drop_dials_the_fallback_number():
    call = bridged(fallback_number="+14155550123")
    end = apologised(call.feed(SocketClosed("vapi", CloseCode.ABNORMAL_CLOSURE), 1000.0))
    assert end.twiml == "<Response><Dial>+14155550123</Dial></Response>"


def test_vapi_drop_lets_queued_words_play_then_apologises_counted_once():
    call = bridged(lead_ms=100)
    call.feed(VapiAudio(assistant_audio(20)), 1000.0)
    actions = call.feed(SocketClosed("vapi", CloseCode.ABNORMAL_CLOSURE), 1001.0)
    assert errors(actions) == ["vapi_dropped"]  # counted now, under its own reason
    assert not of(actions, EndCallViaTwilio)  # the REST update would cut Twilio's buffer
    assert not of(actions, CloseTwilio)
    assert call.state is State.ENDING
    actions = run_clock(call, 1400.0, 1001.0)
    assert sum(len(p) for p in media_payloads(actions)) == 15 * 160  # the rest played out
    assert not of(actions, EndCallViaTwilio)
    final = []
    for m in twilio_messages(actions):
        if m["event"] == "mark":
            final += call.feed(TwilioMark(STREAM_SID, m["mark"]["name"]), 1500.0)
    apologised(final)
    assert errors(final) == []
    assert call.closed


def test_vapi_drop_then_caller_hangs_up_ends_without_rest():
    call = bridged()
    call.feed(VapiAudio(assistant_audio(20)), 1000.0)
    call.feed(SocketClosed("vapi", CloseCode.ABNORMAL_CLOSURE), 1001.0)
    actions = call.feed(TwilioStop(STREAM_SID), 1100.0)  # the caller hangs up meanwhile
    assert not of(actions, EndCallViaTwilio)
    assert errors(actions) == []
    assert call.closed


def test_shutdown_while_a_dropped_call_plays_out_still_apologises():
    call = bridged()
    call.feed(VapiAudio(assistant_audio(20)), 1000.0)
    call.feed(SocketClosed("vapi", CloseCode.ABNORMAL_CLOSURE), 1001.0)
    actions = call.feed(Shutdown("drain_timeout"), 1050.0)
    apologised(actions)
    assert errors(actions) == ["drain_timeout"]


@pytest.mark.parametrize(
    "ended",
    [VapiCallEnded("assistant-ended-call"), VapiCallEnded("end-of-call-report")],
    ids=["status-update-ended", "end-of-call-report"],
)
def test_vapi_close_after_its_own_end_is_a_clean_hang_up(ended):
    call = bridged()
    actions = call.feed(ended, 1000.0)
    actions += call.feed(SocketClosed("vapi", CloseCode.NORMAL_CLOSURE), 1001.0)
    assert [a.code for a in of(actions, CloseTwilio)] == [CloseCode.NORMAL_CLOSURE]
    assert not of(actions, EndCallViaTwilio)
    assert errors(actions) == []


def test_vapi_normal_closure_is_a_goodbye_not_a_drop():
    call = bridged(lead_ms=100)
    actions = call.feed(VapiAudio(assistant_audio(20)), 1000.0)
    actions += call.feed(SocketClosed("vapi", CloseCode.NORMAL_CLOSURE), 1001.0)
    assert call.state is State.ENDING  # no REST update yet: it would cut the goodbye off
    actions += run_clock(call, 1400.0, 1001.0)
    assert sum(len(p) for p in media_payloads(actions)) == 20 * 160  # the goodbye played
    for m in twilio_messages(actions):
        if m["event"] == "mark":
            actions += call.feed(TwilioMark(STREAM_SID, m["mark"]["name"]), 1500.0)
    assert [a.code for a in of(actions, CloseTwilio)] == [CloseCode.NORMAL_CLOSURE]
    assert not of(actions, EndCallViaTwilio)
    assert errors(actions) == []
    assert call.closed


def test_vapi_close_after_our_end_call_does_nothing_more():
    call = bridged()
    call.feed(TwilioStop(STREAM_SID), 1000.0)
    assert call.feed(SocketClosed("vapi", CloseCode.ABNORMAL_CLOSURE), 1001.0) == []


def test_vapi_protocol_violation_mid_call_abandons_vapi_and_apologises():
    call = bridged()
    actions = call.feed(ProtocolViolation("vapi", "oversize", "too big"), 1000.0)
    assert [a.message for a in of(actions, SendJsonToVapi)] == [{"type": "end-call"}]
    assert of(actions, CloseVapi)
    apologised(actions)
    assert errors(actions) == ["vapi_dropped"]


def test_vapi_protocol_violation_while_connecting_is_a_failed_connect():
    call = connecting()
    actions = call.feed(ProtocolViolation("vapi", "oversize"), 100.0)
    apologised(actions)
    assert errors(actions) == ["vapi_unreachable"]


def test_hang_notice_does_not_end_the_call():
    call = bridged()
    assert call.feed(VapiIgnored("hang"), 1000.0) == []
    assert call.state is State.BRIDGING


def test_idle_timeout_uses_the_deadline_the_machine_announces():
    call = bridged(idle_timeout_ms=5000)
    call.feed(media(0), 1000.0)
    assert call.next_deadline == 6000.0
    assert call.feed(Tick(), 5999.0) == []
    actions = call.feed(Tick(), 6000.0)
    assert errors(actions) == ["idle_timeout"]
    assert of(actions, SendJsonToVapi)[0].message == {"type": "end-call"}


def test_a_stream_must_start_within_its_deadline_whatever_else_it_sends():
    # A socket that keeps sending "connected" never becomes a call: the deadline runs from the
    # upgrade and no message moves it (it used to be the idle timeout, reset by every message).
    call = make(start_timeout_ms=5000, idle_timeout_ms=30_000)
    for at in (0.0, 1000.0, 2000.0, 4999.0):
        assert call.feed(TwilioConnected("Call"), at) == []
        assert call.next_deadline == 5000.0
        assert call.feed(Tick(), at) == []
    actions = call.feed(Tick(), 5000.0)
    assert errors(actions) == ["start_timeout"]
    assert [c.code for c in of(actions, CloseTwilio)] == [CloseCode.POLICY_VIOLATION]
    assert call.closed


def test_max_duration():
    call = bridged(max_call_ms=60_000, idle_timeout_ms=120_000)
    assert call.next_deadline == 60_001.0  # from start at 1.0
    actions = call.feed(Tick(), 60_001.0)
    assert errors(actions) == ["max_duration"]
    assert call.closed


def test_vapi_connect_failure_apologises_through_twilio_rest():
    call = make()
    start(call, 0.0)
    actions = call.feed(VapiConnectFailed("http_429", "rate limited"), 900.0)
    (end,) = of(actions, EndCallViaTwilio)
    assert end.call_sid == CALL_SID
    assert "<Say>" in end.twiml
    assert "<Hangup/>" in end.twiml
    kinds = [type(a) for a in actions]
    assert kinds.index(EndCallViaTwilio) < kinds.index(CloseTwilio)  # say sorry, then close
    assert errors(actions) == ["vapi_unreachable"]
    assert call.closed


def test_vapi_connect_timeout_dials_the_fallback_number_and_closes_a_late_socket():
    call = make(fallback_number="+14155550123", connect_timeout_ms=3000)
    start(call, 0.0)
    assert call.next_deadline == 3000.0
    actions = call.feed(Tick(), 3000.0)
    (end,) = of(actions, EndCallViaTwilio)
    assert end.twiml == "<Response><Dial>+14155550123</Dial></Response>"
    assert of(call.feed(VapiConnected("late"), 3500.0), CloseVapi)


def test_protocol_violation_is_labelled_by_side():
    call = bridged()
    actions = call.feed(ProtocolViolation("twilio", "bad_base64"), 500.0)
    assert errors(actions) == ["twilio_bad_base64"]
    assert of(actions, CloseTwilio)[0].code == CloseCode.POLICY_VIOLATION


def test_shutdown_ends_the_call_going_away():
    call = bridged()
    actions = call.feed(Shutdown("drain_timeout"), 500.0)
    assert of(actions, SendJsonToVapi)[0].message == {"type": "end-call"}
    assert of(actions, CloseTwilio)[0].code == CloseCode.GOING_AWAY
    assert errors(actions) == ["drain_timeout"]


def test_idle_call_asks_for_no_frequent_timer():
    call = bridged(idle_timeout_ms=30_000)
    call.feed(media(0), 1000.0)
    assert call.next_deadline - 1000.0 >= 29_000  # no per-frame timer without assistant audio


def test_end_log_carries_frame_counts():
    call = bridged()
    call.feed(media(0), 1000.0)
    logs = [a for a in call.feed(TwilioStop(STREAM_SID), 1100.0) if isinstance(a, Log)]
    (end,) = [log for log in logs if log.message == "call ended"]
    assert end.fields["reason"] == "twilio_stop"
    assert end.fields["framesIn"] == 1


def test_vad_can_be_switched_off():
    vad = ScriptedVad()
    call = make(vad=False)
    call._vad_factory = lambda: vad
    start(call, 0.0)
    call.feed(VapiConnected("v"), 100.0)
    vad.script = [speech(onset=True), decision(False, False, True, -70.0)]
    call.feed(media(0), 1000.0)
    call.feed(media(20), 1020.0)
    assert len(vad.script) == 2  # never consulted
    actions = call.feed(VapiAudio(assistant_audio(5)), 1500.0)
    assert [a.name for a in of(actions, Latency)] == [telemetry.FIRST_AUDIO_LATENCY]


def test_late_mark_echo_holds_pacing_back_to_keep_twilio_shallow():
    call = bridged(lead_ms=100)
    messages = twilio_messages(call.feed(VapiAudio(assistant_audio(100)), 1000.0))
    messages += twilio_messages(run_clock(call, 1300.0, 1000.0))  # ~1300: we think ~20 played
    first_mark = next(i for i, m in enumerate(messages) if m["event"] == "mark")
    frames_after = sum(
        len(base64.b64decode(m["media"]["payload"])) // 160
        for m in messages[first_mark:]
        if m["event"] == "media"
    )
    assert frames_after > 0
    # Twilio started late: the first mark's audio only finished playing now.
    call.feed(TwilioMark(STREAM_SID, messages[first_mark]["mark"]["name"]), 1300.0)
    assert call._playout.play_end == 1300.0 + frames_after * 20
    assert media_payloads(call.feed(Tick(), 1310.0)) == []  # Twilio holds a full lead: wait


# -- the live console's events (Publish) ------------------------------------------------------


def published(actions) -> list[tuple[str, dict]]:
    return [(a.kind, a.data) for a in of(actions, Publish)]


def test_the_call_publishes_its_life_on_the_stream_time_axis():
    def calls(actions):  # the call's own events (the picture's deltas are tested apart)
        return [p for p in published(actions) if p[0] == "call"]

    call = make()
    call.feed(TwilioConnected("Call"), 0.0)
    assert calls(call.feed(start_event(), 10.0)) == []  # not a call until admitted
    started = calls(call.feed(StreamClaimed(ClaimOutcome.CLAIMED), 10.0))
    assert started == [
        (
            "call",
            {
                "state": "started",
                "at": 0,
                "assistantId": ASSISTANT,
                "from": "+14155550100",
                "to": "+14155550199",
            },
        )
    ]
    live = calls(call.feed(VapiConnected("v"), 310.0))
    assert live == [("call", {"state": "live", "at": 300})]
    ended = calls(call.feed(TwilioStop(STREAM_SID), 5010.0))
    assert ended == [("call", {"state": "ended", "at": 5000, "reason": "twilio_stop"})]


def test_captions_are_published_verbatim_partial_then_final():
    call = bridged()
    texts = ["Hel", "Hello <b>there</b> &amp;", "Hello <b>there</b> &amp; "]
    out = call.feed(VapiTranscript("user", False, texts[0]), 1000.0)
    out += call.feed(VapiTranscript("user", False, texts[1]), 1100.0)
    out += call.feed(VapiTranscript("user", True, texts[2]), 1200.0)
    assert published(out) == [
        ("caption", {"role": "user", "final": False, "text": texts[0], "at": 999}),
        ("caption", {"role": "user", "final": False, "text": texts[1], "at": 1099}),
        ("caption", {"role": "user", "final": True, "text": texts[2], "at": 1199}),
    ]


def test_speaking_and_interruptions_are_published_for_both_sides():
    call = bridged(lead_ms=100)
    out = call.feed(VapiSpeechUpdate("assistant", "started"), 1000.0)
    out += call.feed(VapiAudio(assistant_audio(50)), 1000.0)
    out += call.feed(VapiSpeechUpdate("user", "started"), 1100.0)
    out += call.feed(VapiUserInterrupted(), 1300.0)
    assert published(out) == [
        ("speech", {"role": "assistant", "status": "started", "at": 999}),
        ("speech", {"role": "user", "status": "started", "at": 1099}),
        ("interrupted", {"at": 1299, "cleared": True}),
    ]


@pytest.mark.parametrize("picture", [False, True])
def test_publishing_stays_off_the_per_frame_path(picture):
    call = bridged(lead_ms=100, picture=picture)
    actions = call.feed(VapiAudio(assistant_audio(5)), 1000.0)
    actions += run_clock(call, 1400.0, 1000.0)
    for i in range(20):
        actions += call.feed(media(1000 + i * 20), 1000.0 + i * 20)
    # audio frames publish nothing themselves; the picture sends a delta every 500 ms at most
    assert [p.kind for p in of(actions, Publish)] == (["picture"] if picture else [])
