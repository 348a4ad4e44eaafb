"""Whole-system calls over loopback: simulated Twilio caller -> API -> edge -> Vapi emulator,
webhooks -> SQS -> worker -> DynamoDB, then GET /calls. Assertions are on what the caller
heard, what was stored, which metrics were emitted, and that nothing leaked."""

import asyncio
import uuid

import numpy as np
import pytest

from infra.audio import load_wav, sample, ulaw_decode, ulaw_encode
from infra.caller import Dtmf, Hangup, Pause, Say, WaitForSilence, WaitForSpeech
from infra.cli import conversation
from infra.vapi_emulator import Script, ToolScript
from tests.audio_match import best_match
from tests.e2e.helpers import (
    FAST,
    UTTERANCE,
    VAD_ONLY_PLAN,
    assistant_changed,
    call,
    eventually,
    record_when,
    talk,
)
from voicebridge import telemetry

pytestmark = pytest.mark.e2e
FRAME_MS = 20
ENDED_BY_CALLER = ("customer-ended-call", "phone-call-provider-closed-websocket")
GREETING_SENT = sample("assistant_greeting")[: 8 * FAST.greeting_ms]  # what the emulator says


def sid():
    return f"CA{uuid.uuid4().hex}"


def vapi_call_for(stack, call_sid):
    """The emulated Vapi call our edge created for this Twilio call."""
    for emulated in stack.vapi.calls.values():
        overrides = emulated.record.get("assistantOverrides") or {}
        holders = [emulated.record.get("metadata"), overrides.get("metadata")]
        if any(isinstance(h, dict) and h.get("callSid") == call_sid for h in holders):
            return emulated
    raise AssertionError(f"no Vapi call carries callSid {call_sid}")


def assert_clean(report):
    assert report.protocol_errors == [], report.protocol_errors


async def test_normal_call(clean_stack, tmp_path):
    stack = clean_stack
    heard_wav = tmp_path / "heard.wav"
    report = await call(stack, talk(), heard_wav=heard_wav)
    assert_clean(report)
    assert report.ended_by == "caller-hangup"
    # The caller heard the greeting (about 1 s of it) and then a reply to what it said.
    assert report.first_audio_ms is not None
    greeting = report.heard_speech[: (report.first_audio_ms + 1500) // FRAME_MS]
    assert sum(greeting) * FRAME_MS >= 500
    assert len(report.response_ms) == 1
    # --heard wrote all of it: the whole call, the greeting where the caller heard it.
    heard = load_wav(heard_wav)
    assert heard.size == len(report.heard_speech) * 8 * FRAME_MS
    level = np.abs(heard.reshape(-1, 8 * FRAME_MS)).mean(axis=1)
    speech = np.array(report.heard_speech)
    assert level[speech].mean() > 10 * level[~speech].mean()  # loud where the caller heard it
    lag, correlation = best_match(heard, ulaw_decode(ulaw_encode(GREETING_SENT)))
    assert correlation > 0.95, correlation
    assert abs(lag / 8 - report.first_audio_ms) <= 200
    assert report.marks_echoed > 0
    emulated = vapi_call_for(stack, report.call_sid)
    eventually(lambda: emulated.machine.closed, what="Vapi call ended")
    assert emulated.machine.turns == 1
    assert emulated.machine.replies == 2  # greeting + one answer
    assert emulated.machine.ended_reason in (
        "customer-ended-call",
        "phone-call-provider-closed-websocket",
    )
    # Metrics went out as EMF from all three services.
    eventually(
        lambda: stack.emf.values(telemetry.FIRST_AUDIO_LATENCY, telemetry.SERVICE_EDGE),
        what="edge FirstAudioLatency",
    )
    assert stack.emf.values(telemetry.BRIDGE_LATENCY, telemetry.SERVICE_EDGE)
    assert stack.emf.values(telemetry.WEBHOOK_LATENCY, telemetry.SERVICE_API)
    eventually(
        lambda: stack.emf.values(telemetry.EVENTS_PROCESSED, telemetry.SERVICE_WORKER),
        what="worker EventsProcessed",
    )
    # The control plane stored the call: Twilio's timeline and Vapi's end-of-call report.
    record = record_when(stack, report.call_sid, lambda r: r.get("call_status") == "completed")
    assert record["session"]["from"] == "+15550100001"
    record = record_when(stack, report.call_sid, lambda r: bool(r.get("transcript")))
    assert "AI: Hello" in record["transcript"]
    assert record["summary"].startswith("The caller spoke 1 time")
    assert record["ended_reason"] == emulated.machine.ended_reason


async def test_barge_in_clears_what_twilio_buffered(clean_stack):
    stack = clean_stack
    call_sid = sid()
    # Vapi interrupts as soon as its VAD hears the caller (a plan with no acknowledgement
    # phrases to wait for and voiceSeconds 0), so the edge's clear is the only thing between
    # the interruption and silence.
    stack.vapi.scripts[call_sid] = Script(
        greeting_ms=1000, think_ms=100, end_of_turn_ms=300, reply_max_ms=2000
    )
    with assistant_changed(stack, stopSpeakingPlan=VAD_ONLY_PLAN):
        report = await call(stack, talk(barge_in_after_ms=300), call_sid=call_sid)
    assert_clean(report)
    emulated = vapi_call_for(stack, call_sid)
    assert emulated.machine.interruptions == 1
    assert report.clears >= 1
    assert report.cleared_ms > 0  # Twilio really had assistant audio queued when it was cleared
    # From the clear on, the caller hears silence within a frame or two of playout.
    assert report.barge_in_to_silence_ms
    assert report.barge_in_to_clear_ms
    assert report.barge_in_to_silence_ms[0] <= report.barge_in_to_clear_ms[0] + 2 * FRAME_MS
    eventually(
        lambda: stack.emf.values(telemetry.BARGE_IN_LATENCY, telemetry.SERVICE_EDGE),
        what="edge BargeInLatency",
    )


async def test_caller_hangs_up_mid_sentence(clean_stack):
    stack = clean_stack
    steps = [WaitForSilence(silence_ms=400), Say(UTTERANCE), WaitForSpeech(), Pause(200), Hangup()]
    report = await call(stack, steps)
    assert_clean(report)
    assert report.ended_by == "caller-hangup"
    emulated = vapi_call_for(stack, report.call_sid)
    eventually(lambda: emulated.machine.closed, what="the edge ended the Vapi call")
    assert emulated.machine.ended_reason in (
        "customer-ended-call",
        "phone-call-provider-closed-websocket",
    )
    record_when(stack, report.call_sid, lambda r: r.get("call_status") == "completed")


async def test_vapi_drops_mid_call(clean_stack):
    stack = clean_stack
    call_sid = sid()
    stack.vapi.scripts[call_sid] = Script(greeting_ms=3000, think_ms=100, drop_after_ms=600)
    steps = [WaitForSpeech(), Pause(8000), Hangup()]
    report = await call(stack, steps, call_sid=call_sid)
    assert_clean(report)
    # The edge notices and never leaves the caller in silence: the apology (no fallback number
    # is configured here) replaces the stream's TwiML through Twilio's REST API.
    assert report.ended_by == "rest-redirected", report.timeline
    (update,) = stack.twilio.calls[call_sid].updates
    assert "<Say>" in update["Twiml"]
    assert "<Hangup/>" in update["Twiml"]
    heard_ms = len(report.heard_speech) * FRAME_MS
    assert heard_ms < 8000  # it did not wait for the caller to give up

    def dropped_errors():
        return [
            r
            for r in stack.emf.records
            if r.get("service") == telemetry.SERVICE_EDGE and r.get("reason") == "vapi_dropped"
        ]

    eventually(dropped_errors, what="edge CallErrors{reason=vapi_dropped}")


@pytest.mark.parametrize("order", ["shuffled", "duplicated"])
async def test_out_of_order_and_duplicate_status_callbacks(clean_stack, order):
    stack = clean_stack
    report = await call(stack, talk(), status_order=order)
    assert_clean(report)
    assert all(code == 204 for _, code in report.status_callbacks)
    # What Twilio sends for an inbound call: the stream's events and one final status callback.
    copies = 2 if order == "duplicated" else 1
    sent = ["completed", "stream-started", "stream-stopped"] * copies
    assert sorted(label for label, _ in report.status_callbacks) == sorted(sent)

    def twilio_events(record):
        return sorted(
            (e["kind"], e.get("status") or e.get("event"))
            for e in record["timeline"]
            if e["kind"].startswith("twilio.")
        )

    # Every delivered callback is folded in exactly once, whatever the order...
    expected = [
        ("twilio.call-status", "completed"),
        ("twilio.stream", "stream-started"),
        ("twilio.stream", "stream-stopped"),
    ]
    # ...and the final state is "completed" even when stream-started (which marks the call
    # in progress) arrives after it.
    record = record_when(
        stack,
        report.call_sid,
        lambda r: len(twilio_events(r)) >= len(expected) and r.get("call_status") == "completed",
    )
    assert twilio_events(record) == expected
    assert record["status_seq"] == 0


async def test_dtmf_tool_call_ends_the_call_through_twilio_rest(clean_stack):
    stack = clean_stack
    call_sid = sid()
    stack.vapi.scripts[call_sid] = Script(
        greeting_ms=800, think_ms=100, tool=ToolScript("end_call", {}, on_add_message=True)
    )
    steps = [WaitForSilence(silence_ms=400), Dtmf("9"), Pause(10_000), Hangup()]
    report = await call(stack, steps, call_sid=call_sid)
    assert_clean(report)
    assert report.ended_by == "rest-completed", report.timeline
    twilio_call = stack.twilio.calls[call_sid]
    assert twilio_call.updates == [{"Status": "completed"}]


async def test_a_key_press_is_answered_never_dead_air(clean_stack):
    """``voicebridge call --dtmf 5``: the key is pressed as the caller stops talking (its turn
    still open at Vapi). It got one clear and then silence until the caller gave up."""
    stack = clean_stack
    call_sid = sid()
    stack.vapi.scripts[call_sid] = Script(greeting_ms=1000)  # Vapi-like think and endpointing
    report = await call(stack, conversation(UTTERANCE, dtmf="5"), call_sid=call_sid)
    assert_clean(report)
    pressed = next(ms for ms, text in report.timeline if text.startswith("caller presses"))
    heard_after_key = sum(report.heard_speech[int(pressed) // FRAME_MS :]) * FRAME_MS
    assert heard_after_key >= 500, report.timeline
    assert report.clears == 0
    emulated = vapi_call_for(stack, call_sid)
    eventually(lambda: emulated.machine.closed, what="Vapi call ended")
    assert emulated.machine.interruptions == 0
    assert {"role": "system", "message": "The caller pressed 5 on the keypad."} in (
        emulated.machine.messages
    )


async def test_transfer_tool_redirects_the_live_call(clean_stack):
    stack = clean_stack
    call_sid = sid()
    tool = ToolScript("transfer_call", {"destination": "sales"}, after_turn=1)
    stack.vapi.scripts[call_sid] = Script(
        greeting_ms=800, think_ms=100, end_of_turn_ms=300, tool=tool
    )
    steps = [WaitForSilence(silence_ms=400), Say(UTTERANCE), Pause(10_000), Hangup()]
    report = await call(stack, steps, call_sid=call_sid)
    assert_clean(report)
    assert report.ended_by == "rest-redirected", report.timeline
    (update,) = stack.twilio.calls[call_sid].updates
    assert "<Dial" in update["Twiml"]
    assert "+15550100009" in update["Twiml"]


async def test_twenty_concurrent_calls(clean_stack):
    stack = clean_stack
    reports = await asyncio.gather(*(call(stack, talk()) for _ in range(20)))
    assert len({r.call_sid for r in reports}) == 20
    for report in reports:
        assert_clean(report)
        assert report.ended_by == "caller-hangup"
        assert report.first_audio_ms is not None
        assert report.heard_speech_ms() >= 500  # at least the greeting
        # Each call got its own Vapi call, which heard that caller's audio (turn-taking itself
        # depends on timing, which a loaded 2-vCPU machine does not guarantee for 20 calls).
        emulated = vapi_call_for(stack, report.call_sid)
        assert emulated.machine.audio_in_bytes >= 8000
        assert emulated.machine.replies >= 1
    for report in reports:
        record_when(stack, report.call_sid, lambda r: r.get("call_status") == "completed")


async def _assistant_with_phone_call_control(stack, number):
    """What an operator does to let Vapi's own endCall/transferCall reach the phone call."""
    import httpx

    spec = {
        "name": "phone-call-control",
        "systemPrompt": "Be brief.",
        "phoneCallControl": True,
        "phoneNumbers": [number],
    }
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{stack.api_url}/assistants", json=spec, headers=stack.admin_headers()
        )
    assert response.status_code == 201, response.text
    assistant = stack.vapi.assistants[response.json()["id"]]
    assert "phone-call-control" in assistant["serverMessages"]


@pytest.mark.parametrize(
    ("behaviour", "ended_by", "twilio_update"),
    [
        ({"end_after_turns": 1}, "rest-completed", "Status=completed"),
        (
            {"transfer_after_turns": 1, "transfer_number": "+15550100009"},
            "rest-redirected",
            "<Dial><Number>+15550100009</Number></Dial>",
        ),
    ],
    ids=["end-call", "transfer-call"],
)
async def test_vapis_own_end_and_transfer_reach_twilio_through_phone_call_control(
    clean_stack, behaviour, ended_by, twilio_update
):
    stack = clean_stack
    number = "+15550100077"
    await _assistant_with_phone_call_control(stack, number)
    call_sid = sid()
    stack.vapi.scripts[call_sid] = Script(
        greeting_ms=800, think_ms=100, end_of_turn_ms=300, **behaviour
    )
    steps = [WaitForSilence(silence_ms=400), Say(UTTERANCE), Pause(10_000), Hangup()]
    report = await call(stack, steps, call_sid=call_sid, to_number=number)
    assert_clean(report)
    assert report.ended_by == ended_by, report.timeline
    (update,) = stack.twilio.calls[call_sid].updates
    assert twilio_update in "&".join(f"{k}={v}" for k, v in update.items())
    vapi_id = vapi_call_for(stack, call_sid).record["id"]
    sent = [m["message"] for _, m in stack.vapi.webhooks_sent]
    kinds = [m["type"] for m in sent if m["call"]["id"] == vapi_id]
    assert kinds.count("phone-call-control") == 1
