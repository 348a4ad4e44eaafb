"""Streaming resampler: frequency response, delay, streaming == one-shot, clean tones."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_edge.dsp import StreamingResampler
from tests.media_edge.dsp.signals import PROPERTIES, thd_n_db, tone, tone_level_db, tone_phasor

AMPLITUDE = 20000.0
PASSBAND = [100, 300, 1000, 2000, 3000, 3400]
SETTLE = 64  # samples skipped at the start: the filter's own start-up transient


def resample(x: np.ndarray, in_rate: int, out_rate: int, chunk: int | None = None) -> np.ndarray:
    r = StreamingResampler(in_rate, out_rate)
    if chunk is None:
        return r.process(x)
    return np.concatenate([r.process(x[i : i + chunk]) for i in range(0, len(x), chunk)])


@pytest.mark.parametrize("freq", PASSBAND)
@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (16000, 8000)])
def test_passband_is_flat_to_3400_hz(freq: int, in_rate: int, out_rate: int) -> None:
    out = resample(tone(freq, in_rate, 0.5, AMPLITUDE), in_rate, out_rate, chunk=in_rate // 50)
    assert abs(tone_level_db(out[SETTLE:], freq, out_rate, AMPLITUDE)) <= 0.5


@pytest.mark.parametrize("freq", PASSBAND)
def test_upsampling_images_are_60_db_down(freq: int) -> None:
    out = resample(tone(freq, 8000, 0.5, AMPLITUDE), 8000, 16000)
    # Zero-stuffing mirrors the 0-4 kHz band around 4 kHz: the image of f sits at 8000 - f.
    assert tone_level_db(out[SETTLE:], 8000 - freq, 16000, AMPLITUDE) <= -60


@pytest.mark.parametrize("freq", [4600, 5000, 6000, 7000, 7900])
def test_downsampling_aliases_are_60_db_down(freq: int) -> None:
    out = resample(tone(freq, 16000, 0.5, AMPLITUDE), 16000, 8000)
    assert tone_level_db(out[SETTLE:], 8000 - freq, 8000, AMPLITUDE) <= -60


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (16000, 8000)])
def test_delay_is_as_declared_and_at_most_2_ms(in_rate: int, out_rate: int) -> None:
    r = StreamingResampler(in_rate, out_rate)
    assert 0 < r.delay_ms <= 2.0
    impulse = np.zeros(in_rate // 10, np.int16)
    impulse[0] = 16000
    peak = int(np.argmax(r.process(impulse)))
    assert peak / out_rate * 1000 == pytest.approx(r.delay_ms)
    # Linear phase: a tone is delayed by the same amount (phase delay = group delay). 250 Hz:
    # its 4 ms period exceeds the delay, so the phase difference is unambiguous.
    x = tone(250, in_rate, 0.5, AMPLITUDE)
    y = resample(x, in_rate, out_rate)[SETTLE:]
    phase_in = np.angle(tone_phasor(x[SETTLE * in_rate // out_rate :], 250, in_rate))
    phase_out = np.angle(tone_phasor(y, 250, out_rate))
    delay_ms = ((phase_in - phase_out) % (2 * np.pi)) / (2 * np.pi * 250) * 1000
    assert delay_ms == pytest.approx(r.delay_ms, abs=0.01)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (16000, 8000)])
def test_tone_through_20_ms_frames_is_clean_and_click_free(in_rate: int, out_rate: int) -> None:
    out = resample(tone(1000, in_rate, 1.0, AMPLITUDE), in_rate, out_rate, chunk=in_rate // 50)
    steady = out[SETTLE:]
    assert thd_n_db(steady, 1000, out_rate) >= 60
    # A click is a jump bigger than the sine's own steepest slope allows.
    max_slope = 2 * np.pi * 1000 / out_rate * AMPLITUDE
    assert np.abs(np.diff(steady.astype(int))).max() <= max_slope * 1.01 + 2
    assert tone_level_db(steady, 1000, out_rate, AMPLITUDE) == pytest.approx(0, abs=0.2)


@settings(PROPERTIES, max_examples=60)
@given(
    direction=st.sampled_from([(8000, 16000), (16000, 8000)]),
    cuts=st.lists(st.integers(0, 700), max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
def test_streaming_equals_one_shot_for_any_chunking(
    direction: tuple[int, int], cuts: list[int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(-32768, 32768, 1500).astype(np.int16)
    one_shot = StreamingResampler(*direction).process(x)
    r = StreamingResampler(*direction)
    bounds = [0, *sorted(cuts), len(x)]
    streamed = np.concatenate([r.process(x[a:b]) for a, b in itertools.pairwise(bounds)])
    assert streamed.dtype == np.int16
    assert np.array_equal(streamed, one_shot)
    expected_len = 2 * len(x) if direction[0] == 8000 else (len(x) + 1) // 2
    assert len(one_shot) == expected_len


def test_reset_forgets_history() -> None:
    x = tone(700, 8000, 0.1)
    r = StreamingResampler(8000, 16000)
    first = r.process(x)
    r.process(tone(1300, 8000, 0.03))
    r.reset()
    assert np.array_equal(r.process(x), first)


def test_full_scale_saturates_instead_of_wrapping() -> None:
    square = np.where(np.arange(4000) % 200 < 100, 32767, -32768).astype(np.int16)
    for direction in [(8000, 16000), (16000, 8000)]:
        out = StreamingResampler(*direction).process(square).astype(int)
        ratio = direction[1] / direction[0]
        # Mid-plateau samples keep the input's sign and full level (a wrap would flip them).
        centres = (np.arange(1, 19) * 200 * ratio + 50 * ratio).astype(int)
        assert (out[centres] > 30000).all()
        assert (out[(centres + 100 * ratio).astype(int)] < -30000).all()


def test_rejects_unsupported_rates() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        StreamingResampler(8000, 44100)


def test_empty_input_gives_empty_output() -> None:
    for direction in [(8000, 16000), (16000, 8000)]:
        out = StreamingResampler(*direction).process(np.zeros(0, np.int16))
        assert out.dtype == np.int16
        assert len(out) == 0
