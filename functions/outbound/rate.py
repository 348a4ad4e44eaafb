"""Pacing dials to a calls-per-second cap: a generic cell rate algorithm with a burst of one.

The shared state is one number, the earliest time the next dial may start (``next_free_ms``).
Taking a slot at ``now`` succeeds when ``next_free_ms <= now`` and moves it to ``now + interval``;
the shell makes that a conditional write in DynamoDB, so every dialer invocation of a campaign
shares one limit. Dials are therefore at least ``interval`` apart, which keeps any one-second
window at or below the cap (a calendar-second counter would let two calls through a few ms
apart at a second's boundary).

What Twilio counts, though, is when our request *reaches* it, and two requests granted an
interval apart arrive closer whenever the first one spends longer on the way (GC, a busy host:
100-300 ms measured on a loaded test machine). So once a request has been answered the slot is
pushed to ``answered + 1/cps`` (:func:`after_request`): the next grant comes a spacing after the
previous request had certainly arrived, whatever its delay. For one dialer at a time (the
usual case) that makes the cap exact as Twilio sees it; dialers running in parallel keep the
grant spacing plus a guard of 5 % of the interval (at most 100 ms) for requests they have in
flight together. The price is throughput: a create's round trip beyond the guard, per
interval. Twilio queues calls over the account's CPS rather than failing them
(https://support.twilio.com/hc/en-us/articles/223180028), so erring low costs little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_CALLS_PER_SECOND = 100.0
MIN_CALLS_PER_SECOND = 0.01


def interval_ms(calls_per_second: float) -> int:
    """Milliseconds between two dials for the cap (guard included)."""
    if not MIN_CALLS_PER_SECOND <= calls_per_second <= MAX_CALLS_PER_SECOND:
        raise ValueError(f"calls per second must be in [{MIN_CALLS_PER_SECOND}, 100]")
    spacing = 1000.0 / calls_per_second
    guard = min(100.0, spacing * 0.05)
    return math.ceil(spacing + guard)


@dataclass(frozen=True, slots=True)
class Slot:
    """The answer to "may I dial now?": granted, or how long to wait before asking again."""

    granted: bool
    next_free_ms: int  # the state to write when granted; the current one when not
    wait_ms: int = 0


def take(next_free_ms: int | None, now_ms: int, interval: int) -> Slot:
    """Take the slot at ``now_ms`` if it is free (``next_free_ms`` None: never used)."""
    if next_free_ms is None or next_free_ms <= now_ms:
        return Slot(True, now_ms + interval)
    return Slot(False, next_free_ms, next_free_ms - now_ms)


def after_request(answered_ms: int, calls_per_second: float) -> int:
    """The earliest next slot once a create request sent under this limit has been answered:
    one spacing (no guard: the request has certainly arrived) after the answer."""
    return answered_ms + math.ceil(1000.0 / calls_per_second)
