"""The simulated caller: Twilio's side of a call (voice webhook, Media Stream, playout buffer,
status callbacks), driven by a small script of caller behaviour. ``voicebridge call`` is its CLI."""

from infra.caller.script import Dtmf, Hangup, Pause, Say, Step, WaitForSilence, WaitForSpeech
from infra.caller.session import CallerConfig, CallReport, SimulatedCall, run_call

__all__ = [
    "CallReport",
    "CallerConfig",
    "Dtmf",
    "Hangup",
    "Pause",
    "Say",
    "SimulatedCall",
    "Step",
    "WaitForSilence",
    "WaitForSpeech",
    "run_call",
]
