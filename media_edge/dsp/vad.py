"""Level metering and a cheap voice activity detector (energy over an adaptive noise floor).

Runs on every inbound 20 ms frame of every call, so it costs a few numpy calls per frame; the
mu-law path never decodes: a 256-entry table gives each code's energy directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from media_edge.dsp.g711 import ULAW_DECODE_TABLE

SILENCE_DBFS = -120.0
_FULL_SCALE_SQ = 32768.0**2
_ULAW_ENERGY = ULAW_DECODE_TABLE.astype(np.float64) ** 2


def _dbfs(mean_square: float) -> float:
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_square / _FULL_SCALE_SQ))


def level_dbfs(pcm: np.ndarray) -> float:
    """RMS level re full scale (32768) in dB; digital silence gives ``SILENCE_DBFS``."""
    x = np.asarray(pcm, dtype=np.float64)
    if x.size == 0:
        return SILENCE_DBFS
    return _dbfs(float(np.dot(x, x)) / x.size)


@dataclass(frozen=True, slots=True)
class VadDecision:
    speech: bool  # debounced state after this frame
    onset: bool  # speech started with this frame
    offset: bool  # speech ended with this frame
    level_dbfs: float


class Vad:
    """Debounced speech/non-speech decisions, one per frame (any frame length, 20 ms typical)."""

    def __init__(
        self,
        sample_rate: int,
        frame_ms: int = 20,
        threshold_db: float = 9.0,
        min_level_dbfs: float = -55.0,
        onset_frames: int = 3,
        hangover_ms: int = 240,
    ) -> None:
        self.sample_rate = sample_rate
        self.threshold_db = threshold_db
        self.min_level_dbfs = min_level_dbfs
        self.onset_frames = onset_frames
        self.hangover_frames = max(1, hangover_ms // frame_ms)
        self.reset()

    def reset(self) -> None:
        self._noise_db = -70.0
        self._run = 0  # consecutive speech-like frames
        self._quiet = 0  # consecutive non-speech frames while in speech
        self._speech = False

    def process(self, pcm: np.ndarray) -> VadDecision:
        return self._decide(level_dbfs(pcm))

    def process_ulaw(self, data: bytes) -> VadDecision:
        if not data:
            return self._decide(SILENCE_DBFS)
        energy = _ULAW_ENERGY[np.frombuffer(data, dtype=np.uint8)].sum()
        return self._decide(_dbfs(float(energy) / len(data)))

    def _decide(self, level: float) -> VadDecision:
        noise = self._noise_db
        active = level > noise + self.threshold_db and level > self.min_level_dbfs
        # Noise floor: follows drops at once, rises slowly (~3 dB/s) so speech does not lift it.
        self._noise_db = level if level < noise else noise + min(level - noise, 0.06)
        onset = offset = False
        if active:
            self._run += 1
            self._quiet = 0
            if not self._speech and self._run >= self.onset_frames:
                self._speech = onset = True
        else:
            self._run = 0
            if self._speech:
                self._quiet += 1
                if self._quiet >= self.hangover_frames:
                    self._speech = False
                    offset = True
                    self._quiet = 0
        return VadDecision(self._speech, onset, offset, level)
