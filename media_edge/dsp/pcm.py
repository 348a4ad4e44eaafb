"""mu-law blocks -> levels and 16-bit stereo PCM, in C (``audioop``): what the call's tape needs.

Called once per 100 ms block per call (never per frame), so two C calls per block and leg are
the whole cost: ~1 µs for a level, ~1.7 µs for a 100 ms stereo mixdown (BENCHMARKS.md).
"""

from __future__ import annotations

import math
import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # stdlib up to 3.12 (PEP 594)
    import audioop  # from 3.13 on: the audioop-lts package (edge extra)


LEVEL_FLOOR_DB = -99  # what silence (and anything quieter) reads as
# RMS amplitude (an int, as audioop gives it) -> whole dBFS: a list index instead of a log10
_DB_OF_RMS = [LEVEL_FLOOR_DB] + [
    max(LEVEL_FLOOR_DB, round(20.0 * math.log10(rms / 32768.0))) for rms in range(1, 32769)
]


def ulaw_level_db(data: bytes) -> int:
    """RMS level of mu-law audio re full scale (32768), in whole dB, floored at
    ``LEVEL_FLOOR_DB`` (digital silence, or nothing)."""
    if not data:
        return LEVEL_FLOOR_DB
    return _DB_OF_RMS[audioop.rms(audioop.ulaw2lin(data, 2), 2)]


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
