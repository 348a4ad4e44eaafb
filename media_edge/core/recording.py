"""A call's recording as a stereo WAV, without I/O: caller left, assistant right, 8 kHz 16-bit.

``Mixdown`` turns the tape's 100 ms mu-law blocks into 16-bit stereo PCM, one chunk a second
(``CHUNK_MS``), for the shell to spool. ``PartCutter`` lays the file's bytes (a header
placeholder, then the PCM) out as S3 multipart parts: every part exactly ``part_bytes`` (S3's
minimum is 5 MiB, except for the last part), the last one what is left. ``wav_header`` is the
44-byte RIFF header, written when the sizes are known: at the end of the call, into part 1,
which is therefore uploaded last (kept on the shell's spool until then, never in memory).

PCM rather than mu-law in the WAV: every player, browser and ``wave`` reads 16-bit PCM; mu-law
WAVs (format 7) are not universal. The price is 32 KB/s on disk and in S3 (115 MB per hour).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from media_edge.dsp.pcm import ulaw_stereo_pcm16
from voicebridge.call_records import RECORDING_CHANNELS

SAMPLE_RATE = 8000
CHANNELS = len(RECORDING_CHANNELS)  # caller left, assistant right
SAMPLE_WIDTH = 2
BYTES_PER_MS = SAMPLE_RATE * CHANNELS * SAMPLE_WIDTH // 1000  # 32
HEADER_BYTES = 44
MIN_PART_BYTES = 5 * 1024 * 1024  # S3: every part but the last is at least 5 MiB
CHUNK_MS = 1000  # the shell gets 32 KB a second: few writes, little held
CHANNEL_NAMES = RECORDING_CHANNELS
MAX_DATA_BYTES = 0xFFFFFFFF - 36  # RIFF sizes are 32-bit: ~37 h of this format


def wav_header(data_bytes: int) -> bytes:
    """The canonical 44-byte header of a PCM WAV holding ``data_bytes`` of audio."""
    if not 0 <= data_bytes <= MAX_DATA_BYTES:
        raise ValueError("data size out of range for a RIFF file")
    block_align = CHANNELS * SAMPLE_WIDTH
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,  # PCM fmt chunk size
        1,  # WAVE_FORMAT_PCM
        CHANNELS,
        SAMPLE_RATE,
        SAMPLE_RATE * block_align,
        block_align,
        8 * SAMPLE_WIDTH,
        b"data",
        data_bytes,
    )


class Mixdown:
    """Tape blocks in, PCM chunks out: ``add`` returns a chunk once ``chunk_ms`` is held."""

    __slots__ = ("_assistant", "_caller", "_chunk_bytes", "data_bytes")

    def __init__(self, chunk_ms: int = CHUNK_MS) -> None:
        self._caller = bytearray()  # mu-law, one byte per sample
        self._assistant = bytearray()
        self._chunk_bytes = chunk_ms * SAMPLE_RATE // 1000
        self.data_bytes = 0  # PCM handed out so far

    @property
    def duration_ms(self) -> int:
        return self.data_bytes // BYTES_PER_MS

    def add(self, caller: bytes, assistant: bytes) -> bytes | None:
        self._caller += caller
        self._assistant += assistant
        if len(self._caller) < self._chunk_bytes:
            return None
        return self.flush()

    def flush(self) -> bytes | None:
        """Whatever is held, as PCM (the end of the call), or None."""
        if not self._caller:
            return None
        pcm = ulaw_stereo_pcm16(self._caller, self._assistant)
        self._caller.clear()
        self._assistant.clear()
        self.data_bytes += len(pcm)
        return pcm


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes for part ``part``; ``completes`` says the part is whole after them."""

    part: int
    data: bytes
    completes: bool


class PartCutter:
    """Splits the file's byte stream into parts of exactly ``part_bytes`` (the last: the rest).
    Part 1 starts with ``HEADER_BYTES`` reserved for the header, so its PCM is that much less."""

    __slots__ = ("filled", "part", "part_bytes")

    def __init__(self, part_bytes: int = MIN_PART_BYTES) -> None:
        if part_bytes <= HEADER_BYTES:
            raise ValueError("a part must hold more than the header")
        self.part_bytes = part_bytes
        self.part = 1
        self.filled = HEADER_BYTES  # in the current part

    def cut(self, data: bytes) -> list[Piece]:
        pieces: list[Piece] = []
        view = memoryview(data)
        while view:
            room = self.part_bytes - self.filled
            take = view[:room]
            self.filled += len(take)
            whole = self.filled == self.part_bytes
            pieces.append(Piece(self.part, take.tobytes(), whole))
            view = view[len(take) :]
            if whole:
                self.part += 1
                self.filled = 0
        return pieces
