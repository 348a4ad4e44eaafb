"""The scripted assistant's conversation rules, with a fake clock and no sockets."""

import json

import numpy as np

from infra.audio import sample, ulaw_encode
from infra.vapi_emulator.assistant import (
    Abort,
    CallTool,
    Close,
    Script,
    ScriptedCall,
    SendAudio,
    SendEvent,
    ToolScript,
    Webhook,
)

FRAME = 160  # 20 ms of mulaw at 8 kHz
SILENCE = ulaw_encode(np.zeros(FRAME, dtype=np.int16))
CALL = {"id": "call-1", "assistantId": "a-1", "metadata": {"callSid": "CA1"}}


FAST = Script(think_ms=100, end_of_turn_ms=200)


def make(script=FAST, **assistant):
    assistant = {"firstMessage": "Hello", "server": {"url": "http://x"}, **assistant}
    return ScriptedCall(CALL, assistant, ("mulaw", 8000), script, now_ms=0.0, wall_ms=1e12)


def events(actions, kind=None):
    out = [a.message for a in actions if isinstance(a, SendEvent)]
    return [e for e in out if kind is None or e["type"] == kind]


def hooks(actions, kind):
    return [
        a.message["message"]
        for a in actions
        if isinstance(a, Webhook)
        if a.message["message"]["type"] == kind
    ]


def audio_bytes(actions):
    return sum(len(a.data) for a in actions if isinstance(a, SendAudio))


def speech_frames(seconds=1.0):
    pcm = sample("caller_utterance")[: int(8000 * seconds)]
    data = ulaw_encode(pcm)
    return [data[i : i + FRAME] for i in range(0, len(data) - FRAME + 1, FRAME)]


class Clock:
    def __init__(self, call):
        self.call, self.now, self.actions = call, 0.0, []

    def feed(self, frames):
        for frame in frames:
            self.now += 20
            self.actions += self.call.audio(frame, self.now)
            self.actions += self.call.tick(self.now)

    def silence(self, ms):
        self.feed([SILENCE] * (ms // 20))


def test_greeting_is_paced_a_little_ahead_of_real_time():
    call = make()
    start = call.start(0.0)
    assert events(start, "status-update")[0]["status"] == "in-progress"
    assert hooks(start, "status-update")[0]["call"]["metadata"] == {"callSid": "CA1"}
    assert events(start, "speech-update")[0] == {
        **events(start, "speech-update")[0],
        "role": "assistant",
        "status": "started",
    }
    # At t=0 only the lead (200 ms = 1600 bytes) may have been sent, never the whole greeting.
    assert audio_bytes(start) == 1600
    clock = Clock(call)
    clock.silence(1000)
    assert audio_bytes(start + clock.actions) == 1600 + 8 * 1000


def test_caller_turn_gets_a_parrot_reply_after_think_time():
    call = make(firstMessage=None)
    clock = Clock(call)
    call.start(0.0)
    clock.feed(speech_frames(1.0))
    assert [e["status"] for e in events(clock.actions, "speech-update")] == ["started"]
    clock.actions.clear()
    clock.silence(200)  # end_of_turn_ms: the turn ends
    assert events(clock.actions, "transcript")[0]["role"] == "user"
    assert audio_bytes(clock.actions) == 0
    clock.silence(80)  # still thinking (think_ms=100 from the turn end)
    assert audio_bytes(clock.actions) == 0
    clock.silence(40)
    assert audio_bytes(clock.actions) > 0
    assert events(clock.actions, "speech-update")[-1]["role"] == "assistant"


def test_barge_in_stops_audio_and_emits_user_interrupted():
    call = make(Script(think_ms=100, end_of_turn_ms=200, interrupt_after_ms=100))
    clock = Clock(call)
    clock.actions += call.start(0.0)
    clock.silence(500)
    clock.actions.clear()
    clock.feed(speech_frames(0.4))
    kinds = [e["type"] for e in events(clock.actions)]
    assert kinds.index("user-interrupted") > kinds.index("speech-update")
    stop = next(
        i
        for i, a in enumerate(clock.actions)
        if isinstance(a, SendEvent) and a.message["type"] == "user-interrupted"
    )
    assert audio_bytes(clock.actions[stop:]) == 0  # not one more byte after the interruption
    assert hooks(clock.actions, "user-interrupted")
    assert call.interruptions == 1


def test_end_call_from_client_ends_once_with_reports():
    call = make()
    clock = Clock(call)
    call.start(0.0)
    clock.silence(1000)
    actions = call.text(json.dumps({"type": "end-call"}), 1500.0)
    assert events(actions, "status-update")[0]["endedReason"] == "customer-ended-call"
    assert any(isinstance(a, Close) and a.code == 1000 for a in actions)
    report = hooks(actions, "end-of-call-report")[0]
    assert report["endedReason"] == "customer-ended-call"
    assert report["artifact"]["transcript"].startswith("AI: Hello")
    assert "summary" in report["analysis"]
    assert report["cost"] > 0
    assert report["startedAt"] < report["endedAt"]
    assert call.end("again", 2000.0) == []
    assert call.text('{"type":"hangup"}', 2100.0) == []


def test_garbage_and_unknown_messages_are_ignored():
    call = make()
    call.start(0.0)
    assert call.text("{not json", 10.0) == []
    assert call.text('{"type":"no-such-thing"}', 10.0) == []
    assert call.text("[1,2]", 10.0) == []
    assert not call.closed


def test_tool_call_on_add_message_then_speaks_the_result():
    call = make(
        Script(tool=ToolScript("lookup_order", {"id": "42"}, on_add_message=True)),
        clientMessages=["tool-calls", "tool-calls-result"],
    )
    call.start(0.0)
    actions = call.text(
        json.dumps({"type": "add-message", "message": {"role": "system", "content": "DTMF 1"}}),
        100.0,
    )
    tool = next(a for a in actions if isinstance(a, CallTool)).message["message"]
    assert tool["type"] == "tool-calls"
    item = tool["toolCallList"][0]
    assert item["function"] == {"name": "lookup_order", "arguments": {"id": "42"}}
    result = call.tool_result([{"toolCallId": item["id"], "result": "shipped"}], 200.0)
    assert events(result, "tool-calls-result")
    assert audio_bytes(call.tick(600.0)) > 0


def test_vapi_drop_aborts_without_goodbye_but_still_reports():
    call = make(Script(drop_after_ms=300))
    call.start(0.0)
    actions = call.tick(400.0)
    assert isinstance(actions[0], Abort)
    assert not events(actions)
    assert not any(isinstance(a, Close) for a in actions)
    assert hooks(actions, "end-of-call-report")[0]["endedReason"] == "worker-shutdown"


def test_messages_follow_the_assistants_lists():
    call = make(clientMessages=["status-update"], serverMessages=["end-of-call-report"])
    actions = call.start(0.0)
    assert [e["type"] for e in events(actions)] == ["status-update"]
    assert not [a for a in actions if isinstance(a, Webhook)]


def test_pcm16_calls_send_16_khz_little_endian():
    call = ScriptedCall(
        CALL, {"firstMessage": "Hi"}, ("pcm_s16le", 16000), Script(), now_ms=0.0, wall_ms=1e12
    )
    assert audio_bytes(call.start(0.0)) == 200 * 32  # 200 ms lead at 32 bytes/ms


def _one_turn_and_reply(call):
    """The caller speaks once and the assistant's reply plays to its end."""
    clock = Clock(call)
    clock.actions += call.start(0.0)
    clock.silence(3000)  # the greeting
    clock.feed(speech_frames(1.0))
    clock.silence(4000)  # turn end, think, parrot reply, done
    return clock


PCC = ["status-update", "end-of-call-report", "phone-call-control"]


def test_assistant_hang_up_without_phone_call_control_ends_the_call_itself():
    call = make(Script(think_ms=100, end_of_turn_ms=200, end_after_turns=1))
    clock = _one_turn_and_reply(call)
    assert call.closed
    assert call.ended_reason == "assistant-ended-call"
    assert hooks(clock.actions, "phone-call-control") == []


def test_with_phone_call_control_the_assistant_hands_hang_up_to_the_server():
    # ServerMessagePhoneCallControl: Vapi "will no longer do the actual transfer and hangup".
    call = make(Script(think_ms=100, end_of_turn_ms=200, end_after_turns=1), serverMessages=PCC)
    clock = _one_turn_and_reply(call)
    (control,) = hooks(clock.actions, "phone-call-control")
    assert control["request"] == "hang-up"
    assert "destination" not in control
    assert control["call"]["id"] == "call-1"
    assert not call.closed  # the call stays up until the server ends it
    assert not any(isinstance(a, Close) for a in clock.actions)
    clock.feed(speech_frames(1.0))
    clock.silence(4000)  # another turn: asked once, not again
    assert len(hooks(clock.actions, "phone-call-control")) == 1


def test_with_phone_call_control_a_transfer_is_a_forward_request():
    script = Script(think_ms=100, end_of_turn_ms=200, transfer_after_turns=1)
    call = make(script, serverMessages=PCC)
    clock = _one_turn_and_reply(call)
    (control,) = hooks(clock.actions, "phone-call-control")
    assert control["request"] == "forward"
    assert control["destination"] == {"type": "number", "number": "+15550100009"}
    assert not call.closed
    plain = make(script)  # without it, Vapi forwards the call itself
    _one_turn_and_reply(plain)
    assert plain.ended_reason == "assistant-forwarded-call"
