"""Vapi WebSocket transport: create-call body, lenient event parsing, client messages.

Vapi's event set follows ``assistant.clientMessages`` and changes often, so parsing is lenient:
unknown types, unknown fields and malformed JSON become :class:`VapiIgnored` (never an error).
Only the few events the bridge acts on are typed. Note ``hang`` is Vapi's "the assistant is
delayed" notice (schema ``ClientMessageHang``), not a hang-up: it is logged, not acted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from voicebridge.identifiers import is_e164

MAX_MESSAGE_BYTES = 1 << 20  # conversation-update carries the whole transcript

# The events this bridge asks Vapi to send on the call's socket, whatever the assistant's own
# ``clientMessages`` says (an assistant customised in Vapi's dashboard could otherwise silently
# lose barge-in). Each is a member of ``#/components/schemas/AssistantOverrides`` ->
# ``clientMessages`` (a test checks that against Vapi's schema when it is beside the repo).
CLIENT_MESSAGES: tuple[str, ...] = (
    "speech-update",  # user started: hold our playout; user stopped: resume it (barge-in)
    "user-interrupted",  # Vapi decided it is an interruption: drop what is held, clear Twilio
    "status-update",  # ``ended``: let the last words play, then hang up (not an apology)
    "transcript",  # caller and assistant words, partial and final: what a live console shows
)
# Left out on purpose: ``conversation-update`` resends the whole history on every turn (the
# end-of-call report already stores it, through the control plane), ``model-output`` is
# per-token chatter that ``transcript`` summarises, ``tool-calls`` asks the *client* to run
# tools (ours run on the server URL), ``hang`` and the rest drive nothing here. Each one
# costs a JSON parse on the edge's event loop for every call.

# EDGE_AUDIO_FORMAT -> Vapi transport audioFormat (schema AudioFormat).
AUDIO_FORMATS: dict[str, dict[str, Any]] = {
    "mulaw": {"format": "mulaw", "container": "raw", "sampleRate": 8000},
    "pcm16": {"format": "pcm_s16le", "container": "raw", "sampleRate": 16000},
}


@dataclass(slots=True)
class VapiUserInterrupted:
    pass


@dataclass(slots=True)
class VapiSpeechUpdate:
    role: str
    status: str


@dataclass(slots=True)
class VapiCallEnded:
    reason: str


@dataclass(slots=True)
class VapiTranscript:
    """What Vapi's transcriber heard (``role`` user) or the assistant said (``role`` assistant),
    verbatim: ``#/components/schemas/ClientMessageTranscript`` (``role``, ``transcriptType``
    partial|final, ``transcript``, all required). A partial is replaced by the next one."""

    role: str
    final: bool
    text: str


@dataclass(slots=True)
class VapiIgnored:
    type: str


VapiMessage = VapiUserInterrupted | VapiSpeechUpdate | VapiCallEnded | VapiTranscript | VapiIgnored
TRANSCRIPT_ROLES = frozenset({"user", "assistant"})  # ClientMessageTranscript.role's enum
# ClientMessageTranscript.type's enum: Vapi may name a final one in the type itself.
_FINAL_TRANSCRIPT_TYPE = 'transcript[transcriptType="final"]'


def parse(text: str) -> VapiMessage:
    """One text frame from Vapi -> the event the bridge cares about (or VapiIgnored)."""
    try:
        message = orjson.loads(text)  # conversation-update carries the whole transcript
    except orjson.JSONDecodeError:
        return VapiIgnored("malformed")
    if isinstance(message, dict) and "type" not in message:
        message = message.get("message")  # the webhook envelope shape, accepted for robustness
    if not isinstance(message, dict):
        return VapiIgnored("malformed")
    kind = message.get("type")
    if kind == "user-interrupted":
        return VapiUserInterrupted()
    if kind == "speech-update":
        return VapiSpeechUpdate(str(message.get("role", "")), str(message.get("status", "")))
    if kind == "status-update" and message.get("status") == "ended":
        return VapiCallEnded(str(message.get("endedReason") or "ended")[:80])
    if kind == "end-of-call-report":
        return VapiCallEnded(str(message.get("endedReason") or "end-of-call-report")[:80])
    if kind == "transcript" or kind == _FINAL_TRANSCRIPT_TYPE:
        return _transcript(message, kind)
    return VapiIgnored(str(kind)[:40] if isinstance(kind, str) else "untyped")


def _transcript(message: dict[str, Any], kind: str) -> VapiMessage:
    """A transcript with the schema's required fields and enums, else ignored (never guessed)."""
    role, stage = message.get("role"), message.get("transcriptType")
    text = message.get("transcript")
    if role not in TRANSCRIPT_ROLES or stage not in ("partial", "final") or type(text) is not str:
        return VapiIgnored("transcript-malformed")
    return VapiTranscript(role, stage == "final" or kind == _FINAL_TRANSCRIPT_TYPE, text)


def create_call_body(
    assistant_id: str,
    audio_format: str,
    metadata: dict[str, str],
    caller: str | None,
    overrides: dict[str, Any] | None = None,
    *,
    control: bool = False,
) -> dict[str, Any]:
    """CreateCallDTO for a websocket-transport call. ``metadata`` rides in assistantOverrides
    (CreateCallDTO has no top-level metadata field); it reaches webhooks as call metadata and
    as template variables, so tools can find the Twilio CallSid. ``overrides`` are the signed
    per-call ones (voicebridge.call_overrides); its variables never replace the metadata's.
    ``clientMessages`` is always ours (:data:`CLIENT_MESSAGES`): the socket must carry what the
    bridge acts on, whatever the assistant or the per-call options say.

    ``monitorPlan`` (``#/components/schemas/MonitorPlan``): live listening is off (it defaults
    to on, and ``listenUrl`` would let whoever holds it hear the call); live control
    (``call.monitor.controlUrl``, where the console's step-in actions are POSTed) only with
    ``control``, i.e. when a live console is configured."""
    extra = dict(overrides or {})
    variables = {**extra.pop("variableValues", {}), **metadata}
    assistant_overrides = {
        **extra,
        "clientMessages": list(CLIENT_MESSAGES),
        "metadata": metadata,
        "variableValues": variables,
        "monitorPlan": {"listenEnabled": False, "controlEnabled": control},
    }
    body: dict[str, Any] = {
        "assistantId": assistant_id,
        "transport": {"provider": "vapi.websocket", "audioFormat": AUDIO_FORMATS[audio_format]},
        "assistantOverrides": assistant_overrides,
    }
    if is_e164(caller):  # not a SIP URI or an anonymous caller: Vapi's customer.number is E.164
        body["customer"] = {"number": caller}
    return body


def control_url(call: dict[str, Any]) -> str | None:
    """``monitor.controlUrl`` from the POST /call answer (``#/components/schemas/Monitor``), or
    None. A capability: whoever holds it controls the call, so it is stored, never logged."""
    monitor = call.get("monitor")
    url = monitor.get("controlUrl") if isinstance(monitor, dict) else None
    if isinstance(url, str) and url.startswith(("https://", "http://")) and len(url) <= 2048:
        return url
    return None


def websocket_url(call: dict[str, Any]) -> str:
    """``transport.websocketCallUrl`` from the POST /call answer (ValueError if absent)."""
    transport = call.get("transport")
    url = transport.get("websocketCallUrl") if isinstance(transport, dict) else None
    if not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
        raise ValueError("Vapi call has no transport.websocketCallUrl")
    return url


END_CALL = {"type": "end-call"}


def dtmf_message(digit: str) -> dict[str, Any]:
    """What a key press becomes: a system note that makes the assistant respond.

    This is Vapi's documented shape (schema ``ClientInboundMessageAddMessage``: ``message`` an
    ``OpenAIMessage`` with ``role`` and ``content``, ``triggerResponseEnabled`` default true;
    https://docs.vapi.ai/calls/call-features "adds a message to the conversation history and
    optionally triggers a response"). The 25 s of dead air after ``--dtmf`` was the Vapi
    emulator's departure from it, not this message (see infra/vapi_emulator/assistant.py)."""
    return {
        "type": "add-message",
        "message": {"role": "system", "content": f"The caller pressed {digit} on the keypad."},
        "triggerResponseEnabled": True,
    }
