"""Events a Call is fed besides the parsed Twilio/Vapi messages (media_edge.protocol)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from media_edge.protocol.twilio import TwilioEvent
from media_edge.protocol.vapi import VapiMessage

Side = Literal["twilio", "vapi"]


@dataclass(slots=True)
class VapiAudio:
    """A binary frame from Vapi: raw audio in the configured format, any length."""

    data: bytes


@dataclass(slots=True)
class VapiConnected:
    """POST /call succeeded and the transport socket is open."""

    call_id: str


@dataclass(slots=True)
class VapiConnectFailed:
    """POST /call or the socket failed (after retries); ``reason`` is a metric label."""

    reason: str
    detail: str = ""


class ClaimOutcome(enum.Enum):
    """How the shell answered ClaimStream."""

    CLAIMED = "claimed"  # a call slot here, and the CallSid's stream is ours fleet-wide
    CLAIMED_LOCALLY = "claimed_locally"  # the claim store did not answer: this task's only
    ALREADY_CLAIMED = "already_claimed"  # another stream of this CallSid came first
    NO_CAPACITY = "no_capacity"  # this task is at EDGE_MAX_CALLS


@dataclass(slots=True)
class StreamClaimed:
    """The answer to ClaimStream; ``detail`` says why the store did not answer, if it did not."""

    outcome: ClaimOutcome
    detail: str = ""


@dataclass(slots=True)
class SocketClosed:
    side: Side
    code: int | None = None


@dataclass(slots=True)
class ProtocolViolation:
    """A message from ``side`` could not be accepted (parse error, size, rate): ends the call."""

    side: Side
    reason: str
    detail: str = ""


@dataclass(slots=True)
class Tick:
    """The deadline the machine asked for has passed (the time is the ``now`` given with it)."""


@dataclass(slots=True)
class Shutdown:
    """The process is stopping (drain period over): end the call now."""

    reason: str = "shutdown"


Event = (
    TwilioEvent
    | VapiMessage
    | VapiAudio
    | VapiConnected
    | VapiConnectFailed
    | StreamClaimed
    | SocketClosed
    | ProtocolViolation
    | Tick
    | Shutdown
)
