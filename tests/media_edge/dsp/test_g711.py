"""G.711 mu-law: our lookup tables against audioop and a plain-Python reference, every value."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from media_edge.dsp import ULAW_SILENCE_BYTE, ulaw_decode, ulaw_encode
from tests.media_edge.dsp.signals import PROPERTIES

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib on 3.11/3.12, audioop-lts (a test dependency) on >= 3.13

ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def ref_encode(sample: int) -> int:
    """The classic CCITT/Sun algorithm on the 14-bit value (what audioop.lin2ulaw computes)."""
    value = sample >> 2  # 16 -> 14 bits, arithmetic shift
    mask = 0x7F if value < 0 else 0xFF
    magnitude = min(abs(value), 8159) + 33
    segment = 0
    while segment < 8 and magnitude > (0x3F << segment) | ((1 << segment) - 1):
        segment += 1
    if segment == 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)) ^ mask


def g191_encode(sample: int) -> int:
    """ITU-T G.191 STL ulaw_compress: one's complement for negatives (differs from audioop)."""
    absno = min(((~sample) >> 2) + 33 if sample < 0 else (sample >> 2) + 33, 0x1FFF)
    segno, i = 1, absno >> 6
    while i:
        segno, i = segno + 1, i >> 1
    code = ((8 - segno) << 4) | (0x0F - ((absno >> segno) & 0x0F))
    return code | 0x80 if sample >= 0 else code


def ref_decode(code: int) -> int:
    """ITU-T G.191 STL ulaw_expand."""
    sign = -1 if code < 0x80 else 1
    inverted = ~code
    exponent = (inverted >> 4) & 7
    step = 4 << (exponent + 1)
    return sign * ((0x80 << exponent) + step * (inverted & 0x0F) + step // 2 - 4 * 33)


def test_decode_every_code_matches_audioop_and_reference() -> None:
    ours = ulaw_decode(ALL_CODES)
    assert ours.dtype == np.int16
    assert ours.tolist() == np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), np.int16).tolist()
    assert ours.tolist() == [ref_decode(c) for c in range(256)]


def test_encode_every_int16_matches_audioop_and_reference() -> None:
    ours = ulaw_encode(ALL_INT16)
    assert ours == audioop.lin2ulaw(ALL_INT16.tobytes(), 2)
    assert list(ours) == [ref_encode(int(x)) for x in ALL_INT16]


def test_g191_differs_only_on_negative_step_boundaries_by_one_code() -> None:
    """Documents the one known split: G.191 maps negatives via one's complement, audioop (and we)
    via two's complement, so on some negative decision boundaries the codes differ by one step."""
    ours = np.frombuffer(ulaw_encode(ALL_INT16), np.uint8).astype(int)
    g191 = np.array([g191_encode(int(x)) for x in ALL_INT16])
    differ = np.nonzero(ours != g191)[0]
    assert (ALL_INT16[differ] < 0).all()
    assert np.abs(ours[differ] - g191[differ]).max() == 1
    assert len(differ) < 600


def test_round_trip_is_stable_and_silence_is_ff() -> None:
    decoded = ulaw_decode(ALL_CODES)
    reencoded = ulaw_encode(decoded)
    # Every code survives decode -> encode, except negative zero (0x7F), which becomes 0xFF.
    assert [c for c in range(256) if reencoded[c] != c] == [0x7F]
    assert ulaw_encode(np.zeros(4, np.int16)) == bytes([ULAW_SILENCE_BYTE]) * 4
    assert ulaw_decode(bytes([ULAW_SILENCE_BYTE])).tolist() == [0]


def test_encode_is_monotonic_in_level() -> None:
    levels = ulaw_decode(ulaw_encode(ALL_INT16)).astype(int)
    assert (np.diff(levels) >= 0).all()
    # Below the clip level the error stays within half the coarsest step (1024 / 2) plus the
    # 3 LSBs that the 16 -> 14-bit truncation drops.
    assert np.abs(levels - ALL_INT16.astype(int))[1024:-1024].max() <= 512 + 3


@PROPERTIES
@given(arrays(np.int16, st.integers(0, 400)))
def test_encode_any_array_like_audioop(pcm: np.ndarray) -> None:
    assert ulaw_encode(pcm) == audioop.lin2ulaw(pcm.tobytes(), 2)
    assert len(ulaw_decode(ulaw_encode(pcm))) == len(pcm)


def test_encode_accepts_non_contiguous_input_without_mutating_it() -> None:
    pcm = np.arange(-1000, 1000, 3, dtype=np.int16)
    original = pcm.copy()
    assert ulaw_encode(pcm[::2]) == audioop.lin2ulaw(pcm[::2].tobytes(), 2)
    assert np.array_equal(pcm, original)
