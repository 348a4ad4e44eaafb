"""A Vapi server message from raw bytes, bounded before anything uses it.

Authenticated is not the same as sane: JSON nested a few hundred levels deep parsed fine and then
blew Python's recursion limit while being queued, and a 900 KB ``call.id`` made an SQS message
too large. Both ended in a 500 and a lost event. Here the nesting depth is measured on the raw
bytes before parsing (no recursion, C-speed passes over the body) and the fields that key,
route or dedupe an event are bounded in length; anything else is a 400 with the reason.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64  # Vapi's deepest real payloads (artifact messages with tool calls) are ~10
MAX_TYPE_CHARS = 64
MAX_ID_CHARS = 128  # Vapi's ids are UUIDs; tool call ids are the model's (~24-40 characters)
MAX_STAMP_CHARS = 64  # timestamp / status: part of the event's dedupe key

# +1 for an opening bracket, -1 (0xff as a signed byte) for a closing one, 0 for anything else.
_DEPTH_STEP = bytes(1 if c in b"[{" else 0xFF if c in b"]}" else 0 for c in range(256))
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


class BadMessage(ValueError):
    """Why the body is not a message we accept (the 400's text)."""


def nesting_depth(body: bytes) -> int:
    """The deepest ``[``/``{`` nesting outside strings, in linear time and without recursion.

    In JSON every backslash escapes the next character, so dropping ``\\\\`` pairs and then
    ``\\"`` leaves exactly the quotes that open and close strings; the text between every other
    pair of them is outside strings. (Invalid JSON may be measured wrongly; the parser that runs
    next rejects it anyway.)
    """
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    steps = array("b", outside.translate(None, _NOT_BRACKETS).translate(_DEPTH_STEP))
    return max(accumulate(steps), default=0)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _tool_call_ids(message: dict[str, Any]) -> Iterator[Any]:
    for item in _list(message.get("toolCallList")):
        yield _dict(item).get("id")
    for entry in _list(message.get("toolWithToolCallList")):
        yield _dict(_dict(entry).get("toolCall")).get("id")


def _too_long(value: Any, limit: int) -> bool:
    if value is None or isinstance(value, bool | int | float):
        return False
    return not isinstance(value, str) or len(value) > limit


def parse(body: bytes) -> dict[str, Any]:
    """``body`` -> its ``message`` object; :class:`BadMessage` if it is not one we accept."""
    depth = nesting_depth(body)
    if depth > MAX_DEPTH:
        raise BadMessage(f"JSON nested {depth} levels deep (limit {MAX_DEPTH})")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BadMessage("body is not valid JSON") from None
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict):
        raise BadMessage('expected {"message": {"type": ...}}')
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        raise BadMessage('expected {"message": {"type": ...}}')
    call = _dict(message.get("call"))
    bounded = {
        "type": (kind, MAX_TYPE_CHARS),
        "call.id": (call.get("id"), MAX_ID_CHARS),
        "call.phoneCallProviderId": (call.get("phoneCallProviderId"), MAX_ID_CHARS),
        "timestamp": (message.get("timestamp"), MAX_STAMP_CHARS),
        "status": (message.get("status"), MAX_STAMP_CHARS),
    }
    for name, (value, limit) in bounded.items():
        if _too_long(value, limit):
            raise BadMessage(f"{name} must be a string of at most {limit} characters")
    if any(_too_long(tool_call_id, MAX_ID_CHARS) for tool_call_id in _tool_call_ids(message)):
        raise BadMessage(f"a toolCallId must be a string of at most {MAX_ID_CHARS} characters")
    return message
