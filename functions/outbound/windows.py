"""Calling windows: the local wall-clock hours a contact may be called, in the contact's zone.

A window is ``[start, end)`` in local time; ``end`` before ``start`` spans midnight (20:00-02:00),
``start == end`` is the whole day. "Local" is the IANA zone's wall clock, so daylight saving is the
zone database's business (``zoneinfo``). Two cases need care:

- the spring-forward gap: when ``start`` does not exist on a day (02:30 while clocks jump from
  02:00 to 03:00), the window opens at the jump, the first instant whose wall clock is past it;
- the fall-back fold: a wall time that happens twice is inside the window both times (the rule
  is about what the clock on the contact's wall says).

Pure functions of an epoch-seconds ``now``: the dialer's clock is injected, never read here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?")
MAX_ZONE_CHARS = 64


class WindowError(ValueError):
    """A window or a time zone the dialer cannot use (the message says which and why)."""


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (e.g. ``America/New_York``), or WindowError."""
    if not name or len(name) > MAX_ZONE_CHARS:
        raise WindowError(f"unknown time zone {name[:MAX_ZONE_CHARS]!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: not a key shape ("../x", "/abs")
        raise WindowError(f"unknown time zone {name!r}") from None


def parse_clock(text: str) -> time:
    """``HH:MM`` or ``HH:MM:SS`` (24-hour) -> a time, or WindowError."""
    match = _CLOCK.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise WindowError(f"{text!r} is not a 24-hour time like 09:00 or 20:30:00")
    hours, minutes, seconds = match.groups()
    return time(int(hours), int(minutes), int(seconds or 0))


@dataclass(frozen=True, slots=True)
class CallingWindow:
    start: time
    end: time

    @classmethod
    def parse(cls, start: str, end: str) -> CallingWindow:
        return cls(parse_clock(start), parse_clock(end))

    def contains(self, wall: time) -> bool:
        """Is this local wall-clock time inside the window?"""
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= wall < self.end
        return wall >= self.start or wall < self.end


def _wall(now: float, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(now, UTC).astimezone(tz).replace(tzinfo=None)


def is_open(window: CallingWindow | None, tz: ZoneInfo, now: float) -> bool:
    """May the contact be called at ``now`` (epoch seconds)? No window: always."""
    return window is None or window.contains(_wall(now, tz).time())


def _first_instant_at(day: date, clock: time, tz: ZoneInfo) -> float:
    """The first instant whose wall clock on ``day`` reads ``clock`` or later.

    ``fold=0`` gives the first of two occurrences (fall back). In a spring-forward gap the wall
    time never occurs: there ``fold=1`` maps before the jump and ``fold=0`` after it, and the
    answer is the jump itself, found by bisection (the wall clock only moves forward in a gap).
    """
    naive = datetime.combine(day, clock)
    first = naive.replace(tzinfo=tz, fold=0).timestamp()
    second = naive.replace(tzinfo=tz, fold=1).timestamp()
    if second >= first:  # the time exists (once, or twice in a fold)
        return first
    low, high = second, first  # wall(low) < clock <= wall(high)
    while high - low > 1.0:
        middle = (low + high) / 2
        if _wall(middle, tz) >= naive:
            high = middle
        else:
            low = middle
    return float(math.ceil(high))  # the wall clock only moves forward here: still >= clock


def next_open(window: CallingWindow | None, tz: ZoneInfo, now: float) -> float:
    """The first instant at or after ``now`` when the window is open (``now`` if it is)."""
    if is_open(window, tz, now):
        return now
    assert window is not None
    today = _wall(now, tz).date()
    for offset in range(3):  # today's opening may have passed; tomorrow's cannot have
        opening = _first_instant_at(today + timedelta(days=offset), window.start, tz)
        if opening >= now:
            return opening
    raise AssertionError("a window opens at least once every day")  # pragma: no cover
