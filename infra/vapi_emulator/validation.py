"""Request validation the way Vapi's API does it (NestJS class-validator, whitelist mode).

Vapi answers a bad body with ``400 {"message": [..reasons..], "error": "Bad Request",
"statusCode": 400}`` and rejects properties its DTOs do not declare ("property X should not
exist"), which is how a removed field such as the legacy ``serverUrl`` fails loudly. Only the
fields PROTOCOLS.md documents are checked deeply; other declared fields pass through.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

# Top-level CreateAssistantDTO fields (Vapi's public docs); anything else is rejected.
ASSISTANT_FIELDS = frozenset(
    {
        "name",
        "model",
        "voice",
        "transcriber",
        "firstMessage",
        "firstMessageMode",
        "firstMessageInterruptionsEnabled",
        "server",
        "serverMessages",
        "clientMessages",
        "maxDurationSeconds",
        "startSpeakingPlan",
        "stopSpeakingPlan",
        "endCallMessage",
        "endCallPhrases",
        "metadata",
        "analysisPlan",
        "artifactPlan",
        "backgroundSound",
        "credentialIds",
        "credentials",
        "hooks",
        "voicemailDetection",
        "voicemailMessage",
        "modelOutputInMessagesEnabled",
        "transportConfigurations",
        "compliancePlan",
        "monitorPlan",
        "keypadInputPlan",
        "observabilityPlan",
        "backgroundSpeechDenoisingPlan",
    }
)
# CreateCallDTO fields; ``metadata`` is not in Vapi's published schema but PROTOCOLS.md lists it,
# so the emulator accepts it and the schema test (tests/e2e) reports it.
CALL_FIELDS = frozenset(
    {
        "assistantId",
        "assistant",
        "assistantOverrides",
        "squadId",
        "squad",
        "phoneNumberId",
        "phoneNumber",
        "customer",
        "customerId",
        "name",
        "schedulePlan",
        "transport",
        "metadata",
    }
)
SERVER_MESSAGES = frozenset(
    {
        "assistant.started",
        "assistant.speechStarted",
        "conversation-update",
        "end-of-call-report",
        "function-call",
        "hang",
        "language-changed",
        "language-change-detected",
        "model-output",
        "phone-call-control",
        "speech-update",
        "status-update",
        "transcript",
        'transcript[transcriptType="final"]',
        "tool-calls",
        "transfer-destination-request",
        "handoff-destination-request",
        "transfer-update",
        "user-interrupted",
        "voice-input",
        "knowledge-base-request",
        "assistant-request",
    }
)
CLIENT_MESSAGES = frozenset(
    {
        "conversation-update",
        "assistant.speechStarted",
        "function-call",
        "function-call-result",
        "hang",
        "language-changed",
        "metadata",
        "model-output",
        "speech-update",
        "status-update",
        "transcript",
        "tool-calls",
        "tool-calls-result",
        "tool.completed",
        "transfer-update",
        "user-interrupted",
        "voice-input",
        "workflow.node.started",
        "assistant.started",
    }
)
FIRST_MESSAGE_MODES = frozenset(
    {
        "assistant-speaks-first",
        "assistant-speaks-first-with-model-generated-message",
        "assistant-waits-for-user",
    }
)
AUDIO_FORMATS = {"mulaw": frozenset({8000}), "pcm_s16le": frozenset({8000, 16000, 24000, 48000})}


class ValidationFailed(ValueError):
    """A 400 with Vapi's error body."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons

    def body(self) -> dict[str, Any]:
        return {"message": self.reasons, "error": "Bad Request", "statusCode": 400}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Checker:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def fail(self, reason: str) -> None:
        self.reasons.append(reason)

    def whitelist(self, body: dict[str, Any], allowed: frozenset[str], prefix: str = "") -> None:
        for key in body:
            if key not in allowed:
                self.fail(f"property {prefix}{key} should not exist")

    def string(self, obj: dict[str, Any], key: str, path: str, *, required: bool = False) -> None:
        if key not in obj:
            if required:
                self.fail(f"{path}{key} must be a string")
            return
        if not isinstance(obj[key], str):
            self.fail(f"{path}{key} must be a string")

    def obj(self, obj: dict[str, Any], key: str, path: str = "") -> dict[str, Any] | None:
        if key not in obj:
            return None
        if not isinstance(obj[key], dict):
            self.fail(f"{path}{key} must be an object")
            return None
        return obj[key]

    def number(self, obj: dict[str, Any], key: str, path: str, low: float, high: float) -> None:
        if key not in obj:
            return
        value = obj[key]
        if not _is_number(value):
            self.fail(f"{path}{key} must be a number conforming to the specified constraints")
        elif not low <= value <= high:
            self.fail(f"{path}{key} must not be less than {low} or greater than {high}")

    def messages(self, obj: dict[str, Any], key: str, allowed: frozenset[str]) -> None:
        if key not in obj:
            return
        value = obj[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(f"{key} must be an array of strings")
            return
        for item in value:
            if item not in allowed:
                self.fail(f"each value in {key} must be one of the following values")
                return

    def done(self) -> None:
        if self.reasons:
            raise ValidationFailed(self.reasons)


def validate_assistant(body: Any) -> dict[str, Any]:
    """Check a CreateAssistantDTO body; return it or raise ValidationFailed."""
    check = _Checker()
    if not isinstance(body, dict):
        raise ValidationFailed(["body must be a JSON object"])
    check.whitelist(body, ASSISTANT_FIELDS)
    check.string(body, "name", "")
    if isinstance(body.get("name"), str) and len(body["name"]) > 40:
        check.fail("name must be shorter than or equal to 40 characters")
    check.string(body, "firstMessage", "")
    if "firstMessageMode" in body and body["firstMessageMode"] not in FIRST_MESSAGE_MODES:
        check.fail("firstMessageMode must be one of the following values")
    check.number(body, "maxDurationSeconds", "", 10, 43200)
    if (model := check.obj(body, "model")) is not None:
        check.string(model, "provider", "model.", required=True)
        check.string(model, "model", "model.", required=True)
        for key in ("messages", "tools", "toolIds"):
            if key in model and not isinstance(model[key], list):
                check.fail(f"model.{key} must be an array")
        for tool in model.get("tools") or []:
            if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
                check.fail("model.tools each value must be an object with a type")
    if (voice := check.obj(body, "voice")) is not None:
        check.string(voice, "provider", "voice.", required=True)
        check.string(voice, "voiceId", "voice.", required=True)
    if (transcriber := check.obj(body, "transcriber")) is not None:
        check.string(transcriber, "provider", "transcriber.", required=True)
    if (server := check.obj(body, "server")) is not None:
        _check_server(check, server)
    check.messages(body, "serverMessages", SERVER_MESSAGES)
    check.messages(body, "clientMessages", CLIENT_MESSAGES)
    if (plan := check.obj(body, "stopSpeakingPlan")) is not None:
        check.number(plan, "numWords", "stopSpeakingPlan.", 0, 10)
        check.number(plan, "voiceSeconds", "stopSpeakingPlan.", 0, 0.5)
        check.number(plan, "backoffSeconds", "stopSpeakingPlan.", 0, 10)
    if (plan := check.obj(body, "startSpeakingPlan")) is not None:
        check.number(plan, "waitSeconds", "startSpeakingPlan.", 0, 5)
    check.obj(body, "metadata")
    check.done()
    return body


def _check_server(check: _Checker, server: dict[str, Any]) -> None:
    url = server.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        check.fail("server.url must be a URL address")
    check.number(server, "timeoutSeconds", "server.", 1, 300)
    headers = server.get("headers")
    if headers is not None and (
        not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())
    ):
        check.fail("server.headers must be an object of strings")
    check.string(server, "credentialId", "server.")


def validate_call(body: Any, assistants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Check a CreateCallDTO for the websocket transport; return the resolved assistant."""
    check = _Checker()
    if not isinstance(body, dict):
        raise ValidationFailed(["body must be a JSON object"])
    check.whitelist(body, CALL_FIELDS)
    check.obj(body, "metadata")
    check.obj(body, "assistantOverrides")
    transport = check.obj(body, "transport")
    if transport is None and "transport" not in body:
        check.fail("transport must be provided: phone calls are not emulated, use vapi.websocket")
    elif transport is not None:
        _check_transport(check, transport)
    check.done()
    if "assistant" in body:
        if not isinstance(body["assistant"], dict):
            raise ValidationFailed(["assistant must be an object"])
        return validate_assistant(body["assistant"])
    assistant_id = body.get("assistantId")
    if assistant_id is None:
        raise ValidationFailed([_NO_ASSISTANT])
    if not isinstance(assistant_id, str) or assistant_id not in assistants:
        raise ValidationFailed([f"Couldn't Get Assistant. `assistantId` {assistant_id} Not Found."])
    return assistants[assistant_id]


_NO_ASSISTANT = "Couldn't Get Assistant. Need Either `assistant` Or `assistantId`."
_TRANSPORT_FIELDS = frozenset({"provider", "audioFormat", "conversationType"})
_AUDIO_FIELDS = frozenset({"format", "container", "sampleRate"})


def _check_transport(check: _Checker, transport: dict[str, Any]) -> None:
    if transport.get("provider") != "vapi.websocket":
        check.fail("transport.provider must be one of the following values: vapi.websocket")
        return
    check.whitelist(transport, _TRANSPORT_FIELDS, "transport.")
    audio = transport.get("audioFormat")
    if audio is None:
        return  # Vapi defaults to pcm_s16le 16 kHz
    if not isinstance(audio, dict):
        check.fail("transport.audioFormat must be an object")
        return
    check.whitelist(audio, _AUDIO_FIELDS, "transport.audioFormat.")
    fmt, rate = audio.get("format"), audio.get("sampleRate")
    if fmt not in AUDIO_FORMATS:
        check.fail("transport.audioFormat.format must be one of: pcm_s16le, mulaw")
    if not _is_number(rate):
        check.fail("transport.audioFormat.sampleRate must be a number")
    elif fmt in AUDIO_FORMATS and rate not in AUDIO_FORMATS[fmt]:
        check.fail(f"transport.audioFormat.sampleRate {rate} is not supported for {fmt}")
    if audio.get("container", "raw") != "raw":
        check.fail("transport.audioFormat.container must be one of the following values: raw")


def audio_format(body: dict[str, Any]) -> tuple[str, int]:
    """(format, sample rate) the call will use; Vapi's default is 16 kHz pcm_s16le."""
    audio = (body.get("transport") or {}).get("audioFormat") or {}
    return str(audio.get("format", "pcm_s16le")), int(audio.get("sampleRate", 16000))
