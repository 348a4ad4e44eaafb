"""Find a known signal inside recorded audio (for tests of what a caller heard)."""

import numpy as np


def best_match(signal: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """(offset, normalised correlation) of ``reference`` where it best matches ``signal``:
    1.0 means the recording holds exactly that audio (at any level) at that offset."""
    x, y = signal.astype(np.float64), reference.astype(np.float64)
    size = 1 << (x.size + y.size).bit_length()
    scores = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    scores = scores[: x.size - y.size + 1]
    energy = np.sqrt(np.clip(np.convolve(x * x, np.ones(y.size), "valid"), 0, None))
    reference_norm = float(np.linalg.norm(y))
    # Near-silent windows would divide rounding noise by almost nothing: they match nothing.
    audible = energy > 1e-3 * reference_norm
    normalised = np.where(audible, scores / np.maximum(energy, 1e-9) / reference_norm, 0.0)
    lag = int(np.argmax(normalised))
    return lag, float(normalised[lag])
