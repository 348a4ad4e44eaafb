"""The one event envelope between the API and the worker (an SQS message body).

``{"v": 1, "source": "twilio"|"vapi", "type", "callSid", "key", "received_at", "payload"}``.
``key`` is stable for a given real-world event (Twilio: CallSid + status + SequenceNumber; Vapi:
call id + type + its timestamp or a hash of the body), so redeliveries and Twilio/Vapi retries
of the same event dedupe in the worker. Vapi payloads are compacted first: an SQS message is at
most 256 KiB while a webhook may be 1 MiB, and the worker never needs the message history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any, Literal

from functions import aws
from voicebridge.identifiers import is_call_sid

VERSION = 1
MAX_BODY_BYTES = 240_000  # SQS allows 256 KiB; keep headroom for attributes
_CALL_FIELDS = ("id", "phoneCallProviderId", "metadata", "customer", "startedAt", "endedAt", "type")
_HEAVY_FIELDS = (
    "messages",
    "messagesOpenAIFormatted",
    "assistant",
    "inboundPhoneCallDebuggingArtifacts",
)

# Twilio status callback fields (https://www.twilio.com/docs/voice/api/call-resource#statuscallback
# and the <Stream> statusCallback's): the record needs no others.
TWILIO_FIELDS = (
    "AccountSid",
    "CallSid",
    "ParentCallSid",
    "CallStatus",
    "SequenceNumber",
    "Timestamp",
    "CallDuration",
    "Duration",
    "SipResponseCode",
    "CallbackSource",
    "Direction",
    "From",
    "To",
    "StreamSid",
    "StreamName",
    "StreamEvent",
    "StreamError",
    "AnsweredBy",  # answering machine detection's verdict, on calls we placed
)
MAX_TWILIO_VALUE_CHARS = 1000

Source = Literal["twilio", "vapi"]


class EnvelopeError(ValueError):
    """An SQS body that is not one of our envelopes."""


@dataclass(frozen=True, slots=True)
class Envelope:
    source: Source
    type: str
    call_sid: str | None
    key: str
    received_at: float
    payload: dict[str, Any]

    def to_json(self) -> str:
        data = asdict(self)
        data["callSid"] = data.pop("call_sid")
        return json.dumps({"v": VERSION, **data}, separators=(",", ":"), default=str)

    @classmethod
    def from_dict(cls, data: Any) -> Envelope:
        try:
            if data.get("v") != VERSION or data["source"] not in ("twilio", "vapi"):
                raise EnvelopeError("unknown envelope version or source")
            return cls(
                source=data["source"],
                type=str(data["type"]),
                call_sid=data.get("callSid"),
                key=str(data["key"]),
                received_at=float(data["received_at"]),
                payload=dict(data["payload"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EnvelopeError(f"malformed envelope: {type(exc).__name__}") from None


def _digest(data: Any) -> str:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def twilio_event(
    params: Mapping[str, str], received_at: float, extra: Mapping[str, str] | None = None
) -> Envelope:
    """A Twilio call-status or stream-status callback (its identifiers already validated).

    The payload keeps the documented callback fields, each bounded, so the envelope always fits
    an SQS message whatever else a signed form carries; ``extra`` is ours (e.g. an outbound
    call's dial id, from the signed URL), added as is.
    """
    call_sid = params.get("CallSid") or None
    if params.get("StreamEvent"):
        kind = "stream-status"
        key = f"twilio:{call_sid}:{params.get('StreamSid')}:{params['StreamEvent']}"
    else:
        kind = "call-status"
        key = f"twilio:{call_sid}:{params.get('CallStatus')}:{params.get('SequenceNumber')}"
    payload = {k: params[k][:MAX_TWILIO_VALUE_CHARS] for k in TWILIO_FIELDS if k in params}
    payload.update(extra or {})
    return Envelope("twilio", kind, call_sid, key, received_at, payload)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def edge_metadata(message: Mapping[str, Any]) -> dict[str, Any]:
    """What our edge attached to a Vapi call it created (callSid, streamSid, from, to).

    CreateCallDTO has no top-level metadata, so the edge sends it as ``assistantOverrides``
    ``metadata`` (and ``variableValues``); webhooks show it on the call, or merged into the
    assistant they carry. Older payloads had ``call.metadata``: all are read.
    """
    call = _dict(message.get("call"))
    overrides = _dict(call.get("assistantOverrides"))
    merged: dict[str, Any] = {}
    for holder in (
        _dict(_dict(message.get("assistant")).get("metadata")),
        _dict(overrides.get("variableValues")),
        _dict(overrides.get("metadata")),
        _dict(call.get("metadata")),
    ):
        merged.update(holder)
    return merged


def vapi_call_sid(message: Mapping[str, Any]) -> str | None:
    """The Twilio CallSid of a Vapi call: phone calls carry it as ``phoneCallProviderId``; calls
    our edge creates over the websocket transport carry it in their metadata."""
    call = _dict(message.get("call"))
    for candidate in (call.get("phoneCallProviderId"), edge_metadata(message).get("callSid")):
        if is_call_sid(candidate):
            return str(candidate)
    return None


def compact_vapi_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """The message without what the worker never reads, bounded to fit an SQS body."""
    slim = {k: v for k, v in message.items() if k not in _HEAVY_FIELDS}
    if isinstance(slim.get("call"), dict):
        metadata = edge_metadata(message)
        slim["call"] = {k: v for k, v in slim["call"].items() if k in _CALL_FIELDS}
        if metadata:
            slim["call"]["metadata"] = metadata
    if isinstance(slim.get("artifact"), dict):
        slim["artifact"] = {
            k: v
            for k, v in slim["artifact"].items()
            if k not in ("messages", "messagesOpenAIFormatted")
        }
    while len(json.dumps(slim, default=str)) > MAX_BODY_BYTES:
        if not _halve_longest_text(slim):
            # Only what keys and routes the event (bounded by vapi_message) is sure to fit.
            call = _dict(slim.get("call"))
            ids = {k: call[k] for k in ("id", "phoneCallProviderId") if k in call}
            return {"type": slim.get("type"), "call": ids, "truncated": True}
        slim["truncated"] = True
    return slim


def _halve_longest_text(data: dict[str, Any]) -> bool:
    """Cut the longest string value (top level or one level down) in half; False if none left."""
    candidates = [(data, k) for k, v in data.items() if isinstance(v, str)]
    for value in data.values():
        if isinstance(value, dict):
            candidates += [(value, k) for k, v in value.items() if isinstance(v, str)]
    if not candidates:
        return False
    holder, key = max(candidates, key=lambda c: len(c[0][c[1]]))
    if len(holder[key]) < 64:
        return False
    holder[key] = holder[key][: len(holder[key]) // 2]
    return True


def vapi_event(message: Mapping[str, Any], received_at: float) -> Envelope:
    """An informational Vapi server message (status-update, end-of-call-report, ...)."""
    kind = str(message.get("type"))
    call = _dict(message.get("call"))
    stamp = message.get("timestamp")
    if kind == "status-update" and stamp is None:
        stamp = message.get("status")
    if kind == "end-of-call-report":
        stamp = "final"  # one report per call, however often it is delivered
    call_id = call.get("id") or vapi_call_sid(message)
    if call_id is None or stamp is None:
        stamp = _digest(message)
    key = f"vapi:{call_id}:{kind}:{stamp}"
    return Envelope(
        "vapi", kind, vapi_call_sid(message), key, received_at, compact_vapi_message(message)
    )


class EventQueue:
    """SQS producer; the client is created on first send (see storage for why)."""

    def __init__(self, queue_url: str, endpoint_url: str | None = None, client: Any = None) -> None:
        self.queue_url = queue_url
        self.dependency = aws.Dependency("sqs", endpoint_url)
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("sqs", self.dependency.endpoint_url)
        return self._client

    def send(self, body: str) -> None:
        """Queue one envelope's JSON (``Envelope.to_json``)."""
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=body)


@cache
def get_queue(queue_url: str, endpoint_url: str | None) -> EventQueue:
    """One per queue and endpoint for the process (its client is made on first use)."""
    return EventQueue(queue_url, endpoint_url)
