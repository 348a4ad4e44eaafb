"""What the simulated caller does, as a list of steps (run in order, against real time)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infra.audio import synth_speech

# A backchannel ("mm-hmm") is short: the emulated Vapi's transcriber hears an utterance that
# ends within ACK_MAX_MS (600 ms) of voice as one (infra/vapi_emulator/assistant.py).
BACKCHANNEL_MS = 400


@dataclass(frozen=True, slots=True)
class WaitForSpeech:
    """Until the caller hears the assistant (or ``limit_ms`` passes)."""

    limit_ms: int = 10_000


@dataclass(frozen=True, slots=True)
class WaitForSilence:
    """Until the caller has heard speech and then ``silence_ms`` of quiet (the assistant is
    done), or ``limit_ms`` passes."""

    silence_ms: int = 700
    limit_ms: int = 15_000


@dataclass(frozen=True, slots=True)
class Pause:
    ms: int


@dataclass(frozen=True, slots=True)
class Say:
    """Speak ``audio`` (8 kHz int16); ``barge_in`` marks it as talking over the assistant.
    With ``wait=False`` the next step starts while this one is still being spoken."""

    audio: np.ndarray
    label: str = "caller speaks"
    barge_in: bool = False
    wait: bool = True


def backchannel(label: str = "caller says mm-hmm") -> Say:
    """The caller acknowledges while the assistant talks: 0.4 s of speech-like sound, spoken
    over the assistant but not a barge-in (the report's barge-in figures leave it out)."""
    return Say(synth_speech(BACKCHANNEL_MS / 1000, seed=3), label)


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Hangup:
    """The caller hangs up (``stop``, socket closed, final status callback)."""


Step = WaitForSpeech | WaitForSilence | Pause | Say | Dtmf | Hangup
