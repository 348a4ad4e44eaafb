"""A picture of the call: where the time went, as data to draw on one time axis.

Fed by the Call as things happen (no I/O, no clock): both legs' levels from the tape's 100 ms
blocks (what the caller heard: the same audio as the recording), the caller's turns from the
edge's VAD and from Vapi's ``speech-update``, the assistant's turns from what the playout sent,
pauses, interruptions, clears, and the latency of every reply. Times are ms from the stream
start (the tape's slot 0, the live console's axis).

Two outputs: ``snapshot()`` (stored with the call record at the end, bounded: levels merge
pairwise whenever they reach ``MAX_BUCKETS`` per leg, so a bucket is 100 ms, then 200 ms, ...;
each event list stops at ``MAX_EVENTS`` and counts the rest in ``dropped``) and ``delta()`` (what
changed since the last delta, for the live feed: raw 100 ms levels from ``fromMs``, new events,
and the last span or pause again, which a renderer upserts by its start).

Held as flat ``array``s of small integers (a level is one byte, an event a few ints): a long
call's picture costs tens of KB, not the hundreds a list of Python ints would.

The shape (JSON; spans are ``[fromMs, toMs]``, ``toMs`` null while open, in a delta)::

    {"version": 1, "startedAt": epoch ms, "durationMs", "bucketMs",
     "levels": {"caller": [dBFS...], "assistant": [...]},  # integers, SILENT_DB = silence
     "turns": {"caller": [[from, to]...], "assistant": [...]},
     "vapiSpeech": [[from, to]...],  # the caller speaking, as Vapi's speech-update says
     "pauses": [{"fromMs", "toMs", "source", "outcome"}],
     "interruptions": [{"at", "cleared"}], "clears": [{"at", "droppedMs"}],
     "replies": [{"at", "latencyMs"}], "firstAudio": {"at", "latencyMs"} | null,
     "dropped": events left out}
"""

from __future__ import annotations

from array import array
from typing import Any

from media_edge.dsp import ULAW_SILENCE_BYTE
from media_edge.dsp.pcm import LEVEL_FLOOR_DB, ulaw_level_db

VERSION = 1
BLOCK_MS = 100
MAX_BUCKETS = 4096  # per leg: a 1 h call draws at 1.6 s per bucket, 2250 buckets
MAX_EVENTS = 600  # per list: one every 6 s for an hour
SILENT_DB = LEVEL_FLOOR_DB  # the floor: anything quieter (digital silence) draws as this
_SILENT_BLOCK = bytes([ULAW_SILENCE_BYTE]) * 800  # a quiet leg's block (the assistant's, often)
OPEN = -1  # a span's end while it is open

PAUSE_SOURCES = ("speech-update", "local_vad")
PAUSE_OUTCOMES = ("open", "resumed", "limit", "cleared", "interrupted", "ended")

Span = list[int | None]


class _Spans:
    """Spans ``[from, to]`` in time order, flat; ``open`` again while open is a no-op. The
    last span's end stays a plain int (``end``) while it grows, once per playout send: the
    array is written when the next span starts or the spans are read."""

    __slots__ = ("end", "flat", "sent")

    def __init__(self) -> None:
        self.flat = array("i")
        self.end = OPEN  # the last span's end (OPEN: none, or still open)
        self.sent = 0  # spans a delta has carried (the last one is carried again: it may grow)

    def __len__(self) -> int:
        return len(self.flat) // 2

    @property
    def is_open(self) -> bool:
        return bool(self.flat) and self.end == OPEN

    def _settle(self) -> None:
        if self.flat:
            self.flat[-1] = self.end

    def open(self, at: int, picture: Picture) -> None:
        if self.is_open:
            return
        self._settle()
        if len(self) >= MAX_EVENTS:
            picture.dropped += 1
            return
        self.flat.extend((at, OPEN))
        self.end = OPEN

    def close(self, at: int) -> None:
        if self.is_open:
            self.end = max(at, self.flat[-2])

    def extend(self, start: int, end: int, new: bool, picture: Picture) -> None:
        """Audio from ``start`` to ``end``: a new span, or the last one made longer."""
        if new or not self.flat:
            self._settle()
            if len(self) >= MAX_EVENTS:
                picture.dropped += 1
                return
            self.flat.extend((start, end))
            self.end = end
        elif end > self.end:
            self.end = end

    def cut(self, at: int) -> None:
        """The last span stops at ``at`` (a clear took the rest)."""
        if self.flat and self.end > at:
            self.end = max(at, self.flat[-2])

    def spans(self, start: int = 0, end: int | None = None) -> list[Span]:
        """From span ``start`` on; an open span ends at ``end`` (None: still open)."""
        self._settle()
        flat = self.flat
        return [
            [flat[i], end if flat[i + 1] == OPEN else flat[i + 1]]
            for i in range(2 * start, len(flat), 2)
        ]

    def fresh(self) -> list[Span]:
        start = max(0, self.sent - 1)
        self.sent = len(self)
        return self.spans(start)


class _Events:
    """Fixed-width integer records, flat (e.g. ``at, latencyMs``)."""

    __slots__ = ("flat", "sent", "width")

    def __init__(self, width: int) -> None:
        self.flat = array("i")
        self.width = width
        self.sent = 0

    def __len__(self) -> int:
        return len(self.flat) // self.width

    def add(self, picture: Picture, *values: int) -> None:
        if len(self) >= MAX_EVENTS:
            picture.dropped += 1
            return
        self.flat.extend(values)

    def rows(self, start: int = 0) -> list[tuple[int, ...]]:
        w, flat = self.width, self.flat
        return [tuple(flat[i : i + w]) for i in range(start * w, len(flat), w)]

    def fresh(self, again: int = 0) -> list[tuple[int, ...]]:
        start = max(0, self.sent - again)
        self.sent = len(self)
        return self.rows(start)


class Picture:
    __slots__ = (
        "_assistant_max",
        "_bucket_blocks",
        "_caller_max",
        "_first_sent",
        "_in_bucket",
        "_live_assistant",
        "_live_caller",
        "assistant_levels",
        "assistant_turns",
        "blocks",
        "caller_levels",
        "caller_turns",
        "clears",
        "dropped",
        "first_audio",
        "interruptions",
        "live_from",
        "pauses",
        "replies",
        "started_at",
        "vapi_speech",
    )

    def __init__(self, started_at_epoch_ms: int) -> None:
        self.started_at = started_at_epoch_ms
        self.caller_levels = array("b")
        self.assistant_levels = array("b")
        self._bucket_blocks = 1  # tape blocks per bucket (doubles when the levels merge)
        self._in_bucket = 0
        self._caller_max = SILENT_DB
        self._assistant_max = SILENT_DB
        self.blocks = 0
        self.live_from = 0  # the first block no delta has carried yet
        self._live_caller: list[int] = []
        self._live_assistant: list[int] = []
        self.caller_turns = _Spans()
        self.assistant_turns = _Spans()
        self.vapi_speech = _Spans()
        self.pauses = _Events(4)  # fromMs, toMs (OPEN), source, outcome (indexes)
        self.interruptions = _Events(2)  # at, cleared (0/1)
        self.clears = _Events(2)  # at, droppedMs
        self.replies = _Events(2)  # at, latencyMs
        self.first_audio = -1  # ms from the stream start, once known
        self._first_sent = False
        self.dropped = 0

    # -- levels (one tape block at a time) ----------------------------------------------------

    def block(self, caller: bytes, assistant: bytes) -> None:
        c = _db(caller)
        a = _db(assistant)
        self.blocks += 1
        self._live_caller.append(c)
        self._live_assistant.append(a)
        if c > self._caller_max:
            self._caller_max = c
        if a > self._assistant_max:
            self._assistant_max = a
        self._in_bucket += 1
        if self._in_bucket < self._bucket_blocks:
            return
        self.caller_levels.append(self._caller_max)
        self.assistant_levels.append(self._assistant_max)
        self._in_bucket = 0
        self._caller_max = self._assistant_max = SILENT_DB
        if len(self.caller_levels) >= MAX_BUCKETS:
            self.caller_levels = _pairs(self.caller_levels)
            self.assistant_levels = _pairs(self.assistant_levels)
            self._bucket_blocks *= 2

    # -- events (times in ms from the stream start) -------------------------------------------

    def caller_speech(self, at: int, started: bool) -> None:
        """The edge's VAD: the caller started (or stopped) speaking at ``at``."""
        if started:
            self.caller_turns.open(at, self)
        else:
            self.caller_turns.close(at)

    def vapi_user_speech(self, at: int, started: bool) -> None:
        if started:
            self.vapi_speech.open(at, self)
        else:
            self.vapi_speech.close(at)

    def assistant_audio(self, start: int, end: int, new_turn: bool) -> None:
        turns = self.assistant_turns
        if new_turn or not turns.flat:
            turns.extend(start, end, True, self)
        elif end > turns.end:  # the usual case, once per send: the turn goes on
            turns.end = end

    def paused(self, at: int, source: str) -> None:
        code = PAUSE_SOURCES.index(source) if source in PAUSE_SOURCES else 0
        self.pauses.add(self, at, OPEN, code, 0)

    def pause_ended(self, at: int, outcome: str) -> None:
        """``outcome``: resumed (a backchannel), limit (no verdict in time), cleared,
        interrupted (with nothing playing), ended (the call)."""
        flat = self.pauses.flat
        if flat and flat[-3] == OPEN:
            flat[-3] = max(at, flat[-4])
            flat[-1] = PAUSE_OUTCOMES.index(outcome)

    def interrupted(self, at: int, cleared: bool) -> None:
        self.interruptions.add(self, at, 1 if cleared else 0)

    def cleared(self, at: int, dropped_ms: int) -> None:
        self.clears.add(self, at, dropped_ms)
        self.assistant_turns.cut(at)

    def reply(self, at: int, latency_ms: int) -> None:
        """The assistant answered at ``at``, ``latency_ms`` after the caller stopped speaking."""
        self.replies.add(self, at, latency_ms)

    def first(self, at: int) -> None:
        """The call's first assistant audio, ``at`` ms after the stream started."""
        if self.first_audio < 0:
            self.first_audio = at

    # -- outputs ------------------------------------------------------------------------------

    def delta(self) -> dict[str, Any]:
        """What changed since the last delta (JSON-ready and small: for the live feed)."""
        out: dict[str, Any] = {
            "fromMs": self.live_from * BLOCK_MS,
            "bucketMs": BLOCK_MS,
            "levels": {"caller": self._live_caller, "assistant": self._live_assistant},
            "turns": {
                "caller": self.caller_turns.fresh(),
                "assistant": self.assistant_turns.fresh(),
            },
            "vapiSpeech": self.vapi_speech.fresh(),
            "pauses": [_pause(row, None) for row in self.pauses.fresh(again=1)],
            "interruptions": [_interruption(row) for row in self.interruptions.fresh()],
            "clears": [_clear(row) for row in self.clears.fresh()],
            "replies": [_reply(row) for row in self.replies.fresh()],
        }
        if self.first_audio >= 0 and not self._first_sent:
            out["firstAudio"] = {"at": self.first_audio, "latencyMs": self.first_audio}
            self._first_sent = True
        self.live_from = self.blocks
        self._live_caller = []
        self._live_assistant = []
        return out

    def snapshot(self) -> dict[str, Any]:
        """The whole picture (JSON-ready, bounded): what the call record keeps."""
        duration = self.blocks * BLOCK_MS
        caller = self.caller_levels.tolist()
        assistant = self.assistant_levels.tolist()
        if self._in_bucket:  # the last, partial bucket
            caller.append(self._caller_max)
            assistant.append(self._assistant_max)
        first = self.first_audio
        return {
            "version": VERSION,
            "startedAt": self.started_at,
            "durationMs": duration,
            "bucketMs": BLOCK_MS * self._bucket_blocks,
            "levels": {"caller": caller, "assistant": assistant},
            "turns": {
                "caller": self.caller_turns.spans(0, duration),
                "assistant": self.assistant_turns.spans(0, duration),
            },
            "vapiSpeech": self.vapi_speech.spans(0, duration),
            "pauses": [_pause(row, duration) for row in self.pauses.rows()],
            "interruptions": [_interruption(row) for row in self.interruptions.rows()],
            "clears": [_clear(row) for row in self.clears.rows()],
            "replies": [_reply(row) for row in self.replies.rows()],
            "firstAudio": {"at": first, "latencyMs": first} if first >= 0 else None,
            "dropped": self.dropped,
        }


def _pause(row: tuple[int, ...], end: int | None) -> dict[str, Any]:
    at, to, source, outcome = row
    result: dict[str, Any] = {"fromMs": at, "toMs": to, "source": PAUSE_SOURCES[source]}
    result["outcome"] = PAUSE_OUTCOMES[outcome]
    if to == OPEN:  # still paused: open in a delta, ended with the call in the snapshot
        result["toMs"] = end
        result["outcome"] = None if end is None else "ended"
    return result


def _interruption(row: tuple[int, ...]) -> dict[str, Any]:
    return {"at": row[0], "cleared": bool(row[1])}


def _clear(row: tuple[int, ...]) -> dict[str, Any]:
    return {"at": row[0], "droppedMs": row[1]}


def _reply(row: tuple[int, ...]) -> dict[str, Any]:
    return {"at": row[0], "latencyMs": row[1]}


def _db(block: bytes) -> int:
    return SILENT_DB if block == _SILENT_BLOCK else ulaw_level_db(block)


def _pairs(levels: array[int]) -> array[int]:
    """Halve the resolution: each bucket the louder of two (a peak envelope stays visible)."""
    merged = array("b", map(max, levels[0::2], levels[1::2]))
    if len(levels) % 2:
        merged.append(levels[-1])
    return merged
