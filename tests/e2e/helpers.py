"""Helpers for the end-to-end tests: scripted callers, polling, leak checks."""

import contextlib
import time
from pathlib import Path

from infra.audio import sample
from infra.caller import Hangup, Pause, Say, SimulatedCall, WaitForSilence, WaitForSpeech
from infra.local import StackOptions
from infra.vapi_emulator import Script

# Short turns keep the suite fast; the behaviour is the same as in the demo.
FAST = Script(greeting_ms=1000, think_ms=100, end_of_turn_ms=300, reply_max_ms=1000)
UTTERANCE = sample("caller_utterance")[:8000]  # 1 s of speech
# stopSpeakingPlan (schema StopSpeakingPlan) under which Vapi decides on the VAD alone, at once.
VAD_ONLY_PLAN = {"voiceSeconds": 0, "acknowledgementPhrases": [], "interruptionPhrases": []}
EDGE_ENV = {
    "METRICS_FLUSH_SECONDS": "1",
    "EDGE_IDLE_TIMEOUT_SECONDS": "10",
    "DRAIN_SECONDS": "0",
    "TRANSFER_ALLOWLIST": "sales=+15550100009",
    "DIALER_RECONCILE_SECONDS": "5",  # a lost dial is checked with Twilio after 5 s, not 120
}
# A tick a killed dialer had received comes back after 15 s, not the template's 360 s.
QUEUE_VISIBILITY = {"DialerQueue": 15}


def stack_options(aws_prefix, **edge_env):
    """A quiet stack on free ports with the fast emulated assistant and EDGE_ENV (+ changes)."""
    return StackOptions(
        api_port=0,
        edge_port=0,
        quiet=True,
        environ={},
        script=FAST,
        overrides={**EDGE_ENV, **edge_env},
        aws_prefix=aws_prefix,
        queue_visibility=QUEUE_VISIBILITY,
    )


def eventually(predicate, limit_s=10.0, what="condition"):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {limit_s} s")


def established(port: int) -> int:
    """TCP connections to or from ``port`` still open (Linux /proc; TIME_WAIT is closed)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            ports = {int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)}
            if port in ports and state in ("01", "08"):  # ESTABLISHED, CLOSE_WAIT
                count += 1
    return count


def assert_no_leaks(stack, baseline_tasks):
    eventually(lambda: stack.edge_sessions() == 0, what="edge sessions closed")
    eventually(lambda: stack.vapi.active_calls == 0, what="Vapi calls ended")
    eventually(lambda: stack.vapi.open_sockets == 0, what="Vapi transport sockets closed")
    eventually(lambda: stack.vapi.pending_tasks() == 0, what="Vapi per-call tasks finished")
    eventually(lambda: stack.stack_tasks() <= baseline_tasks, what="no extra tasks on the loop")
    edge_port = int(stack.env["EDGE_PORT"])
    eventually(lambda: established(edge_port) == 0, what="no open sockets to the edge")


def talk(*, hangup=True, barge_in_after_ms=None):
    """Greeting, one utterance, the reply (optionally barged into), hang up."""
    steps = [WaitForSilence(silence_ms=700), Say(UTTERANCE), WaitForSpeech()]
    if barge_in_after_ms is not None:
        steps += [Pause(barge_in_after_ms), Say(UTTERANCE, "caller barges in", barge_in=True)]
        steps += [WaitForSpeech()]
    steps.append(WaitForSilence(silence_ms=400))
    return [*steps, Hangup()] if hangup else steps


async def call(stack, steps, **config):
    caller = SimulatedCall(stack.caller_config(max_seconds=30, **config), steps)
    return await caller.run()


def record_when(stack, call_sid, predicate, limit_s=10.0):
    """GET /calls/{callSid} until ``predicate(record)`` holds; returns the record."""
    found = {}

    def check():
        status, body = stack.get_call(call_sid)
        found["status"], found["body"] = status, body
        return status == 200 and predicate(body)

    try:
        eventually(check, limit_s, "call record")
    except AssertionError:
        worker = [line for line in stack.logs("worker") if call_sid in line]
        raise AssertionError(f"record never matched: {found}\nworker log: {worker}") from None
    return found["body"]


@contextlib.contextmanager
def assistant_changed(stack, **fields):
    """The local assistant as Vapi stores it, with ``fields`` changed for the calls placed
    inside (e.g. its own ``clientMessages`` or ``stopSpeakingPlan``); restored after."""
    assistants = stack.vapi.assistants
    original = assistants[stack.assistant_id]
    assistants[stack.assistant_id] = {**original, **fields}
    try:
        yield
    finally:
        assistants[stack.assistant_id] = original
