"""Twilio's outbound playout buffer for one Media Stream (sans-I/O).

What Twilio documents (https://www.twilio.com/docs/voice/media-streams/websocket-messages):

- ``media`` of any size is buffered and played in the order received ("Send a media message");
- a ``mark`` comes back "when the audio ends (or if there is no audio buffered)", i.e. once the
  audio queued before it has been *played*, at once if nothing is ("Send a mark message");
- ``clear`` "empties all buffered audio and causes any mark messages to be sent back", with
  nothing saying they were cleared rather than played ("Mark message", "Send a clear message").

The simulated caller calls :meth:`play` every 20 ms and hears the frame it returns during the
next 20 ms; a mark whose audio ends inside that frame is echoed on the following call, once the
frame has been heard. Echoes are therefore never early and at most one frame late.
"""

from __future__ import annotations

from collections import deque

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
SILENCE = b"\xff" * FRAME_BYTES


class Playout:
    def __init__(self) -> None:
        self._items: deque[bytes | str] = deque()  # audio chunks and mark names, in order
        self._buffered = 0
        self._playing: list[str] = []  # marks whose audio is in the frame being heard now
        self._frame_had_audio = False  # the frame being heard now carries our audio

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    def media(self, payload: bytes) -> None:
        if payload:
            self._items.append(payload)
            self._buffered += len(payload)

    def mark(self, name: str) -> list[str]:
        """Queue a mark; returns it at once only if no audio is buffered or still playing."""
        if self._items:
            self._items.append(name)
        elif self._playing or self._frame_had_audio:
            self._playing.append(name)  # its audio is in the frame being heard: next tick
        else:
            return [name]
        return []

    def clear(self) -> tuple[int, list[str]]:
        """Drop buffered audio; return (bytes dropped, every pending mark, to echo now)."""
        dropped = self._buffered
        marks = self._playing + [item for item in self._items if isinstance(item, str)]
        self._items.clear()
        self._playing = []
        self._buffered = 0
        return dropped, marks

    def play(self) -> tuple[bytes, bool, list[str]]:
        """The next 20 ms: (audio to hear, whether any of it is ours, marks now fully played)."""
        played = self._playing + self._leading_marks()
        self._playing = []
        out = bytearray()
        while self._items and len(out) < FRAME_BYTES:
            item = self._items.popleft()
            if isinstance(item, str):
                self._playing.append(item)  # its audio ends inside this frame
                continue
            take = FRAME_BYTES - len(out)
            out += item[:take]
            if len(item) > take:
                self._items.appendleft(item[take:])
            self._buffered -= min(take, len(item))
        self._frame_had_audio = bool(out)
        out += SILENCE[len(out) :]
        return bytes(out), self._frame_had_audio, played

    def _leading_marks(self) -> list[str]:
        marks: list[str] = []
        while self._items and isinstance(self._items[0], str):
            marks.append(self._items.popleft())  # type: ignore[arg-type]
        return marks
