"""The scripted assistant's conversation rules, with a fake clock and no sockets."""

import json

import numpy as np
import pytest

from infra.audio import level_dbfs, sample, synth_speech, ulaw_encode
from infra.vapi_emulator.assistant import (
    WORD_MS,
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


def assistant_speaking(call, clock, ms=500):
    """Start the call (greeting ~3 s) and let ``ms`` of it play."""
    clock.actions += call.start(0.0)
    clock.silence(ms)
    clock.actions.clear()


def backchannel_frames():
    return frames_of(synth_speech(0.4, seed=3))  # 400 ms of voice: "mm-hmm"


def voice_frames(ms):
    """Loud speech-like frames all through (every frame counts as voice)."""
    return frames_of(np.tile(synth_speech(0.4, seed=3), ms // 400 + 1))[: ms // 20]


def frames_of(pcm):
    data = ulaw_encode(pcm)
    return [data[i : i + FRAME] for i in range(0, len(data) - FRAME + 1, FRAME)]


def first_index(actions, kind):
    return next(
        i for i, a in enumerate(actions) if isinstance(a, SendEvent) and a.message["type"] == kind
    )


def test_any_caller_sound_is_a_speech_update_but_mm_hmm_never_interrupts():
    call = make()
    clock = Clock(call)
    assistant_speaking(call, clock)
    clock.feed(backchannel_frames())
    clock.silence(400)  # the VAD's end of turn (200 ms) and more
    kinds = [e["type"] for e in events(clock.actions)]
    assert [e["status"] for e in events(clock.actions, "speech-update") if e["role"] == "user"] == [
        "started",
        "stopped",
    ]
    assert "user-interrupted" not in kinds
    assert call.interruptions == 0
    assert call.backchannels == 1
    assert events(clock.actions, "transcript")[-1]["transcript"] == "mm-hmm"
    # The assistant keeps speaking: its audio flows all along, in real time.
    assert audio_bytes(clock.actions) == 8 * (400 + 400)
    assert call.turns == 0  # a backchannel is not a turn: nothing answers it
    clock.silence(3000)
    assert call.replies == 1


def test_real_words_interrupt_once_the_transcriber_has_them():
    """Without a scripted transcript, a long utterance is words: Vapi can only tell it from
    "mm-hmm" once ACK_MAX_MS of it is heard; then it interrupts and audio stops at once."""
    call = make()
    clock = Clock(call)
    assistant_speaking(call, clock)
    frames = speech_frames(1.0)
    clock.feed(frames[:25])  # 500 ms: still could be an acknowledgement
    assert call.interruptions == 0
    clock.feed(frames[25:])
    assert call.interruptions == 1
    stop = first_index(clock.actions, "user-interrupted")
    assert first_index(clock.actions, "speech-update") < stop
    assert audio_bytes(clock.actions[stop:]) == 0  # not one more byte after the interruption
    assert hooks(clock.actions, "user-interrupted")
    assert call.spoken[0].interrupted


def test_interruption_phrases_interrupt_on_the_first_word():
    call = make(Script(think_ms=100, end_of_turn_ms=200, transcripts=("stop please",)))
    clock = Clock(call)
    assistant_speaking(call, clock)
    frames = voice_frames(1000)
    clock.feed(frames[: WORD_MS // 20 - 1])
    assert call.interruptions == 0  # the word is not recognised yet
    clock.feed(frames[WORD_MS // 20 - 1 : WORD_MS // 20 + 1])
    assert call.interruptions == 1


def test_acknowledgement_never_interrupts_even_past_num_words():
    plan = {"numWords": 1, "acknowledgementPhrases": ["yeah okay"]}
    script = Script(think_ms=100, end_of_turn_ms=200, transcripts=("Yeah, okay.",))
    call = make(script, stopSpeakingPlan=plan)
    clock = Clock(call)
    assistant_speaking(call, clock)
    clock.feed(speech_frames(1.0))  # two words, numWords 1: an acknowledgement all the same
    clock.silence(400)
    assert call.interruptions == 0
    assert call.backchannels == 1


def test_num_words_counts_words_and_an_ack_then_but_interrupts():
    plan = {"numWords": 3}
    call = make(Script(transcripts=("i think that is wrong",)), stopSpeakingPlan=plan)
    clock = Clock(call)
    assistant_speaking(call, clock)
    frames = voice_frames(1200)
    clock.feed(frames[: 2 * WORD_MS // 20])
    assert call.interruptions == 0  # two words
    clock.feed(frames[2 * WORD_MS // 20 : 3 * WORD_MS // 20])
    assert call.interruptions == 1  # the third

    call = make(Script(transcripts=("yeah but",)), stopSpeakingPlan=plan)
    clock = Clock(call)
    assistant_speaking(call, clock)
    clock.feed(frames[: 2 * WORD_MS // 20])
    assert call.interruptions == 1  # "but" interrupts whatever numWords says


def test_a_plan_without_phrases_interrupts_on_voice_seconds_alone():
    plan = {"voiceSeconds": 0.1, "acknowledgementPhrases": [], "interruptionPhrases": []}
    call = make(stopSpeakingPlan=plan)
    clock = Clock(call)
    assistant_speaking(call, clock)
    clock.feed(backchannel_frames()[:6])  # onset (3 frames) + 60 ms: 120 ms of voice
    assert call.interruptions == 1


def test_the_vad_hangover_is_not_voice():
    """The caller's trailing silence (VAD hangover) used to count as voice: a reply that began
    before the caller's turn had formally ended was "interrupted" by silence."""
    plan = {"acknowledgementPhrases": [], "interruptionPhrases": []}
    call = make(stopSpeakingPlan=plan, firstMessage=None)
    clock = Clock(call)
    call.start(0.0)
    clock.feed(backchannel_frames()[:4])  # 80 ms of voice: under voiceSeconds (0.2)
    call.text(json.dumps({"type": "say", "content": "hi"}), clock.now)  # the assistant speaks
    clock.silence(150)  # still inside the hangover (200 ms)
    assert call.interruptions == 0


def replied_at(call, clock, limit_ms):
    """Feed silence until the assistant starts its next reply: the clock then (or None)."""
    replies = call.replies
    for _ in range(limit_ms // 20):
        clock.silence(20)
        if call.replies > replies:
            return clock.now
    return None


@pytest.mark.parametrize("backoff_s", [0.0, 2.0])
def test_reply_after_an_interruption_waits_for_backoff_seconds(backoff_s):
    plan = {"backoffSeconds": backoff_s}
    call = make(Script(think_ms=100, end_of_turn_ms=200), stopSpeakingPlan=plan)
    clock = Clock(call)
    assistant_speaking(call, clock)
    clock.feed(speech_frames(1.0))
    (interrupted_at,) = call.interrupted_at
    turn_end = clock.now + 200  # the VAD hangover
    at = replied_at(call, clock, 4000)
    assert at == max(turn_end + 100, interrupted_at + backoff_s * 1000)


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


def add_message(call, now, **fields):
    message = {"type": "add-message", "message": {"role": "system", "content": "DTMF 5"}}
    return call.text(json.dumps({**message, **fields}), now)


def loud_ms(pcm):
    """Speech in ``pcm`` the way the simulated caller hears it: 20 ms frames over -45 dBFS."""
    return 20 * sum(level_dbfs(pcm[i : i + 160]) > -45 for i in range(0, pcm.size - 159, 160))


def test_key_press_at_the_end_of_a_turn_is_answered_not_left_in_silence():
    """``voicebridge call --dtmf 5``: the edge's add-message arrives just after the caller
    stopped talking, while the turn is still open (VAD hangover). The assistant must answer."""
    call = make(firstMessage=None)
    clock = Clock(call)
    call.start(0.0)
    clock.feed(speech_frames(1.0))
    clock.silence(40)
    assert add_message(call, clock.now) == []
    clock.silence(3000)
    assert call.interruptions == 0
    assert not events(clock.actions, "user-interrupted")
    assert call.messages[0] == {"role": "system", "message": "DTMF 5"}
    (reply,) = call.spoken
    assert loud_ms(reply.pcm_8k) >= 500  # a real answer, not a few frames of silence
    assert audio_bytes(clock.actions) == reply.pcm_8k.size  # all of it sent (mu-law: 1 B)


def test_add_message_triggers_a_response_by_default_and_not_when_told_not_to():
    call = make(firstMessage=None)
    clock = Clock(call)
    call.start(0.0)
    add_message(call, 0.0, triggerResponseEnabled=False)
    clock.silence(1000)
    assert call.replies == 0
    assert call.messages == [{"role": "system", "message": "DTMF 5"}]
    add_message(call, clock.now)
    clock.silence(1000)
    assert [s.text for s in call.spoken] == ["Noted."]
    assert audio_bytes(clock.actions) > 0


def test_add_message_while_the_assistant_speaks_answers_after_it():
    call = make()
    clock = Clock(call)
    assistant_speaking(call, clock)
    add_message(call, clock.now)
    clock.silence(1000)
    assert call.replies == 1  # the greeting is not cut short...
    clock.silence(3000)
    assert [s.text for s in call.spoken][1:] == ["Noted."]  # ...the answer follows it
    assert not any(s.interrupted for s in call.spoken)


@pytest.mark.parametrize(
    "fields",
    [
        {"message": None},
        {"message": {"role": "robot", "content": "x"}},
        {"message": {"role": "system", "content": 5}},
        {"message": {"content": "x"}},
        {"message": {"role": "system"}},
        {"triggerResponseEnabled": "yes"},
    ],
)
def test_add_message_outside_the_schema_is_ignored(fields):
    call = make(firstMessage=None)
    clock = Clock(call)
    call.start(0.0)
    add_message(call, 0.0, **fields)
    clock.silence(1000)
    assert call.rejected == 1
    assert call.messages == []
    assert call.replies == 0


def test_the_calls_assistant_overrides_apply():
    """Vapi runs the assistant with the call's assistantOverrides: an assistant whose own
    clientMessages leave out speech-update still sends it when the call asks for it."""
    overrides = {
        "clientMessages": ["speech-update", "user-interrupted"],
        "stopSpeakingPlan": {"numWords": 2},
        "metadata": {"callSid": "CA1"},
    }
    assistant = {"firstMessage": "Hello", "clientMessages": ["status-update"]}
    call = ScriptedCall(
        {**CALL, "assistantOverrides": overrides},
        assistant,
        ("mulaw", 8000),
        FAST,
        now_ms=0.0,
        wall_ms=1e12,
    )
    clock = Clock(call)
    assistant_speaking(call, clock)
    clock.feed(voice_frames(1000))
    kinds = {e["type"] for e in events(clock.actions)}
    assert kinds == {"speech-update", "user-interrupted"}
    assert call.interrupted_at  # numWords 2 from the override: two placeholder words at 600 ms


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
