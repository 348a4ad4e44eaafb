"""Barge-in through the whole local stack, measured on what the simulated caller heard.

Vapi says ``speech-update`` on any caller sound and ``user-interrupted`` only when its
``stopSpeakingPlan`` decides the caller interrupted. The edge pauses on the first and clears on
the second, so (a) a backchannel ("mm-hmm") during a reply costs the caller none of it, and
(b) after a real interruption the caller hears at most one 20 ms frame of the assistant.
``pytest -s`` prints the figures BENCHMARKS.md quotes.
"""

import time
import uuid

import numpy as np
import pytest

from infra.audio import level_dbfs, ulaw_decode, ulaw_encode
from infra.caller import Hangup, Pause, Say, SimulatedCall, WaitForSilence, WaitForSpeech
from infra.caller.script import backchannel
from infra.vapi_emulator import Script
from tests.e2e.helpers import UTTERANCE, VAD_ONLY_PLAN, assistant_changed, eventually

pytestmark = pytest.mark.e2e
FRAME_MS = 20
HEAR_DBFS = -45.0  # the simulated caller's "hears the assistant" threshold (CallerConfig)


def long_reply_script(**changes):
    """A 1 s greeting, then a 3 s reply of speech-like sound (a synth reply is reply_max_ms),
    sent 1.5 s ahead of real time: text-to-speech runs faster than real time, so a sentence
    reaches the edge in a burst and waits in its queue (what a clear would throw away)."""
    fields = {
        "greeting_ms": 1000,
        "think_ms": 100,
        "end_of_turn_ms": 300,
        "reply": "synth",
        "reply_max_ms": 3000,
        "lead_ms": 1500,
    }
    return Script(**{**fields, **changes})


# Listen to the greeting, ask, talk over the reply 0.4 s into it (clear of the synth reply's
# first quiet gap, ~0.9-1.1 s in, so "silence" is the edge's doing), hang up soon after.
BARGE_IN = [
    WaitForSilence(silence_ms=700),
    Say(UTTERANCE),
    WaitForSpeech(),
    Pause(400),
    Say(UTTERANCE, "caller barges in", barge_in=True),
    Pause(300),
    Hangup(),
]


class EarCall(SimulatedCall):
    """The simulated caller, also noting when each 20 ms of playout was heard (monotonic ms,
    the clock the Vapi emulator stamps its decisions with: they share this process)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.heard_at: list[float] = []

    def _hear(self, frame, ours):
        self.heard_at.append(time.monotonic() * 1000)
        super()._hear(frame, ours)


async def place(stack, steps, call_sid):
    caller = EarCall(stack.caller_config(max_seconds=30, call_sid=call_sid), steps)
    report = await caller.run()
    assert report.protocol_errors == [], report.protocol_errors
    return caller, report


def emulated(stack, call_sid):
    for candidate in stack.vapi.calls.values():
        metadata = (candidate.record.get("assistantOverrides") or {}).get("metadata") or {}
        if metadata.get("callSid") == call_sid:
            eventually(lambda c=candidate: c.machine is not None and c.machine.closed)
            return candidate.machine
    raise AssertionError(f"no Vapi call for {call_sid}")


def audible_ms(pcm_8k: np.ndarray) -> int:
    """How much of ``pcm_8k`` a caller hears as speech: 20 ms frames over the threshold, after
    the mu-law round trip the call puts it through."""
    pcm = ulaw_decode(ulaw_encode(pcm_8k))
    frames = range(0, pcm.size - 159, 160)
    return FRAME_MS * sum(level_dbfs(pcm[i : i + 160]) > HEAR_DBFS for i in frames)


def audible_span_ms(pcm_8k: np.ndarray) -> int:
    """From the first to the last audible frame of ``pcm_8k``."""
    pcm = ulaw_decode(ulaw_encode(pcm_8k))
    loud = [i for i in range(0, pcm.size - 159, 160) if level_dbfs(pcm[i : i + 160]) > HEAR_DBFS]
    return (loud[-1] - loud[0]) // 8 + FRAME_MS


def heard_after(caller: EarCall, report, since_ms: float) -> float:
    """Assistant audio (ms) the caller heard after ``since_ms`` (monotonic ms)."""
    total = 0.0
    for at, loud in zip(caller.heard_at, report.heard_speech, strict=True):
        if loud:
            total += min(FRAME_MS, max(0.0, at + FRAME_MS - since_ms))
    return total


def frame_of(report, label: str) -> int:
    """Index of the playout frame at which the timeline entry starting with ``label`` was."""
    return int(next(ms for ms, text in report.timeline if text.startswith(label)) // FRAME_MS)


async def test_a_backchannel_costs_the_caller_no_assistant_audio(clean_stack):
    stack = clean_stack
    call_sid = f"CA{uuid.uuid4().hex}"
    stack.vapi.scripts[call_sid] = long_reply_script()
    steps = [
        WaitForSilence(silence_ms=700),
        Say(UTTERANCE),
        WaitForSpeech(),
        Pause(1200),
        backchannel(),  # "mm-hmm", 1.2 s into the 3 s reply (in speech, not one of its gaps)
        WaitForSilence(silence_ms=1500),  # the reply's own gaps are 0.2 s, the pause ~0.6 s
        Hangup(),
    ]
    _, report = await place(stack, steps, call_sid)
    assistant = emulated(stack, call_sid)
    assert (assistant.backchannels, assistant.interruptions) == (1, 0)
    greeting, reply = assistant.spoken
    turn = frame_of(report, "caller speaks")
    reply_heard = FRAME_MS * sum(report.heard_speech[turn:])
    loud = [k for k, heard in enumerate(report.heard_speech) if heard and k >= turn]
    delay = (loud[-1] - loud[0] + 1) * FRAME_MS - audible_span_ms(reply.pcm_8k)
    print(
        f"\nbackchannel: reply heard {reply_heard} ms of {audible_ms(reply.pcm_8k)} ms "
        f"(its end {delay} ms later than without the mm-hmm)"
    )
    assert report.clears == 0
    assert reply_heard == audible_ms(reply.pcm_8k)  # every frame of it, none cleared
    assert FRAME_MS * sum(report.heard_speech[:turn]) == audible_ms(greeting.pcm_8k)


@pytest.mark.parametrize(
    ("plan", "transcript"),
    [
        (None, None),  # default plan; long speech is words once 0.6 s of it is heard
        (None, "stop, that is not what I asked"),  # an interruption phrase: the first word
        (VAD_ONLY_PLAN, None),  # no phrases, voiceSeconds 0: Vapi decides on the first sound
    ],
    ids=["words", "interruption-phrase", "vad-only"],
)
async def test_a_real_interruption_leaves_at_most_a_frame_of_assistant_audio(
    clean_stack, plan, transcript
):
    stack = clean_stack
    call_sid = f"CA{uuid.uuid4().hex}"
    # think_ms 1 s: no next reply starts before the caller hangs up (asserted below), so all
    # assistant audio heard after the decision is the interrupted reply's.
    stack.vapi.scripts[call_sid] = long_reply_script(think_ms=1000, transcripts=(None, transcript))
    changes = {} if plan is None else {"stopSpeakingPlan": plan}
    with assistant_changed(stack, **changes):
        caller, report = await place(stack, BARGE_IN, call_sid)
    assistant = emulated(stack, call_sid)
    (interrupted_at,) = assistant.interrupted_at
    assert len(assistant.spoken) == 2  # the greeting and the interrupted reply, nothing more
    after = heard_after(caller, report, interrupted_at)
    barge_in = frame_of(report, "caller barges in")
    decided_ms = interrupted_at - caller.heard_at[barge_in]
    meanwhile = heard_after(caller, report, caller.heard_at[barge_in]) - after
    print(
        f"\ninterruption ({transcript or 'default'}, plan {plan or 'default'}): Vapi decided "
        f"{decided_ms:.0f} ms into the barge-in; assistant heard after it: {after:.0f} ms, "
        f"before it {meanwhile:.0f} ms; caller talks over -> silence "
        f"{report.barge_in_to_silence_ms[0]} ms"
    )
    assert report.clears >= 1  # the edge got user-interrupted and cleared
    if plan is None:  # the pause had silenced it long before Vapi decided
        assert after <= FRAME_MS
    else:  # decided on the first sound: the clear silences it, within a frame of arriving
        clear = frame_of(report, "clear received")
        assert sum(report.heard_speech[clear + 1 :]) == 0


async def test_barge_in_works_when_the_assistant_itself_asks_for_no_speech_events(clean_stack):
    """The assistant's own clientMessages leave out speech-update and user-interrupted; the
    edge's assistantOverrides.clientMessages bring them back (the emulator applies the call's
    overrides as Vapi does): the caller's sound still pauses playout before Vapi decides, and
    the interruption still clears."""
    stack = clean_stack
    call_sid = f"CA{uuid.uuid4().hex}"
    stack.vapi.scripts[call_sid] = long_reply_script(think_ms=1000)
    with assistant_changed(stack, clientMessages=["status-update", "transcript"]):
        caller, report = await place(stack, BARGE_IN, call_sid)
    assistant = emulated(stack, call_sid)
    (interrupted_at,) = assistant.interrupted_at
    assert len(assistant.spoken) == 2
    assert report.clears >= 1  # user-interrupted reached the edge
    silent_from = caller.heard_at[frame_of(report, "caller barges in")]
    silent_from += report.barge_in_to_silence_ms[0]
    assert silent_from < interrupted_at - 100  # speech-update paused it before the verdict
    assert heard_after(caller, report, interrupted_at) <= FRAME_MS
