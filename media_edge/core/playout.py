"""Outbound playout: paces 20 ms frames to Twilio a little ahead of real time and tracks marks.

Twilio plays whatever it has buffered, even after the caller interrupts, unless we send
``clear``; so we keep at most ``lead_ms`` buffered there. We estimate when Twilio's buffer runs
dry (``play_end``) and top it up whenever it holds <= ``lead_ms - 40``, two 20 ms frames per
message (one when the lead is under 80 ms): half the messages for the same audio. Marks (one per
``MARK_EVERY_FRAMES`` frames, and one once our queue has stayed empty for ``END_MARK_DELAY_MS``:
audio streamed in real time empties the queue after every frame, and must not cost a mark per
frame) say what has really played; after a ``clear`` Twilio echoes every pending mark anyway,
so cleared mark names are remembered and their audio is counted as not played.
"""

from __future__ import annotations

from collections import deque

from media_edge.core.actions import Action, SendToTwilio
from media_edge.core.audio import FRAME_MS
from media_edge.protocol.twilio import TwilioWriter

MARK_EVERY_FRAMES = 10  # 200 ms: enough resolution for "what played" at 1/10 the mark traffic
END_MARK_DELAY_MS = 2 * FRAME_MS  # more than a frame's arrival jitter
MAX_QUEUE_FRAMES = 1500  # 30 s of assistant audio ahead of the caller: beyond that, drop
MAX_BACKSTOP_SLACK_MS = 40
BATCH_FROM_LEAD_MS = 80  # with this much lead, send 40 ms per message: half the messages


class Playout:
    __slots__ = (
        "_batch",
        "_cleared",
        "_lead",
        "_mark_due",
        "_marks",
        "_queue",
        "_seq",
        "_since_mark",
        "_slack",
        "_writer",
        "frames_cleared",
        "frames_dropped",
        "frames_played",
        "frames_sent",
        "last_chunk",
        "last_start",
        "play_end",
    )

    def __init__(self, writer: TwilioWriter, lead_ms: int) -> None:
        self._writer = writer
        self._lead = max(FRAME_MS, lead_ms)
        # The timer is only a backstop: inbound media (every 20 ms) normally drives pump().
        self._batch = 2 if self._lead >= BATCH_FROM_LEAD_MS else 1
        self._slack = min(MAX_BACKSTOP_SLACK_MS, (self._lead - self._batch * FRAME_MS) // 2)
        self._queue: deque[bytes] = deque()
        self._marks: deque[tuple[str, int]] = deque()  # (name, frames since previous mark)
        self._cleared: set[str] = set()
        self._seq = 0
        self._since_mark = 0
        self._mark_due = 0.0  # when the frames sent since the last mark get one (queue empty)
        self.play_end = 0.0  # estimated time Twilio's buffer runs dry (ms, caller's clock)
        self.frames_sent = self.frames_played = self.frames_cleared = self.frames_dropped = 0
        self.last_chunk = b""  # what the latest pump sent, and when Twilio starts playing it
        self.last_start = 0.0

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def playing(self) -> bool:
        """Audio was sent that Twilio has not confirmed playing yet."""
        return bool(self._marks) or self._since_mark > 0

    @property
    def pending(self) -> bool:
        """Assistant audio not yet played: queued here, or sent and not confirmed by a mark."""
        return bool(self._queue) or bool(self._marks) or self._since_mark > 0

    def enqueue(self, frames: list[bytes]) -> int:
        """Queue frames; returns how many were dropped because the queue is full."""
        room = MAX_QUEUE_FRAMES - len(self._queue)
        if len(frames) > room:
            self._queue.extend(frames[: max(room, 0)])
            dropped = len(frames) - max(room, 0)
            self.frames_dropped += dropped
            return dropped
        self._queue.extend(frames)
        return 0

    def pump(self, now: float, out: list[Action]) -> int:
        """Send as many frames as keep Twilio's buffer <= lead; returns frames sent."""
        queue = self._queue
        if not queue:
            if self._since_mark and now >= self._mark_due:
                self._mark(out)  # no more audio came: mark the end of what was sent
            return 0
        ahead = self.play_end - now
        if ahead < 0.0:
            ahead = 0.0
        n = int((self._lead - ahead) // FRAME_MS)
        if n < self._batch and (n <= 0 or len(queue) >= self._batch):
            return 0
        if n >= len(queue):
            n = len(queue)
        chunk = queue.popleft() if n == 1 else b"".join([queue.popleft() for _ in range(n)])
        out.append(SendToTwilio(self._writer.media(chunk)))
        self.last_chunk = chunk
        self.last_start = now + ahead
        self.play_end = now + ahead + n * FRAME_MS
        self.frames_sent += n
        self._since_mark += n
        if self._since_mark >= MARK_EVERY_FRAMES:
            self._mark(out)
        elif not queue:
            self._mark_due = now + END_MARK_DELAY_MS
        return n

    def mark_sent(self, out: list[Action]) -> None:
        """Mark what was sent so far now, rather than with the next batch: playout is about to
        pause, and the echo is what says the audio Twilio still holds really played."""
        if self._since_mark:
            self._mark(out)

    def _mark(self, out: list[Action]) -> None:
        self._seq += 1
        name = f"m{self._seq}"
        self._marks.append((name, self._since_mark))
        self._since_mark = 0
        out.append(SendToTwilio(self._writer.mark(name)))

    def next_deadline(self) -> float | None:
        """When the timer must pump if nothing else does (None: nothing queued or unmarked)."""
        if not self._queue:
            return self._mark_due if self._since_mark else None
        return self.play_end - self._lead + self._batch * FRAME_MS + self._slack

    @property
    def unmarked(self) -> bool:
        """Frames were sent that no mark covers yet (one is due at the latest a frame later)."""
        return self._since_mark > 0

    def on_mark(self, name: str, now: float) -> None:
        """Twilio echoed a mark: the audio before it played (unless we had cleared it).

        The echo is also a clock check: whatever we sent after that mark cannot finish before
        ``now`` + its length. If Twilio started or ran late, move our estimate out so the
        buffer there stays near ``lead_ms`` (less stale audio to hear after a barge-in)."""
        if name in self._cleared:
            self._cleared.discard(name)
            return
        marks = self._marks
        if all(seen != name for seen, _ in marks):
            return  # not ours (or already accounted for): nothing to learn from it
        while marks:
            seen, frames = marks.popleft()
            self.frames_played += frames
            if seen == name:
                break
        after = self._since_mark + sum(frames for _, frames in marks)
        earliest_end = now + after * FRAME_MS
        if earliest_end > self.play_end:
            self.play_end = earliest_end

    def clear(self, now: float) -> str | None:
        """Barge-in: drop the queue, forget what Twilio holds; the ``clear`` message, or None if
        no assistant audio was pending."""
        if not self.pending:
            return None
        unplayed = self._since_mark + sum(frames for _, frames in self._marks)
        self.frames_cleared += unplayed + len(self._queue)
        self._cleared.update(name for name, _ in self._marks)
        self._marks.clear()
        self._queue.clear()
        self._since_mark = 0
        self.play_end = now
        return self._writer.clear()
