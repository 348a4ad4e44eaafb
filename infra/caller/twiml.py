"""Read the TwiML our API answers with, the way Twilio does, down to what the caller needs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_TWIML_BYTES = 64 * 1024  # Twilio's limit


class TwimlError(ValueError):
    """The document is not TwiML Twilio would run as a bidirectional stream."""


@dataclass(frozen=True, slots=True)
class StreamInstruction:
    """``<Connect><Stream url>`` with its ``<Parameter>``s and optional status callback."""

    url: str
    parameters: dict[str, str] = field(default_factory=dict)
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
        raise TwimlError("TwiML larger than 64 kB (Twilio error 12300)")
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
        if start.find("Stream") is not None:
            raise TwimlError("<Start><Stream> is one-way: audio sent back is never played")
    says = [element.text or "" for element in root.iter("Say")]
    return Twiml(stream=stream, say=says, hangup=root.find("Hangup") is not None)


def _stream(element: ET.Element) -> StreamInstruction:
    url = element.get("url", "")
    parts = urlsplit(url)
    if parts.scheme not in ("wss", "ws") or not parts.netloc:
        raise TwimlError(f"<Stream url> must be a wss:// URL, got {url!r}")
    if parts.query:
        raise TwimlError("<Stream url> must not have a query string: use <Parameter>")
    parameters: dict[str, str] = {}
    for param in element.iter("Parameter"):
        name, value = param.get("name", ""), param.get("value", "")
        if len(name) + len(value) >= 500:
            raise TwimlError(f"<Parameter {name}> name+value must be under 500 characters")
        parameters[name] = value
    return StreamInstruction(
        url=url,
        parameters=parameters,
        status_callback=element.get("statusCallback"),
        status_callback_method=element.get("statusCallbackMethod", "POST"),
    )
