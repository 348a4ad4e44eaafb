"""Events a Call is fed besides the parsed Twilio/Vapi messages (media_edge.protocol)."""

from __future__ import annotations

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
    | SocketClosed
    | ProtocolViolation
    | Tick
    | Shutdown
)
