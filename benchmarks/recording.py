"""What recording and the call's picture cost the edge (`make bench-recording`).

Three measurements, each as a ratio against the same run without the feature, absolutes beside:

- **core CPU per 20 ms** (in process, CPU time, no sockets): a full-duplex call through
  ``Call.feed`` (one Twilio media frame, one Vapi audio frame, mark echoes) with neither, with
  the picture, and with picture + recording (the tape, levels, stereo mixdown, live deltas);
- **core memory per call**: ``tracemalloc`` over N bridged calls after a minute of audio each;
- **shell cost**: the recording's spool path (``CallRecording.write`` on the loop, the disk
  writes in the pool) for N calls, CPU of the loop and of the pool per second of audio.

    python -m benchmarks.recording [--calls 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from media_edge.core import Call, CallConfig
from media_edge.core.actions import RecordAudio, SendToTwilio
from media_edge.core.events import ClaimOutcome, StreamClaimed, VapiAudio, VapiConnected
from media_edge.io.recording import RecordingStore
from media_edge.io.telemetry import EdgeMetrics, edge_logger
from media_edge.protocol.twilio import TwilioConnected, TwilioMark, TwilioMedia, TwilioStart
from voicebridge import stream_token

SECRET = "s" * 32
STREAM = "MZ" + "0" * 32
ACCOUNT = "AC" + "0" * 32
VARIANTS: dict[str, dict[str, bool]] = {
    "neither (before)": {"picture": False, "record": False},
    "picture": {"picture": True, "record": False},
    "picture + recording": {"picture": True, "record": True},
}


class Duplex:
    """One bridged call fed a caller frame and an assistant frame every 20 ms, marks echoed."""

    def __init__(self, index: int, picture: bool = True, record: bool = True) -> None:
        call_sid = f"CA{index:032d}"
        epoch = time.time()
        config = CallConfig(SECRET, ACCOUNT, picture=picture, record=record)
        self.call = Call(config, now=0.0, epoch_offset_s=epoch)
        token = stream_token.mint(SECRET, call_sid, "asst", epoch, 120)
        self.call.feed(TwilioConnected("Call"), 0.0)
        self.call.feed(TwilioStart(STREAM, call_sid, ACCOUNT, {"token": token}), 0.0)
        self.call.feed(StreamClaimed(ClaimOutcome.CLAIMED), 0.0)  # admitted: Vapi next
        self.call.feed(VapiConnected("bench"), 0.0)
        self.now = 0.0
        self.marks: list[str] = []
        self.speech = bytes([0x20]) * 160
        self.recorded = 0

    def step(self) -> None:
        self.now += 20.0
        now, call = self.now, self.call
        self._run(call.feed(TwilioMedia(STREAM, round(now), self.speech), now))
        self._run(call.feed(VapiAudio(self.speech), now))
        if self.marks:
            marks, self.marks = self.marks, []
            for name in marks:
                self._run(call.feed(TwilioMark(STREAM, name), now))

    def _run(self, actions: list[Any]) -> None:
        for action in actions:
            kind = type(action)
            if kind is SendToTwilio and '"mark"' in action.text:
                self.marks.append(json.loads(action.text)["mark"]["name"])
            elif kind is RecordAudio:
                self.recorded += len(action.data)


def cpu_us_per_step(config: dict[str, bool], steps: int, runs: int = 5) -> float:
    """Median CPU µs per 20 ms of full-duplex audio (a warm call, a minute in)."""
    results = []
    for _ in range(runs):
        call = Duplex(0, **config)
        for _ in range(3000):  # a minute of warm-up: levels, deltas and chunks all in play
            call.step()
        start = time.process_time()
        for _ in range(steps):
            call.step()
        results.append((time.process_time() - start) / steps * 1e6)
    return statistics.median(results)


def memory_kb_per_call(config: dict[str, bool], calls: int, seconds: int) -> float:
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        live = [Duplex(i, **config) for i in range(calls)]
        for _ in range(seconds * 50):
            for call in live:
                call.step()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (after - before) / calls / 1024


async def settled(recordings: list[Any]) -> None:
    """Until the pool has written everything handed over (polling: no event to wait on)."""
    while any(r.pending_bytes or r._writing for r in recordings):  # noqa: ASYNC110
        await asyncio.sleep(0.001)


async def shell_cost(calls: int, seconds: int) -> dict[str, float]:
    """The spool path alone (S3 never reached in this window: parts fill every 164 s)."""
    with tempfile.TemporaryDirectory() as spool:
        store = RecordingStore("bench", spool, lambda: None, edge_logger(), EdgeMetrics(None))
        await store.start()
        chunk = bytes(32_000)  # one second of stereo PCM, as the core hands it over
        recordings = [
            store.open(f"CA{i:032d}", time.time(), {"callSid": "bench"}) for i in range(calls)
        ]
        loop_cpu = 0.0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(seconds):
            start = time.thread_time()
            for recording in recordings:
                recording.write(chunk)
            loop_cpu += time.thread_time() - start
            await settled(recordings)
        await settled(recordings)
        total = resource.getrusage(resource.RUSAGE_SELF)
        store.close()
    process_cpu = (total.ru_utime + total.ru_stime) - (usage.ru_utime + usage.ru_stime)
    audio_s = calls * seconds
    return {
        "loop µs per second of audio": loop_cpu / audio_s * 1e6,
        "process µs per second of audio (loop + pool + polling)": process_cpu / audio_s * 1e6,
    }


def table(rows: list[tuple[str, float, float]], unit: str) -> str:
    lines = [f"| variant | {unit} | ratio to neither |", "|---|---:|---:|"]
    lines += [f"| {name} | {value:.2f} | x{ratio:.2f} |" for name, value, ratio in rows]
    return "\n".join(lines)


def measure(fn: Callable[[dict[str, bool]], float]) -> list[tuple[str, float, float]]:
    values = {name: fn(config) for name, config in VARIANTS.items()}
    base = values["neither (before)"]
    return [(name, value, value / base) for name, value in values.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--steps", type=int, default=5000)
    args = parser.parse_args(argv)
    print("Core CPU per 20 ms of full-duplex audio (caller frame + assistant frame + marks):\n")
    print(table(measure(lambda c: cpu_us_per_step(c, args.steps)), "CPU µs per 20 ms"))
    print(f"\nCore memory per call after {args.seconds} s ({args.calls} calls, tracemalloc):\n")
    print(table(measure(lambda c: memory_kb_per_call(c, args.calls, args.seconds)), "KB per call"))
    print(f"\nRecording shell, spool path ({args.calls} calls x {args.seconds} s):\n")
    for name, value in asyncio.run(shell_cost(args.calls, args.seconds)).items():
        print(f"- {name}: {value:.1f}")


if __name__ == "__main__":
    main()
