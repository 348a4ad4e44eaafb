"""Media-edge DSP (numpy; audioop for the VAD's level): G.711 mu-law, 8 <-> 16 kHz
resampling, VAD, levels, framing.

Everything here is per-call state plus pure functions: no I/O, no clocks, cheap enough for every
20 ms frame of hundreds of concurrent calls.
"""

from media_edge.dsp.framing import Framer, GapFiller
from media_edge.dsp.g711 import ULAW_SILENCE_BYTE, ulaw_decode, ulaw_encode
from media_edge.dsp.resample import StreamingResampler
from media_edge.dsp.vad import SILENCE_DBFS, Vad, VadDecision, VoiceDetector, level_dbfs

__all__ = [
    "SILENCE_DBFS",
    "ULAW_SILENCE_BYTE",
    "Framer",
    "GapFiller",
    "StreamingResampler",
    "Vad",
    "VadDecision",
    "VoiceDetector",
    "level_dbfs",
    "ulaw_decode",
    "ulaw_encode",
]
