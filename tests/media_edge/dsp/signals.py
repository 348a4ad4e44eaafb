"""Deterministic test signals and measurements shared by the DSP tests."""

from __future__ import annotations

import numpy as np


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
