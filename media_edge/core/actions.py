"""Actions a Call asks its shell to perform, in the order returned."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from websockets.frames import CloseCode


@dataclass(slots=True)
class SendToTwilio:
    """A text frame (already-serialised JSON) for the Twilio socket."""

    text: str


@dataclass(slots=True)
class SendAudioToVapi:
    data: bytes


@dataclass(slots=True)
class SendJsonToVapi:
    message: dict[str, Any]


@dataclass(slots=True)
class ClaimStream:
    """The token is valid: take a call slot on this task and claim ``call_sid``'s one stream
    across every task; answer with StreamClaimed. Nothing reaches Vapi before the answer."""

    call_sid: str
    stream_sid: str


@dataclass(slots=True)
class CreateVapiCall:
    """POST /call with ``body``, then open its transport socket; answer with VapiConnected or
    VapiConnectFailed."""

    body: dict[str, Any]


@dataclass(slots=True)
class EndCallViaTwilio:
    """Replace the live call's TwiML through Twilio REST (apology + hang-up, or a fallback Dial)."""

    call_sid: str
    twiml: str


@dataclass(slots=True)
class CloseTwilio:
    code: CloseCode
    reason: str


@dataclass(slots=True)
class CloseVapi:
    """Close (or abandon, if still connecting) the Vapi side."""


@dataclass(slots=True)
class Metric:
    name: str
    value: float
    unit: str = "Count"
    reason: str | None = None  # CallErrors only: also emitted with a ``reason`` dimension


@dataclass(slots=True)
class Latency:
    """Record ``name`` = (time after the preceding actions ran) - ``since_ms``, in ms.

    The shell measures the end point, so the value includes the real send, not just our logic."""

    name: str
    since_ms: float


@dataclass(slots=True)
class Publish:
    """A live-console event of this call (text, never audio; PUBLISH_API.md): the shell hands it
    to the live feed (``media_edge.io.live``), which stores it for consoles that open later and
    fans it out to those watching. ``data`` is small JSON (<= 8 KB serialised, else dropped and
    logged); times in it are ms from the stream start (``at``), the call picture's axis."""

    kind: str
    data: dict[str, Any]


@dataclass(slots=True)
class Log:
    level: str  # "info" | "warning" | "error"
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RecordAudio:
    """The next second of the call's recording: 16-bit stereo PCM for the shell's spool."""

    data: bytes


@dataclass(slots=True)
class FinishRecording:
    """The recording is complete (``duration_ms`` of audio): write the header, upload the rest,
    link it from the call record. Never touches the call itself."""

    duration_ms: int


@dataclass(slots=True)
class StorePicture:
    """The call's picture (``media_edge.core.picture``), for the call record."""

    picture: dict[str, Any]


Action = (
    SendToTwilio
    | SendAudioToVapi
    | SendJsonToVapi
    | ClaimStream
    | CreateVapiCall
    | EndCallViaTwilio
    | CloseTwilio
    | CloseVapi
    | Metric
    | Latency
    | Publish
    | Log
    | RecordAudio
    | FinishRecording
    | StorePicture
)
