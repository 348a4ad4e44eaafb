"""Level metering and the VAD on synthetic speech, the shipped speech sample, and noise."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from media_edge.dsp import SILENCE_DBFS, Vad, level_dbfs, ulaw_decode, ulaw_encode
from media_edge.dsp.vad import Debouncer
from tests.media_edge.dsp.signals import PROPERTIES, noise, speech_like, tone

RATE, FRAME = 8000, 160
SPEECH_DBFS = -26.0  # a typical active speech level on a phone line
SAMPLE = Path(__file__).parent / "data" / "speech_8k.wav"


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def scene(
    bursts: list[np.ndarray], noise_kind: str | None, snr_db: float, seed: int
) -> tuple[bytes, list[tuple[int, int]]]:
    """Bursts (unit RMS) at -26 dBFS with 1 s pauses, in noise; mu-law bytes and burst spans."""
    rng = np.random.default_rng(seed)
    scale = 10 ** (SPEECH_DBFS / 20) * 32768
    pieces, spans, at = [np.zeros(RATE)], [], RATE
    for burst in bursts:
        spans.append((at, at + len(burst)))
        pieces += [burst * scale, np.zeros(RATE)]
        at += len(burst) + RATE
    clean = np.concatenate(pieces)
    if noise_kind is not None:
        clean += noise(noise_kind, len(clean), rng) * scale / 10 ** (snr_db / 20)
    pcm = to_int16(clean)
    return ulaw_encode(pcm[: len(pcm) // FRAME * FRAME]), spans


def run(vad: Vad, data: bytes) -> list:
    return [vad.process_ulaw(data[i : i + FRAME]) for i in range(0, len(data), FRAME)]


def test_level_dbfs() -> None:
    assert level_dbfs(tone(1000, RATE, 0.1, 32767)) == pytest.approx(-3.01, abs=0.02)
    assert level_dbfs(tone(1000, RATE, 0.1, 3277)) == pytest.approx(-23.01, abs=0.02)
    assert level_dbfs(np.full(160, -32768, np.int16)) == pytest.approx(0.0)
    assert level_dbfs(np.zeros(160, np.int16)) == SILENCE_DBFS
    assert level_dbfs(np.zeros(0, np.int16)) == SILENCE_DBFS


def test_debouncer_needs_a_run_to_start_and_a_hangover_to_stop() -> None:
    d = Debouncer(onset_frames=3, hangover_frames=12)
    edges = [d.update(a) for a in [True, True, False, True, True]]
    assert not d.speech  # blips never start speech
    assert (True, False) not in edges
    assert d.update(True) == (True, False)  # third active frame in a row
    for _ in range(11):  # a pause between words shorter than the hangover
        assert d.update(False) == (False, False)
    assert d.update(True) == (False, False)
    assert d.speech
    edges = [d.update(False) for _ in range(12)]
    assert edges[-1] == (False, True)
    assert not d.speech


@pytest.mark.parametrize(
    ("noise_kind", "snr_db"),
    [(None, 0), ("white", 20), ("white", 10), ("white", 5), ("pink", 20), ("pink", 10)],
)
def test_speech_like_bursts_found_with_tight_onset_and_offset(
    noise_kind: str | None, snr_db: float
) -> None:
    rng = np.random.default_rng(3)
    bursts = [speech_like(s, RATE, rng) for s in (0.6, 1.2, 0.9, 1.5)]
    data, spans = scene(bursts, noise_kind, snr_db, seed=11)
    decisions = run(Vad(RATE), data)
    onsets = [i * FRAME for i, d in enumerate(decisions) if d.onset]
    offsets = [i * FRAME for i, d in enumerate(decisions) if d.offset]
    assert len(onsets) == len(offsets) == len(spans)
    hangover = Vad(RATE).hangover_ms * RATE // 1000
    for (start, end), on, off in zip(spans, onsets, offsets, strict=True):
        assert start <= on <= start + int(0.12 * RATE)  # 60 ms debounce + a frame or two
        # The 240 ms hangover runs from the last audible syllable, which noise may hide.
        assert end < off <= end + hangover + int(0.12 * RATE)


@pytest.mark.parametrize("noise_kind", ["white", "pink"])
@pytest.mark.parametrize("level_dbfs_", [-70.0, -50.0, -30.0, -15.0])
def test_stationary_noise_alone_is_never_speech(noise_kind: str, level_dbfs_: float) -> None:
    rng = np.random.default_rng(5)
    x = noise(noise_kind, 5 * RATE, rng) * 10 ** (level_dbfs_ / 20) * 32768
    decisions = run(Vad(RATE), ulaw_encode(to_int16(x)))
    assert not any(d.speech for d in decisions)


def test_noise_floor_follows_a_louder_line_within_seconds() -> None:
    rng = np.random.default_rng(8)
    quiet = noise("white", 2 * RATE, rng) * 10 ** (-60 / 20) * 32768
    loud = noise("white", 8 * RATE, rng) * 10 ** (-30 / 20) * 32768
    decisions = run(Vad(RATE), ulaw_encode(to_int16(np.concatenate([quiet, loud]))))
    # The 30 dB step looks like speech at first, but the floor catches up in < 3 s.
    assert any(d.speech for d in decisions[100:150])
    assert not any(d.speech for d in decisions[100 + 150 :])


def test_digital_silence_does_not_break_the_floor() -> None:
    rng = np.random.default_rng(9)
    line = noise("pink", 3 * RATE, rng) * 10 ** (-40 / 20) * 32768
    x = np.concatenate([line, np.zeros(RATE), line])  # e.g. a gap filled with silence
    decisions = run(Vad(RATE), ulaw_encode(to_int16(x)))
    assert sum(d.speech for d in decisions) <= 0.1 * len(decisions)
    assert not any(d.speech for d in decisions[-100:])


def test_shipped_speech_sample_in_noise() -> None:
    """The committed espeak-ng utterances (split at their 0.5 s digital gaps) at 10 dB SNR."""
    with wave.open(str(SAMPLE)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    zero_runs = np.flatnonzero(np.diff(np.concatenate([[0], (pcm == 0).astype(np.int8), [0]])))
    gaps = [(a, b) for a, b in zip(zero_runs[::2], zero_runs[1::2], strict=True) if b - a >= 4000]
    bounds = [0, *[x for g in gaps for x in g], len(pcm)]
    utterances = [pcm[a:b].astype(float) for a, b in zip(bounds[::2], bounds[1::2], strict=True)]
    assert len(utterances) == 6
    bursts = [u / np.sqrt(np.mean(u**2)) for u in utterances]
    data, spans = scene(bursts, "white", 10, seed=4)
    decisions = run(Vad(RATE), data)
    truth = np.zeros(len(decisions), bool)
    for start, end in spans:
        truth[start // FRAME : end // FRAME + 1] = True
    said = np.array([d.speech for d in decisions])
    recall = (said & truth).sum() / truth.sum()
    false_alarm = (said & ~truth).sum() / (~truth).sum()
    assert recall >= 0.9
    assert false_alarm <= 0.25  # mostly the 240 ms hangover after each utterance
    assert sum(d.onset for d in decisions) <= 2 * len(spans)


@PROPERTIES
@given(st.integers(0, 2**32 - 1), st.sampled_from([-50.0, -35.0, -20.0]))
def test_ulaw_fast_path_equals_decoding_first(seed: int, noise_dbfs: float) -> None:
    rng = np.random.default_rng(seed)
    x = noise("white", 2 * RATE, rng) * 10 ** (noise_dbfs / 20) * 32768
    x[RATE // 2 : RATE] += speech_like(0.5, RATE, rng) * 10 ** (-20 / 20) * 32768
    data = ulaw_encode(to_int16(x))
    fast, slow = Vad(RATE), Vad(RATE)
    for i in range(0, len(data), FRAME):
        a = fast.process_ulaw(data[i : i + FRAME])
        b = slow.process(ulaw_decode(data[i : i + FRAME]))
        assert a.level_dbfs == pytest.approx(b.level_dbfs, abs=1e-9)
        assert a[:3] == b[:3]


def test_reset_and_empty_frames() -> None:
    vad = Vad(RATE)
    rng = np.random.default_rng(1)
    loud = ulaw_encode(to_int16(speech_like(1.0, RATE, rng) * 8000))
    run(vad, ulaw_encode(np.zeros(RATE, np.int16)) + loud)
    assert vad.speech
    vad.reset()
    assert not vad.speech
    assert vad.process_ulaw(b"").level_dbfs == SILENCE_DBFS


def test_hangover_is_reported_in_ms_for_dating_the_speech_end() -> None:
    assert Vad(RATE).hangover_ms == 240
    assert Vad(RATE, frame_ms=10, hangover_ms=255).hangover_ms == 250  # whole frames
