"""The call's tape: both legs on one 20 ms grid, as the caller heard them.

Slot ``k`` is the 20 ms from ``origin + 20 k`` on the edge's clock (ms), ``origin`` being when
the stream's ``start`` arrived. Twilio's media timestamps count ms from the stream start, so the
caller's frame with timestamp ``ts`` fills slot ``round(ts / 20)`` of the left leg, and a gap in
the timestamps stays silence. The assistant's audio (the right leg) lands where the playout
scheduled it to play (``Playout.pump``: now + what Twilio still holds). A ``clear`` at ``now``
takes out every assistant frame scheduled to start at or after ``now``: Twilio drops what it
still holds when the clear arrives, and the clear travels the path the audio took, so the
downlink delay cancels out. What a pause held back was never sent: silence.

Alignment: the assistant leg is placed when it left us, the caller leg when it reached us
(slot 0 = the stream start as we saw it), so the caller heard the assistant about one network
round trip (edge <-> Twilio, tens of ms in-region) later than the tape shows, never earlier.

A slot is final once nothing can change it: its assistant side once its time has begun (a later
clear only removes what starts after that clear), its caller side once a later caller frame
arrived or it lies more than ``LAG_SLOTS`` in the past (a stalled stream becomes silence rather
than holding the window; a frame arriving later than that is dropped and counted). Final slots
leave in whole 100 ms blocks (``ready``: mu-law, one ``bytes`` per leg). The window is two rings
sized from the playout lead: the tape never holds more, however long the call.
"""

from __future__ import annotations

from media_edge.dsp import ULAW_SILENCE_BYTE

FRAME_MS = 20
FRAME_BYTES = 160
BLOCK_SLOTS = 5  # 100 ms: the unit that leaves the tape (levels, recording)
BLOCK_MS = BLOCK_SLOTS * FRAME_MS
LAG_SLOTS = 50  # 1 s: caller audio later than this is not waited for
AHEAD_SLOTS = 5  # caller timestamps may run this far ahead of our clock (a late ``start``)
_SILENCE_FRAME = bytes([ULAW_SILENCE_BYTE]) * FRAME_BYTES
_SILENCE_BLOCK = _SILENCE_FRAME * BLOCK_SLOTS

Block = tuple[bytes, bytes]  # (caller, assistant) mu-law, BLOCK_SLOTS frames (the last: fewer)


class Tape:
    """Feed ``caller``/``assistant``/``clear`` as they happen and ``advance`` with the clock;
    drain ``ready`` after each. Not thread-safe, no I/O, no clock of its own."""

    __slots__ = (
        "_assistant",
        "_assistant_next",
        "_base",
        "_caller",
        "_caller_next",
        "_limit",
        "_shift",
        "_slots",
        "frames_late",
        "origin",
        "ready",
        "resyncs",
    )

    def __init__(self, origin: float, lead_ms: int, max_ms: int) -> None:
        # The assistant is scheduled up to lead_ms ahead, the caller waited for up to LAG_SLOTS
        # behind; a block of slack each way keeps a whole block in the ring.
        slots = LAG_SLOTS + -(-lead_ms // FRAME_MS) + 3 * BLOCK_SLOTS
        slots += -slots % BLOCK_SLOTS  # whole blocks: a block never wraps around the ring
        self._slots = slots
        self._caller = memoryview(bytearray(_SILENCE_FRAME * slots))  # fixed size: no resize
        self._assistant = memoryview(bytearray(_SILENCE_FRAME * slots))
        self._base = 0  # first slot not yet final
        self._caller_next = 0  # one past the latest caller slot filled
        self._assistant_next = 0  # one past the latest assistant slot filled
        self._shift = 0  # slots added to the caller's timestamps (after they ran ahead)
        self._limit = max(0, max_ms) // FRAME_MS  # the tape ends there, whatever comes
        self.origin = origin
        self.ready: list[Block] = []
        self.frames_late = 0
        self.resyncs = 0

    @property
    def window_bytes(self) -> int:
        return 2 * self._slots * FRAME_BYTES

    @property
    def duration_ms(self) -> int:
        """How much of the call has left the tape."""
        return self._base * FRAME_MS

    def caller(self, timestamp_ms: int, payload: bytes, now: float) -> int:
        """Place one caller frame (Twilio ``media``) and move what became final to ``ready``;
        the frame's slot, or -1 if it came too late. Runs per frame: the usual path is a few
        comparisons and one 160-byte copy."""
        k = (timestamp_ms + FRAME_MS // 2) // FRAME_MS + self._shift
        clock = (now - self.origin) / FRAME_MS  # the slot playing now, fractional
        if k > clock + AHEAD_SLOTS:  # timestamps ran ahead of our clock (or jumped): follow it
            ahead = k - int(clock) - AHEAD_SLOTS
            self._shift -= ahead
            k -= ahead
            self.resyncs += 1
        if k < self._base or k >= self._limit:
            self.frames_late += 1
            return -1
        if len(payload) != FRAME_BYTES:  # Twilio sends 20 ms frames; anything else is fitted
            payload = (payload + _SILENCE_FRAME)[:FRAME_BYTES]
        if k >= self._base + self._slots:
            self._room(k)
        i = (k % self._slots) * FRAME_BYTES
        self._caller[i : i + FRAME_BYTES] = payload
        if k >= self._caller_next:
            self._caller_next = k + 1
        next_block = self._base + BLOCK_SLOTS
        if self._caller_next >= next_block or clock - LAG_SLOTS >= next_block:
            self.advance(now)
        return k

    def assistant(self, chunk: bytes, start_ms: float, follows: bool = False) -> None:
        """Whole 20 ms frames sent to Twilio that it starts playing at ``start_ms`` (ours).

        ``follows``: Twilio still held audio when these were sent, so they play right after
        it, whatever our estimate of its clock says (a mark that moved the estimate is a
        correction of the past, not a gap in what the caller hears)."""
        k = self._assistant_next
        if not follows or k <= self._base:  # after a gap: where our clock says it starts
            k = max(k, self._base, int((start_ms - self.origin) / FRAME_MS + 0.5))
        size = len(chunk)
        n = size // FRAME_BYTES
        # whole frames only; never past the end, nor more than the ring holds
        if size % FRAME_BYTES or k + n > self._limit or n > self._slots - BLOCK_SLOTS:
            n = min(self._limit - k, self._slots - BLOCK_SLOTS)
            if n <= 0:
                return
            size = n * FRAME_BYTES
            chunk = chunk[:size]
        if k + n > self._base + self._slots:
            self._room(k + n - 1)
        ring = self._assistant
        start = (k % self._slots) * FRAME_BYTES
        if start + size <= len(ring):
            ring[start : start + size] = chunk
        else:
            for j in range(n):
                i = ((k + j) % self._slots) * FRAME_BYTES
                ring[i : i + FRAME_BYTES] = chunk[j * FRAME_BYTES : (j + 1) * FRAME_BYTES]
        self._assistant_next = k + n

    def clear(self, now: float) -> int:
        """Twilio is told to ``clear`` at ``now``: drop what was to start playing from then on;
        returns how many frames that was."""
        cut = -int((self.origin - now) // FRAME_MS)  # the first slot starting at/after now
        if cut < self._base:
            cut = self._base
        removed = self._assistant_next - cut
        if removed <= 0:
            return 0
        ring = self._assistant
        for k in range(cut, self._assistant_next):
            i = (k % self._slots) * FRAME_BYTES
            ring[i : i + FRAME_BYTES] = _SILENCE_FRAME
        self._assistant_next = cut
        return removed

    def advance(self, now: float) -> None:
        """Move whole blocks that can no longer change to ``ready``."""
        t = int((now - self.origin) // FRAME_MS)
        limit = self._caller_next
        if limit < t - LAG_SLOTS:
            limit = t - LAG_SLOTS
        if limit > t:
            limit = t
        if limit > self._limit:
            limit = self._limit
        while self._base + BLOCK_SLOTS <= limit:
            self._commit(BLOCK_SLOTS)

    def finish(self, now: float) -> None:
        """The call ended at ``now``: everything up to then is final (the last block may be
        short); nothing is taken afterwards."""
        end = max(int((now - self.origin) // FRAME_MS), self._caller_next)
        end = min(end, self._limit)
        while self._base < end:
            self._commit(min(BLOCK_SLOTS, end - self._base))
        self._limit = self._base

    def _room(self, k: int) -> None:
        """Make slot ``k`` fit the ring: what is older than the window is final, caller or not
        (only reached when the caller stalls while the assistant plays, or a hostile clock)."""
        while k >= self._base + self._slots:
            self._commit(BLOCK_SLOTS)

    def _commit(self, n: int) -> None:
        i = (self._base % self._slots) * FRAME_BYTES
        j = i + n * FRAME_BYTES
        caller, assistant = self._caller, self._assistant
        self.ready.append((caller[i:j].tobytes(), assistant[i:j].tobytes()))
        silence = _SILENCE_BLOCK if n == BLOCK_SLOTS else _SILENCE_FRAME * n
        caller[i:j] = silence
        assistant[i:j] = silence
        self._base += n
