"""mu-law blocks -> levels and 16-bit stereo PCM, in C (``audioop``): what the call's tape needs.

Called once per 100 ms block per call (never per frame), so a C call per block and leg is the
whole cost: ~0.8 µs for a level, ~1.7 µs for a 100 ms stereo mixdown (BENCHMARKS.md).
"""

from __future__ import annotations

import math
import sys
import warnings

from media_edge.dsp.vad import SILENCE_DBFS

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # stdlib up to 3.12 (PEP 594)
    import audioop  # from 3.13 on: the audioop-lts package (edge extra)


def ulaw_level_dbfs(data: bytes) -> float:
    """RMS level of mu-law audio re full scale (32768) in dB; silence gives ``SILENCE_DBFS``."""
    rms = audioop.rms(audioop.ulaw2lin(data, 2), 2) if data else 0
    if rms <= 0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms / 32768.0))


def ulaw_stereo_pcm16(left: bytes | bytearray, right: bytes | bytearray) -> bytes:
    """Two equal-length mu-law legs -> interleaved 16-bit little-endian stereo (WAV order:
    left sample, right sample). Interleaving the mu-law bytes first makes it one decode."""
    if len(left) != len(right):
        raise ValueError("both legs must have the same length")
    mixed = bytearray(2 * len(left))
    mixed[0::2] = left
    mixed[1::2] = right
    pcm = audioop.ulaw2lin(mixed, 2)  # native byte order
    return audioop.byteswap(pcm, 2) if _BIG_ENDIAN else pcm


_BIG_ENDIAN = sys.byteorder == "big"
