"""Twilio Media Streams messages: strict parsing in, compact serialisation out.

Everything Twilio sends is untrusted until parsed here: size-capped, JSON, an ``event`` string,
required fields of known events typed, base64 validated. A violation raises
:class:`ProtocolError` whose ``reason`` is a short metric label; the call then ends (one
caller's garbage ends one call). An ``event`` we do not know is not a violation: it becomes
:class:`TwilioUnknown`, which the call counts and ignores (see :func:`parse`).
Incoming JSON goes through orjson (~5x cheaper than ``json.loads`` on a media message); outgoing
messages are built by string concatenation with a per-stream prefix because this runs 50+ times
per second per call.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

import orjson

from voicebridge.identifiers import is_account_sid, is_call_sid, is_stream_sid

MAX_MESSAGE_CHARS = 16_384  # a 20 ms media message is ~400 chars; start with parameters ~2 KB
MAX_PAYLOAD_CHARS = 8_192  # 6 KB of mu-law = 750 ms: far above Twilio's 160-byte frames
MAX_PARAMETERS = 32
MAX_SID_CHARS = 64
DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")


class ProtocolError(ValueError):
    """A message broke the protocol; ``reason`` is a metric label, the message a log detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(slots=True)
class TwilioConnected:
    protocol: str


@dataclass(slots=True)
class TwilioStart:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class TwilioMedia:
    stream_sid: str
    timestamp_ms: int
    payload: bytes


@dataclass(slots=True)
class TwilioDtmf:
    stream_sid: str
    digit: str


@dataclass(slots=True)
class TwilioMark:
    stream_sid: str
    name: str


@dataclass(slots=True)
class TwilioStop:
    stream_sid: str


@dataclass(slots=True)
class TwilioUnknown:
    """A well-formed message whose ``event`` this edge does not know (name cut to 32 chars)."""

    event: str


TwilioEvent = (
    TwilioConnected
    | TwilioStart
    | TwilioMedia
    | TwilioDtmf
    | TwilioMark
    | TwilioStop
    | TwilioUnknown
)


def _obj(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise ProtocolError("missing_field", key)
    return value


def _str(parent: dict[str, Any], key: str, limit: int = MAX_SID_CHARS) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ProtocolError("missing_field", key)
    return value


def _sid(parent: dict[str, Any], key: str, matches: Callable[[object], bool]) -> str:
    """A SID matched in full (voicebridge.identifiers): never a prefix, never with a newline."""
    value = parent.get(key)
    if not matches(value):
        raise ProtocolError("bad_sid", key)
    assert isinstance(value, str)
    return value


def _uint(parent: dict[str, Any], key: str) -> int:
    """Twilio sends numbers as strings ("5"); accept non-negative ints in either form."""
    value = parent.get(key)
    if isinstance(value, str) and value.isdigit() and len(value) <= 12:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12:
        return value
    raise ProtocolError("missing_field", key)


def _media(message: dict[str, Any]) -> TwilioMedia:
    media = _obj(message, "media")
    payload = media.get("payload")
    if not isinstance(payload, str) or len(payload) > MAX_PAYLOAD_CHARS:
        raise ProtocolError("bad_payload", "payload missing or too large")
    try:
        audio = binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_base64") from None
    if not audio:
        raise ProtocolError("bad_payload", "empty payload")
    return TwilioMedia(_str(message, "streamSid"), _uint(media, "timestamp"), audio)


def _start(message: dict[str, Any]) -> TwilioStart:
    start = _obj(message, "start")
    stream_sid = _sid(message, "streamSid", is_stream_sid)
    if start.get("streamSid", stream_sid) != stream_sid:
        raise ProtocolError("stream_sid_mismatch", "start.streamSid differs")
    fmt = start.get("mediaFormat")
    if isinstance(fmt, dict) and (
        fmt.get("encoding", "audio/x-mulaw") != "audio/x-mulaw"
        or fmt.get("sampleRate", 8000) not in (8000, "8000")
        or fmt.get("channels", 1) not in (1, "1")
    ):
        raise ProtocolError("unsupported_media_format", str(fmt)[:100])
    params = start.get("customParameters", {})
    if not isinstance(params, dict) or len(params) > MAX_PARAMETERS:
        raise ProtocolError("bad_parameters")
    custom: dict[str, str] = {}
    for key, value in params.items():
        if not isinstance(value, str) or len(key) + len(value) > 500:
            raise ProtocolError("bad_parameters", str(key)[:40])
        custom[key] = value
    call_sid = _sid(start, "callSid", is_call_sid)
    return TwilioStart(stream_sid, call_sid, _sid(start, "accountSid", is_account_sid), custom)


def parse(raw: str | bytes) -> TwilioEvent:
    """One WebSocket message from Twilio -> a typed event, or ProtocolError.

    The bounds (text frame, size, JSON object) apply to every message before its ``event`` is
    looked at. Twilio's "WebSocket messages from Twilio" list (connected, start, media, dtmf,
    stop, mark: https://www.twilio.com/docs/voice/media-streams/websocket-messages) has grown
    over time (``dtmf`` came with bidirectional streams), so a type outside it is a newer
    message, not garbage: :class:`TwilioUnknown`, never an error. A known event with bad
    fields, or a message with no ``event`` string at all, is still a violation."""
    if not isinstance(raw, str):
        raise ProtocolError("binary_frame")
    if len(raw) > MAX_MESSAGE_CHARS:
        raise ProtocolError("oversize", f"{len(raw)} chars")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:  # a ValueError: NaN, lone surrogates, >64-bit ints too
        raise ProtocolError("malformed_json") from None
    if not isinstance(message, dict):
        raise ProtocolError("malformed_json", "not an object")
    event = message.get("event")
    if event == "media":
        return _media(message)
    if event == "mark":
        return TwilioMark(_str(message, "streamSid"), _str(_obj(message, "mark"), "name", 256))
    if event == "dtmf":
        digit = _obj(message, "dtmf").get("digit")
        if not isinstance(digit, str) or len(digit) != 1 or digit not in DTMF_DIGITS:
            raise ProtocolError("bad_dtmf")
        return TwilioDtmf(_str(message, "streamSid"), digit.upper())
    if event == "start":
        return _start(message)
    if event == "stop":
        return TwilioStop(_str(message, "streamSid"))
    if event == "connected":
        return TwilioConnected(str(message.get("protocol", ""))[:32])
    if isinstance(event, str) and event:
        return TwilioUnknown(event[:32])
    raise ProtocolError("missing_event")


class TwilioWriter:
    """Serialises what we send on one stream (the streamSid is fixed once ``start`` arrived)."""

    __slots__ = ("_clear", "_mark_prefix", "_media_prefix")

    def __init__(self, stream_sid: str) -> None:
        sid = json.dumps(stream_sid)
        self._media_prefix = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark_prefix = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":"'
        self._clear = '{"event":"clear","streamSid":' + sid + "}"

    def media(self, mulaw: bytes) -> str:
        return self._media_prefix + binascii.b2a_base64(mulaw, newline=False).decode() + '"}}'

    def mark(self, name: str) -> str:
        """``name`` must be JSON-safe (we only use our own ``m<number>`` labels)."""
        return self._mark_prefix + name + '"}}'

    def clear(self) -> str:
        return self._clear


def apology_twiml(fallback_number: str | None) -> str:
    """TwiML replacing the stream when Vapi is unreachable: never leave the caller in silence."""
    if fallback_number:
        return f"<Response><Dial>{escape(fallback_number)}</Dial></Response>"
    return (
        "<Response><Say>Sorry, our assistant is not available right now. "
        "Please call again later.</Say><Hangup/></Response>"
    )
