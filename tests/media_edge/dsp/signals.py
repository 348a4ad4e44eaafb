"""Deterministic test signals and measurements shared by the DSP tests."""

from __future__ import annotations

import numpy as np
from hypothesis import settings

# Property tests are part of a deterministic suite: fixed seeds, no example database, and no
# per-example deadline (a loaded CI machine must not turn slowness into a failure).
PROPERTIES = settings(derandomize=True, database=None, deadline=None)


def tone(freq_hz: float, rate: int, seconds: float, amplitude: float = 20000.0) -> np.ndarray:
    n = np.arange(int(rate * seconds))
    return np.rint(amplitude * np.sin(2 * np.pi * freq_hz / rate * n)).astype(np.int16)


def tone_phasor(signal: np.ndarray, freq_hz: float, rate: int) -> complex:
    """Complex amplitude of one frequency (Hann-windowed projection: negligible leakage)."""
    x = np.asarray(signal, dtype=np.float64)
    window = np.hanning(len(x))
    n = np.arange(len(x))
    return complex(np.sum(x * window * np.exp(-2j * np.pi * freq_hz / rate * n)) * 2 / window.sum())


def tone_level_db(signal: np.ndarray, freq_hz: float, rate: int, reference: float) -> float:
    return 20 * np.log10(max(abs(tone_phasor(signal, freq_hz, rate)), 1e-12) / reference)


def thd_n_db(signal: np.ndarray, freq_hz: float, rate: int) -> float:
    """Tone power over everything else (a least-squares sine fit is the tone), in dB."""
    x = np.asarray(signal, dtype=np.float64)
    phase = 2 * np.pi * freq_hz / rate * np.arange(len(x))
    basis = np.stack([np.sin(phase), np.cos(phase)])
    coef, *_ = np.linalg.lstsq(basis.T, x, rcond=None)
    fitted = coef @ basis
    residual = x - fitted
    return 10 * np.log10(np.sum(fitted**2) / max(np.sum(residual**2), 1e-12))


def speech_like(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A voiced, speech-like burst: a gliding 100-220 Hz harmonic source through three formant
    resonances that move every syllable, with a ~4 Hz syllabic envelope (unit RMS, float)."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = rng.uniform(100, 220) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    syllable = 0.25
    out = np.zeros(n)
    for k in range(1, int(3400 / 100)):
        harmonic_hz = k * f0
        gain = np.zeros(n)
        for base in (500, 1500, 2500):
            centre = base * (1 + 0.3 * np.sin(2 * np.pi * t / syllable + rng.uniform(0, 6.28)))
            gain += 1 / (1 + ((harmonic_hz - centre) / 120) ** 2)
        out += np.where(harmonic_hz < rate / 2 - 200, gain / k**0.5, 0) * np.sin(k * phase)
    envelope = np.clip(np.sin(np.pi * t / syllable) ** 2 + 0.15, 0, 1)
    envelope *= np.minimum(1, np.minimum(t, t[::-1]) / 0.02)  # 20 ms fades
    out *= envelope
    return out / np.sqrt(np.mean(out**2))


def noise(kind: str, n: int, rng: np.random.Generator, rate: int = 8000) -> np.ndarray:
    """Unit-RMS white or pink (1/f power) noise."""
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spectrum = np.fft.rfft(white) / np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / rate), 20.0))
    pink = np.fft.irfft(spectrum, n)
    return pink / np.sqrt(np.mean(pink**2))
