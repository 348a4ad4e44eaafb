"""Audio helpers for the emulators and the simulated caller (dev-only, not on the product path).

The product's DSP lives in ``media_edge.dsp``; the emulators reuse its G.711 codec so the bytes
on both sides of the bridge are encoded the same way. What is here is only what a *vendor* or a
*caller* needs: WAV files, a speech-like test signal, a cheap energy VAD and a linear resampler
(audio quality of the emulated assistant is irrelevant; its timing is what the tests measure).
The VAD here is deliberately not the edge's: it plays the *vendor's* VAD, an independent judge.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from media_edge.dsp import level_dbfs, ulaw_decode, ulaw_encode

__all__ = [
    "FRAME_MS",
    "SAMPLES_DIR",
    "EnergyVad",
    "frame_bytes",
    "level_dbfs",
    "load_wav",
    "resample",
    "sample",
    "synth_speech",
    "ulaw_decode",
    "ulaw_encode",
    "write_wav",
]

FRAME_MS = 20
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def frame_bytes(audio_format: str, sample_rate: int) -> int:
    """Bytes in one 20 ms frame: ``mulaw`` is 1 byte/sample, ``pcm_s16le`` 2."""
    samples = sample_rate * FRAME_MS // 1000
    return samples if audio_format == "mulaw" else samples * 2


def load_wav(path: Path | str) -> np.ndarray:
    """A mono 16-bit WAV as int16 samples, resampled to 8 kHz if needed."""
    with wave.open(str(path), "rb") as handle:
        if handle.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        rate, channels = handle.getframerate(), handle.getnchannels()
        data = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return resample(data, rate, 8000)


def write_wav(path: Path | str, pcm: np.ndarray, sample_rate: int = 8000) -> None:
    """Write int16 mono samples as a WAV file."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


def sample(name: str) -> np.ndarray:
    """A shipped sample (``assistant_greeting`` or ``caller_utterance``) at 8 kHz."""
    return load_wav(SAMPLES_DIR / f"{name}.wav")


def resample(pcm: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Linear-interpolation resampling: good enough for an emulated vendor, never for the bridge."""
    if in_rate == out_rate or pcm.size == 0:
        return np.asarray(pcm, dtype=np.int16)
    count = round(pcm.size * out_rate / in_rate)
    positions = np.arange(count) * (in_rate / out_rate)
    out = np.interp(positions, np.arange(pcm.size), pcm.astype(np.float64))
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def synth_speech(seconds: float, sample_rate: int = 8000, seed: int = 0) -> np.ndarray:
    """A speech-like signal: a glottal pulse train through moving vowel formants, in syllables.

    It has what VADs and ears key on (harmonics at a varying pitch, formant peaks, a ~4 Hz
    syllable envelope with short pauses), so it exercises the same paths as real speech.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = 120.0 + 15.0 * np.sin(2 * np.pi * 0.7 * t) + rng.uniform(-5, 5)
    phase = np.cumsum(f0 / sample_rate)
    source = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)  # one pulse per period
    out = np.zeros(n)
    vowels = ((730, 1090), (270, 2290), (300, 870), (530, 1840), (660, 1720))
    syllable = int(0.22 * sample_rate)
    for start in range(0, n, syllable):
        stop = min(start + syllable, n)
        f1, f2 = vowels[rng.integers(len(vowels))]
        segment = source[start:stop]
        for freq, bandwidth, gain in ((f1, 90.0, 1.0), (f2, 120.0, 0.5)):
            out[start:stop] += gain * _resonator(segment, freq, bandwidth, sample_rate)
    envelope = np.clip(np.sin(np.pi * (np.arange(n) % syllable) / syllable) * 1.4, 0, 1)
    envelope[(np.arange(n) // syllable) % 5 == 4] = 0.0  # a pause every fifth syllable
    out *= envelope
    peak = float(np.max(np.abs(out))) or 1.0
    return np.round(out / peak * 0.6 * 32767).astype(np.int16)


def _resonator(x: np.ndarray, freq: float, bandwidth: float, rate: int) -> np.ndarray:
    """A two-pole resonance (one formant)."""
    r = np.exp(-np.pi * bandwidth / rate)
    a1, a2 = -2 * r * np.cos(2 * np.pi * freq / rate), r * r
    y = np.zeros_like(x)
    y1 = y2 = 0.0
    for i, value in enumerate(x):
        y0 = value - a1 * y1 - a2 * y2
        y[i] = y0
        y2, y1 = y1, y0
    return y


@dataclass(slots=True)
class VadEdge:
    """What one frame changed: ``onset``/``offset`` are the debounced edges."""

    speech: bool
    onset: bool
    offset: bool


class EnergyVad:
    """Frame-energy VAD with debouncing: ``onset_frames`` loud frames start speech, a
    ``hangover_ms`` quiet run ends it (the pause that ends a caller's turn)."""

    def __init__(
        self, threshold_dbfs: float = -40.0, onset_frames: int = 3, hangover_ms: int = 500
    ) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.onset_frames = onset_frames
        self.hangover_frames = max(1, hangover_ms // FRAME_MS)
        self.speech = False
        self._loud = 0
        self._quiet = 0

    def process(self, pcm: np.ndarray) -> VadEdge:
        loud = level_dbfs(pcm) > self.threshold_dbfs
        self._loud = self._loud + 1 if loud else 0
        self._quiet = 0 if loud else self._quiet + 1
        onset = offset = False
        if not self.speech and self._loud >= self.onset_frames:
            self.speech = onset = True
        elif self.speech and self._quiet >= self.hangover_frames:
            self.speech = False
            offset = True
        return VadEdge(self.speech, onset, offset)
