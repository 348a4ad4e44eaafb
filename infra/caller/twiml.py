"""Read the TwiML our API answers with, the way Twilio does, down to what the caller needs.

Sources: TwiML overview https://www.twilio.com/docs/voice/twiml (the ``<Response>`` root, case-
sensitive names) and ``<Stream>`` https://www.twilio.com/docs/voice/twiml/stream (attributes,
custom parameters). Each rule below names the page and section it comes from.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# "the response body is larger than 64 kB": error 11750 https://www.twilio.com/docs/api/errors/11750
MAX_TWIML_BYTES = 64 * 1024
# <Stream> "Custom parameters": "The combined length of each <Parameter> name and value
# attributes must be under 500 characters."
MAX_PARAMETER_CHARS = 500
CALLBACK_METHODS = ("GET", "POST")  # <Stream> statusCallbackMethod: "GET or POST"
LOOPBACK_NAMES = ("localhost",)


class TwimlError(ValueError):
    """The document is not TwiML Twilio would run as a bidirectional stream."""


@dataclass(frozen=True, slots=True)
class StreamInstruction:
    """``<Connect><Stream url>`` with its ``<Parameter>``s and optional status callback."""

    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    name: str | None = None  # <Stream name>: StreamName in status callbacks (else the StreamSid)
    status_callback: str | None = None
    status_callback_method: str = "POST"


@dataclass(frozen=True, slots=True)
class Twiml:
    stream: StreamInstruction | None
    say: list[str]
    hangup: bool


def parse(document: str | bytes) -> Twiml:
    """Parse a ``<Response>``; raise TwimlError on what Twilio rejects (size, shape, stream URL)."""
    raw = document.encode() if isinstance(document, str) else document
    if len(raw) > MAX_TWIML_BYTES:
        raise TwimlError("TwiML larger than 64 kB (Twilio error 11750)")
    try:
        root = ET.fromstring(raw)  # noqa: S314 - bounded, no entities expanded by expat
    except ET.ParseError as exc:
        raise TwimlError(f"invalid XML: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(f"root element is <{root.tag}>, not <Response>")
    stream: StreamInstruction | None = None
    for connect in root.iter("Connect"):
        for element in connect.iter("Stream"):
            stream = _stream(element)
    for start in root.iter("Start"):
        # <Start><Stream> "creates a unidirectional Stream": audio sent back is never played.
        if start.find("Stream") is not None:
            raise TwimlError("<Start><Stream> is one-way: audio sent back is never played")
    says = [element.text or "" for element in root.iter("Say")]
    return Twiml(stream=stream, say=says, hangup=root.find("Hangup") is not None)


def _stream(element: ET.Element) -> StreamInstruction:
    url = element.get("url", "")
    _check_stream_url(url)
    parameters: dict[str, str] = {}
    for param in element.iter("Parameter"):
        name, value = param.get("name", ""), param.get("value", "")
        if len(name) + len(value) >= MAX_PARAMETER_CHARS:
            raise TwimlError(f"<Parameter {name}> name+value must be under 500 characters")
        parameters[name] = value
    callback = element.get("statusCallback")
    if callback is not None:
        # <Stream> statusCallback: "Optional. An absolute URL."
        parts = urlsplit(callback)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TwimlError(f"<Stream statusCallback> must be an absolute URL, got {callback!r}")
    method = element.get("statusCallbackMethod", "POST")
    if method not in CALLBACK_METHODS:
        raise TwimlError(f"<Stream statusCallbackMethod> must be GET or POST, got {method!r}")
    return StreamInstruction(
        url=url,
        parameters=parameters,
        name=element.get("name"),
        status_callback=callback,
        status_callback_method=method,
    )


def _check_stream_url(url: str) -> None:
    """<Stream url>: "``wss`` is the only supported protocol" and it "*does not* support query
    string parameters" (https://www.twilio.com/docs/voice/twiml/stream#url; a non-wss URL is
    error 31922, https://www.twilio.com/docs/api/errors/31922).

    One deliberate exception, for the local stack only: ``ws://`` to a loopback address, which
    Twilio could never reach anyway (the local edge has no TLS certificate). Twilio also accepts
    a relative URL; we require an absolute one (our API always sends one: stricter is safe).
    """
    parts = urlsplit(url)
    if not parts.netloc or parts.scheme not in ("wss", "ws"):
        raise TwimlError(f"<Stream url> must be a wss:// URL (Twilio error 31922), got {url!r}")
    if parts.scheme == "ws" and not _is_loopback(parts.hostname or ""):
        raise TwimlError(f"<Stream url> must be wss:// (Twilio error 31922), got {url!r}")
    if parts.query:
        raise TwimlError("<Stream url> must not have a query string: use <Parameter>")


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
