"""Outbound dialer benchmark (``make bench-outbound``): pacing accuracy, slot-to-dial latency,
Lambda invocations per contact, on the whole local stack.

The stack is ``make run``'s: the API under uvicorn, the dialer and the worker as their own
processes on the embedded SQS (one function instance each, as with a Lambda concurrency of 1),
moto for DynamoDB. The Twilio emulator plays the phones *without media* (an answered call is held
``--hold`` seconds, no stream to the edge), so hundreds of calls are cheap; everything else is
the product's real path: Calls.create, the TwiML webhook, four status callbacks per call, the
worker concluding each dial, the tick that wakes the dialer.

1. Pacing: a ``--contacts`` campaign (default 500; 120 at 1 CPS) under each ``--cps`` (default
   1 and 2) with a concurrency cap high enough never to bind. Reported against the cap (the
   baseline of this run): the mean rate, the busiest one-second window (sliding) and the
   histogram of calls per calendar second, all from the emulator's arrival times (what Twilio
   would count).
2. Slot freed -> next dial: a campaign bound by ``maxConcurrent`` (3; CPS far above; 2 s calls):
   for each call that ended while every slot was taken, the time from the emulator ending it to
   the next Calls.create arriving. The path: final callback -> API -> SQS -> worker -> tick ->
   SQS -> dialer -> DynamoDB claim -> Twilio.
3. Invocations per contact: dialer runs (one per SQS batch here; counted from the dialer's log,
   which keeps its last 2,000 lines), worker events (one per status callback; the SQS event
   source hands the worker up to 10 per invocation), API requests (the TwiML webhook and the
   status callbacks: one API Lambda invocation each).

The local stack is the bottleneck above ~2 calls a second, not the dialer: moto serves DynamoDB
one call at a time and copies the whole table for every TransactWriteItems, and one worker
process applies ~7 status callbacks a second (each is 6-10 DynamoDB calls there). So the cap is
measured where the stack keeps up; in AWS, DynamoDB and the worker's concurrency do not bind.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from collections import Counter
from typing import Any

import httpx

from infra.local import LocalStack, StackOptions


def _emulator(stack: LocalStack) -> Any:
    assert stack.twilio is not None
    return stack.twilio.outbound


def _admin(stack: LocalStack, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(
        method, f"{stack.api_url}{path}", json=body, headers=stack.admin_headers(), timeout=60
    )
    response.raise_for_status()
    return response.json()


def _run_campaign(
    stack: LocalStack, numbers: list[str], cps: float, concurrent: int, limit_s: float
) -> tuple[str, float]:
    created = _admin(
        stack,
        "POST",
        "/campaigns",
        {
            "maxConcurrent": concurrent,
            "maxCallsPerSecond": cps,
            "ringTimeoutSeconds": 5,
            "contacts": [{"number": n} for n in numbers],
        },
    )
    campaign_id = created["campaignId"]
    started = time.monotonic()
    _admin(stack, "POST", f"/campaigns/{campaign_id}/start")
    shown = 0.0
    while time.monotonic() - started < limit_s:
        view = _admin(stack, "GET", f"/campaigns/{campaign_id}?limit=1")
        if view["status"] == "completed":
            return campaign_id, time.monotonic() - started
        if time.monotonic() - shown > 15:
            shown = time.monotonic()
            print(f"  ... {view['counts']}", file=sys.stderr, flush=True)
        time.sleep(0.5)
    raise SystemExit(f"campaign did not complete in {limit_s:.0f} s: {view['counts']}")


def _count(stack: LocalStack, name: str, message: str) -> int:
    count = 0
    for line in stack.logs(name):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        count += record.get("message") == message
    return count


def pacing(stack: LocalStack, contacts: int, cps: float) -> dict[str, Any]:
    emulator = _emulator(stack)
    emulator.log.clear()
    runs_before = _count(stack, "dialer", "dialer run")
    numbers = [f"+1555{3000000 + i:07d}" for i in range(contacts)]
    limit = contacts / (cps * 0.9) * 1.5 + 120
    _, elapsed = _run_campaign(stack, numbers, cps, concurrent=200, limit_s=limit)
    arrivals = sorted(c.requested_at for c in emulator.log)
    span = arrivals[-1] - arrivals[0]
    per_second = Counter(int(t) for t in arrivals)
    first, last = min(per_second), max(per_second)
    histogram = Counter(per_second.get(s, 0) for s in range(first + 1, last))  # whole seconds
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    callbacks = sum(len(c.callbacks) for c in emulator.log)  # each one is one worker event
    api_requests = callbacks + sum(c.url_status is not None for c in emulator.log)
    return {
        "contacts": contacts,
        "cap": cps,
        "elapsed_s": round(elapsed, 1),
        "mean_rate": round((len(arrivals) - 1) / span, 3),
        "busiest_second": emulator.max_per_second(),
        "min_gap_ms": round(min(gaps) * 1000, 1),
        "histogram": dict(sorted(histogram.items())),
        "dialer_runs_per_contact": round(
            (_count(stack, "dialer", "dialer run") - runs_before) / contacts, 2
        ),
        "worker_events_per_contact": round(callbacks / contacts, 2),
        "api_requests_per_contact": round(api_requests / contacts, 2),
    }


def slot_to_dial(stack: LocalStack, contacts: int, concurrent: int) -> dict[str, Any]:
    emulator = _emulator(stack)
    emulator.log.clear()
    numbers = [f"+1555{4000000 + i:07d}" for i in range(contacts)]
    _run_campaign(stack, numbers, cps=100.0, concurrent=concurrent, limit_s=300)
    calls = sorted(emulator.log, key=lambda c: c.requested_at)
    delays = []
    for call in calls:
        ended = call.ended_at
        assert ended is not None
        live = sum(1 for c in calls if c.requested_at <= ended and (c.ended_at or 1e18) >= ended)
        later = [c.requested_at for c in calls if c.requested_at > ended]
        if live >= concurrent and later:  # every slot was taken: this end freed the next dial
            delays.append(min(later) - ended)
    delays.sort()
    return {
        "contacts": contacts,
        "max_concurrent": concurrent,
        "samples": len(delays),
        "p50_ms": round(statistics.median(delays) * 1000),
        "p95_ms": round(delays[min(len(delays) - 1, math.ceil(len(delays) * 0.95) - 1)] * 1000),
        "max_ms": round(delays[-1] * 1000),
        "peak_concurrent_seen": emulator.max_concurrent(),
    }


def _show(label: str, result: dict[str, Any]) -> None:
    """stderr: while the stack runs, stdout is its log tap, which keeps JSON lines to itself."""
    print(f"{label}: {json.dumps(result)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--cps", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--hold", type=float, default=1.0, help="seconds an answered call lasts")
    parser.add_argument("--slot-contacts", type=int, default=60)
    args = parser.parse_args(argv)
    options = StackOptions(
        api_port=0,
        edge_port=0,
        quiet=True,
        environ={},
        overrides={"DIALER_RECONCILE_SECONDS": "30"},
        aws_prefix="bench-outbound",
    )
    with LocalStack(options) as stack:
        emulator = _emulator(stack)
        emulator.media = False
        emulator.hold_ms = int(args.hold * 1000)
        emulator.ring_ms = 200
        emulator.cps = 1000.0  # the account's CPS: never the limit here, ours is
        results: dict[str, Any] = {"pacing": [], "slot": None}
        for cps in args.cps:
            contacts = args.contacts if cps >= 2 else min(args.contacts, 120)
            result = pacing(stack, contacts, cps)
            results["pacing"].append(result)
            _show("pacing", result)
        emulator.hold_ms = 2000  # 3 calls of 2 s: what one local worker process concludes
        results["slot"] = slot_to_dial(stack, args.slot_contacts, concurrent=3)
        _show("slot freed -> next dial", results["slot"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
