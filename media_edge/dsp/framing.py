"""Timing of the 20 ms frame grid: inbound gap filling and outbound re-framing."""

from __future__ import annotations


class GapFiller:
    """Keeps Vapi's inbound clock continuous from Twilio's ``media.timestamp`` (ms since start).

    Each frame is snapped to the nearest slot of the ``frame_ms`` grid whose origin is the first
    frame, so a few ms of jitter never invents or loses a frame. A frame whose slot is already
    taken (a duplicate, or a late frame we already filled with silence) is dropped. A gap longer
    than ``max_fill`` frames is filled with ``max_fill`` frames only, and the grid re-syncs: a
    hostile timestamp jump must not make us generate minutes of audio.
    """

    def __init__(self, frame_ms: int = 20, max_fill: int = 50) -> None:
        if frame_ms <= 0 or max_fill < 0:
            raise ValueError("frame_ms must be > 0 and max_fill >= 0")
        self.frame_ms = frame_ms
        self.max_fill = max_fill
        self.reset()

    def reset(self) -> None:
        self._origin: int | None = None
        self._next_slot = 0

    def admit(self, timestamp_ms: int) -> int:
        """Silence frames to insert before this frame (>= 0), or -1: drop it."""
        if self._origin is None:
            self._origin = timestamp_ms
            self._next_slot = 1
            return 0
        half = self.frame_ms // 2
        slot = (timestamp_ms - self._origin + half) // self.frame_ms
        if slot < self._next_slot:
            return -1
        gap = slot - self._next_slot
        if gap > self.max_fill:
            gap = self.max_fill
            slot = self._next_slot + gap
            self._origin = timestamp_ms - slot * self.frame_ms
        self._next_slot = slot + 1
        return gap


class Framer:
    """Re-chunks a byte stream of any chunk size into fixed frames (e.g. 160 B = 20 ms mu-law)."""

    def __init__(self, frame_bytes: int, fill: int) -> None:
        if frame_bytes <= 0 or not 0 <= fill <= 255:
            raise ValueError("frame_bytes must be > 0 and fill a byte value")
        self.frame_bytes = frame_bytes
        self.fill = fill
        self._buf = bytearray()

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def push(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every whole frame now available, oldest first."""
        buf = self._buf
        buf += data
        size = self.frame_bytes
        whole = len(buf) - len(buf) % size
        if not whole:
            return []
        frames = [bytes(buf[i : i + size]) for i in range(0, whole, size)]
        del buf[:whole]
        return frames

    def flush(self) -> bytes | None:
        """The partial frame padded with ``fill`` (end of an utterance), or None if empty."""
        if not self._buf:
            return None
        frame = bytes(self._buf) + bytes([self.fill]) * (self.frame_bytes - len(self._buf))
        self._buf.clear()
        return frame

    def clear(self) -> None:
        """Drop pending bytes (barge-in)."""
        self._buf.clear()
