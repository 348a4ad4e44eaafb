"""What the edge adds to a call record and the API reads back: one definition of the keys.

The call record lives in ``SESSIONS_TABLE`` under ``CALL#{callSid}`` (``functions/storage.py``
describes the whole layout). At the end of a call the edge writes two things there: the
recording's link on the ``RECORD`` item (an attribute, beside what the worker writes) and the
call's picture as its own ``PICTURE`` item (a compact JSON string: tens of KB that would
otherwise share the record's 400 KB with the transcript). Recordings go to the bucket under
``RECORDINGS_PREFIX`` (what the edge's IAM policy is scoped to).
"""

from __future__ import annotations

import json
import time
from typing import Any

from voicebridge.identifiers import is_call_sid

RECORDINGS_PREFIX = "recordings/"
RECORDING_CHANNELS = ("caller", "assistant")  # left, right
RECORD_SK = "RECORD"
PICTURE_SK = "PICTURE"
RECORDING_ATTRIBUTE = "recording"
PICTURE_ATTRIBUTE = "picture"


def call_pk(call_sid: str) -> str:
    if not is_call_sid(call_sid):
        raise ValueError("not a Twilio CallSid")
    return f"CALL#{call_sid}"


def recording_key(call_sid: str, started_at_epoch_s: float) -> str:
    """``recordings/YYYY/MM/DD/{callSid}.wav`` (UTC): listable by day, one object per call."""
    if not is_call_sid(call_sid):
        raise ValueError("not a Twilio CallSid")
    day = time.strftime("%Y/%m/%d", time.gmtime(started_at_epoch_s))
    return f"{RECORDINGS_PREFIX}{day}/{call_sid}.wav"


def recording_link(key: str, duration_ms: int) -> dict[str, Any]:
    return {"key": key, "durationMs": duration_ms, "channels": list(RECORDING_CHANNELS)}


def encode_picture(picture: dict[str, Any]) -> str:
    return json.dumps(picture, separators=(",", ":"))


def decode_picture(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
