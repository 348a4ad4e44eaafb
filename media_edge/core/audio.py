"""Per-call audio paths between Twilio (mu-law 8 kHz, 20 ms frames) and Vapi's transport format.

``mulaw`` mode is a passthrough (no decode on the hot path; the VAD reads mu-law energy by table).
``pcm16`` mode decodes and resamples 8 <-> 16 kHz with streaming state carried across frames.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from media_edge.dsp import (
    ULAW_SILENCE_BYTE,
    Framer,
    GapFiller,
    StreamingResampler,
    Vad,
    VadDecision,
    VoiceDetector,
    ulaw_decode,
    ulaw_encode,
)

FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of mu-law at 8 kHz: what Twilio sends and what we send back
VAD_HANGOVER_MS = 240  # pause length that ends an utterance (the VAD reports it this late)
VAD_ONSET_FRAMES = 3  # active frames in a row that start an utterance
VAD_ONSET_MS = (VAD_ONSET_FRAMES - 1) * FRAME_MS  # the onset frame is this long after the first
_SILENCE_FRAME = bytes([ULAW_SILENCE_BYTE]) * FRAME_BYTES
_LE_INT16 = np.dtype("<i2")


class InboundPath:
    """Twilio media -> Vapi binary frames, with timestamp gaps filled and the VAD fed."""

    __slots__ = ("_pcm16", "_resampler", "bytes_per_ms", "gaps", "vad")

    def __init__(self, audio_format: str, vad: VoiceDetector | None = None) -> None:
        self._pcm16 = audio_format == "pcm16"
        self.bytes_per_ms = 32 if self._pcm16 else 8  # of Vapi-format audio
        self._resampler = StreamingResampler(8000, 16000) if self._pcm16 else None
        self.gaps = GapFiller(frame_ms=FRAME_MS)
        self.vad: VoiceDetector = vad or Vad(
            8000, frame_ms=FRAME_MS, onset_frames=VAD_ONSET_FRAMES, hangover_ms=VAD_HANGOVER_MS
        )

    def convert(self, mulaw: bytes, fill_frames: int = 0) -> bytes:
        """``fill_frames`` silence frames, then ``mulaw``, in Vapi's format (one binary frame)."""
        if fill_frames:
            mulaw = _SILENCE_FRAME * fill_frames + mulaw
        if self._resampler is None:
            return mulaw
        return self._resampler.process(ulaw_decode(mulaw)).astype(_LE_INT16, copy=False).tobytes()

    def detect(self, mulaw: bytes) -> VadDecision:
        return self.vad.process_ulaw(mulaw)


class HeldAudio:
    """Caller audio, already in Vapi's format, held while the Vapi call connects.

    It keeps the most recent ``limit_bytes`` and drops the oldest, so what is held runs without
    a break into the live frames that follow: Vapi hears one continuous stream ending "now",
    with the caller's first words (said while POST /call was in flight) in it. The bound caps
    how stale the start can be and the memory of a connecting call (2 s: 16 KB mu-law, 64 KB
    pcm16).
    """

    __slots__ = ("_chunks", "_frame_bytes", "_limit", "_size")

    def __init__(self, limit_bytes: int, frame_bytes: int) -> None:
        self._chunks: deque[bytes] = deque()
        self._limit = limit_bytes
        self._frame_bytes = frame_bytes
        self._size = 0

    def push(self, chunk: bytes) -> int:
        """Hold ``chunk``; returns how many 20 ms frames fell off the front to keep the bound."""
        self._chunks.append(chunk)
        self._size += len(chunk)
        dropped = 0
        while self._size > self._limit:
            old = self._chunks.popleft()
            self._size -= len(old)
            dropped += len(old)
        return -(-dropped // self._frame_bytes)

    def drain(self) -> list[bytes]:
        """Everything held, oldest first; the buffer is empty afterwards."""
        chunks = list(self._chunks)
        self._chunks.clear()
        self._size = 0
        return chunks

    @property
    def held_ms(self) -> int:
        return self._size * FRAME_MS // self._frame_bytes


class OutboundPath:
    """Vapi audio of any chunk size -> whole 20 ms mu-law frames for the playout queue."""

    __slots__ = ("_carry", "_framer", "_resampler")

    def __init__(self, audio_format: str) -> None:
        self._resampler = StreamingResampler(16000, 8000) if audio_format == "pcm16" else None
        self._framer = Framer(FRAME_BYTES, ULAW_SILENCE_BYTE)
        self._carry = b""  # pcm16: an odd trailing byte waits for its other half

    def convert(self, data: bytes) -> list[bytes]:
        if self._resampler is not None:
            if self._carry:
                data = self._carry + data
            cut = len(data) & ~1
            self._carry = data[cut:]
            pcm = np.frombuffer(data, dtype=_LE_INT16, count=cut // 2)
            data = ulaw_encode(self._resampler.process(pcm))
        return self._framer.push(data)

    @property
    def pending(self) -> bool:
        return self._framer.pending_bytes > 0

    def flush(self) -> bytes | None:
        """The partial last frame, padded with silence (the assistant paused or ended)."""
        return self._framer.flush()

    def reset(self) -> None:
        """Barge-in: forget buffered and filter state so the next utterance starts clean."""
        self._framer.clear()
        self._carry = b""
        if self._resampler is not None:
            self._resampler.reset()
