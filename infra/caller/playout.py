"""Twilio's outbound playout buffer for one Media Stream (sans-I/O).

Twilio queues the ``media`` we are sent and plays it in real time; a ``mark`` is echoed when the
audio queued before it has played (at once if nothing is queued); ``clear`` drops the queued
audio and echoes every pending mark, with nothing saying it was cleared. The simulated caller
calls :meth:`play` every 20 ms and hears what it returns.
"""

from __future__ import annotations

from collections import deque

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
SILENCE = b"\xff" * FRAME_BYTES


class Playout:
    def __init__(self) -> None:
        self._items: deque[bytes | str] = deque()  # audio chunks and mark names, in order
        self._buffered = 0

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    def media(self, payload: bytes) -> None:
        if payload:
            self._items.append(payload)
            self._buffered += len(payload)

    def mark(self, name: str) -> list[str]:
        """Queue a mark; returns it at once if nothing is buffered ahead of it."""
        if not self._items:
            return [name]
        self._items.append(name)
        return []

    def clear(self) -> tuple[int, list[str]]:
        """Drop buffered audio; return (bytes dropped, pending marks to echo now)."""
        dropped = self._buffered
        marks = [item for item in self._items if isinstance(item, str)]
        self._items.clear()
        self._buffered = 0
        return dropped, marks

    def play(self) -> tuple[bytes, bool, list[str]]:
        """The next 20 ms: (audio heard, whether any of it was ours, marks now played)."""
        marks = self._leading_marks()
        out = bytearray()
        while self._items and len(out) < FRAME_BYTES:
            item = self._items[0]
            if isinstance(item, str):
                break
            take = FRAME_BYTES - len(out)
            out += item[:take]
            if len(item) > take:
                self._items[0] = item[take:]
            else:
                self._items.popleft()
            self._buffered -= min(take, len(item))
            if len(out) < FRAME_BYTES:
                marks += self._leading_marks()
        marks += self._leading_marks()
        had_audio = bool(out)
        out += SILENCE[len(out) :]
        return bytes(out), had_audio, marks

    def _leading_marks(self) -> list[str]:
        marks: list[str] = []
        while self._items and isinstance(self._items[0], str):
            marks.append(self._items.popleft())  # type: ignore[arg-type]
        return marks
