"""What our edge may send Twilio on a bidirectional Media Stream, checked the way Twilio does.

Sources: "Send WebSocket messages to Twilio" in
https://www.twilio.com/docs/voice/media-streams/websocket-messages (``media`` with
``media.payload``, ``mark`` with ``mark.name``, ``clear``; each with ``event`` and
``streamSid``), warning 31950 https://www.twilio.com/docs/api/errors/31950 (a binary frame) and
warning 31951 https://www.twilio.com/docs/api/errors/31951 ("not valid JSON", "an unsupported
event type", "missing required fields, included unexpected fields, or used the wrong object
structure", "the streamSid in the message did not match the active Stream").
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

# Top-level and nested fields of each message type, exactly (anything more or less is 31951).
_FIELDS: dict[str, tuple[frozenset[str], str | None, frozenset[str]]] = {
    "media": (frozenset({"event", "streamSid", "media"}), "media", frozenset({"payload"})),
    "mark": (frozenset({"event", "streamSid", "mark"}), "mark", frozenset({"name"})),
    "clear": (frozenset({"event", "streamSid"}), None, frozenset()),
}


class StreamWarning(ValueError):
    """A message Twilio would log as warning ``code`` and not act on."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Media:
    payload: bytes  # mu-law 8 kHz, buffered and played in order


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    pass


EdgeMessage = Media | Mark | Clear


def read(message: str | bytes, stream_sid: str) -> EdgeMessage:
    """One WebSocket message from the edge, or StreamWarning(31950 | 31951)."""
    if isinstance(message, bytes):
        raise StreamWarning(31950, "binary frame on the media stream")
    try:
        data: Any = json.loads(message)
    except ValueError:
        raise StreamWarning(31951, f"not valid JSON: {message[:80]!r}") from None
    if not isinstance(data, dict):
        raise StreamWarning(31951, f"not a JSON object: {message[:80]!r}")
    event = data.get("event")
    if not isinstance(event, str) or event not in _FIELDS:
        raise StreamWarning(31951, f"unsupported event {event!r}")
    top, nested_name, nested = _FIELDS[event]
    if set(data) != top:
        raise StreamWarning(31951, f"{event} fields {sorted(data)}, expected {sorted(top)}")
    if data["streamSid"] != stream_sid:
        raise StreamWarning(31951, f"{event} with a wrong streamSid")
    if nested_name is None:
        return Clear()
    body = data[nested_name]
    if not isinstance(body, dict) or set(body) != nested:
        raise StreamWarning(31951, f"{event}: {nested_name!r} must hold exactly {sorted(nested)}")
    if event == "mark":
        if not isinstance(body["name"], str):
            raise StreamWarning(31951, "mark.name must be a string")
        return Mark(body["name"])
    payload = body["payload"]
    try:
        if not isinstance(payload, str):
            raise TypeError
        return Media(base64.b64decode(payload, validate=True))
    except (TypeError, binascii.Error):
        raise StreamWarning(31951, "media.payload is not base64") from None
