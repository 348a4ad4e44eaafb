"""The recording's pure parts: the WAV header, the stereo mixdown, the S3 part layout."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from media_edge.core.recording import (
    BYTES_PER_MS,
    HEADER_BYTES,
    MIN_PART_BYTES,
    Mixdown,
    PartCutter,
    wav_header,
)
from media_edge.dsp import ulaw_decode


@pytest.mark.parametrize("data_bytes", [0, 4, 32_000, 115_200_000])
def test_the_header_says_what_wave_reads(data_bytes):
    header = wav_header(data_bytes)
    assert len(header) == HEADER_BYTES
    body = bytes(min(data_bytes, 64))  # wave reads the header; a short body is fine for that
    with wave.open(io.BytesIO(header + body)) as wav:
        assert wav.getnchannels() == 2
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == 8000
        assert wav.getnframes() == data_bytes // 4
    assert int.from_bytes(header[4:8], "little") == 36 + data_bytes  # RIFF size: file - 8


def test_a_header_cannot_claim_more_than_riff_can_say():
    with pytest.raises(ValueError):
        wav_header(2**32)


def test_mixdown_puts_the_caller_left_and_the_assistant_right():
    mix = Mixdown(chunk_ms=200)
    caller, assistant = bytes([0x10]) * 800, bytes([0x30]) * 800  # 100 ms each
    assert mix.add(caller, assistant) is None
    chunk = mix.add(caller, assistant)
    assert chunk is not None
    assert len(chunk) == 200 * BYTES_PER_MS
    samples = np.frombuffer(chunk, dtype="<i2").reshape(-1, 2)
    assert (samples[:, 0] == ulaw_decode(b"\x10")[0]).all()
    assert (samples[:, 1] == ulaw_decode(b"\x30")[0]).all()
    assert mix.add(caller[:160], assistant[:160]) is None
    assert len(mix.flush() or b"") == 20 * BYTES_PER_MS
    assert mix.flush() is None
    assert mix.duration_ms == 220


def test_parts_are_exactly_the_part_size_but_the_last():
    cutter = PartCutter(part_bytes=1000)
    pieces = []
    for size in (300, 700, 1500, 44, 10):
        pieces += cutter.cut(bytes([size % 256]) * size)
    sizes: dict[int, int] = {}
    for piece in pieces:
        sizes[piece.part] = sizes.get(piece.part, 0) + len(piece.data)
    assert sizes[1] == 1000 - HEADER_BYTES  # part 1 leaves room for the header
    assert sizes[2] == 1000
    assert sizes[3] == 300 + 700 + 1500 + 44 + 10 - (1000 - HEADER_BYTES) - 1000
    assert [p.part for p in pieces if p.completes] == [1, 2]
    joined = b"".join(p.data for p in pieces)
    assert len(joined) == 2554
    assert joined[:300] == bytes([300 % 256]) * 300


def test_parts_default_to_s3s_minimum():
    assert PartCutter().part_bytes == MIN_PART_BYTES == 5 * 1024 * 1024
    with pytest.raises(ValueError):
        PartCutter(part_bytes=HEADER_BYTES)
