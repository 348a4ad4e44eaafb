"""``make demo``: one simulated call through the whole product on this machine, then a report.

Starts the local stack (embedded AWS, API, worker, media edge, Vapi and Twilio emulators; this
shell's VAPI_*/TWILIO_* settings are ignored so it never touches real accounts), places a call in
which the caller listens to the greeting, asks something, then talks over the reply, prints the
caller's timeline, the latency table and the call record the control plane stored, stops
everything and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from infra.audio import sample
from infra.caller import report as render
from infra.caller import run_call
from infra.cli import conversation
from infra.local import LocalStack, StackError, StackOptions
from infra.vapi_emulator import Script

HEARD_WAV = Path(tempfile.gettempdir()) / "voicebridge-demo-heard.wav"
RECORD_WAIT_S = 8.0
NOTES = """\
Notes: "response" includes the emulated Vapi's end-of-turn wait (0.5 s of silence) and think
time (0.4 s). Like Vapi by default, it keeps talking until it has heard 0.2 s of the caller
(stopSpeakingPlan.voiceSeconds); the edge clears what Twilio had buffered as soon as Vapi
reports the caller speaking.
"""


def wait_for_record(stack: LocalStack, call_sid: str) -> tuple[int, Any]:
    """The stored record once the worker has folded in the final events (or what is there)."""
    deadline = time.monotonic() + RECORD_WAIT_S
    status, record = stack.get_call(call_sid)
    while time.monotonic() < deadline:
        done = isinstance(record, dict) and record.get("call_status") == "completed"
        if done and any(key in record for key in ("transcript", "summary", "vapi", "report")):
            break
        time.sleep(0.25)
        status, record = stack.get_call(call_sid)
    return status, record


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv)[:1] in (["-h"], ["--help"]):
        print("usage: python -m infra.demo   (make demo)\n\n" + (__doc__ or ""), end="")
        return 0
    started = time.monotonic()
    print(
        "Starting the local stack: embedded AWS, API, worker, media edge, Vapi + Twilio emulators"
    )
    options = StackOptions(
        api_port=0, edge_port=0, quiet=True, environ={}, script=Script(think_ms=400)
    )
    try:
        with LocalStack(options) as stack:
            print(
                f"  ready in {time.monotonic() - started:.1f} s  (API {stack.api_url}, "
                f"edge {stack.edge_url}/media)\n"
            )
            print(
                "Calling: the caller hears the greeting, asks a question, then talks over the "
                "assistant's reply 0.8 s into it.\n"
            )
            steps = conversation(sample("caller_utterance"), barge_in_after=0.8)
            report = asyncio.run(run_call(stack.caller_config(heard_wav=HEARD_WAV), steps))
            print(render.timeline(report))
            print()
            print(render.latency_table(report))
            print(NOTES)
            print(render.summary(report))
            print(
                f"what the caller heard: {HEARD_WAV} ({len(report.heard) / 8000:.1f} s, "
                f"{HEARD_WAV.stat().st_size:,} bytes)"
            )
            status, record = wait_for_record(stack, report.call_sid)
            print(f"\nStored call record: GET /calls/{report.call_sid} -> {status}")
            print(json.dumps(record, indent=2, sort_keys=True))
    except StackError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print(f"\nEverything stopped. Demo took {time.monotonic() - started:.1f} s.")
    return 0 if status == 200 and not report.protocol_errors else 1


if __name__ == "__main__":
    sys.exit(main())
