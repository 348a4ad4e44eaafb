"""Request validation the way Vapi's API does it (NestJS class-validator, whitelist mode).

Vapi answers a bad body with ``400 {"message": [..reasons..], "error": "Bad Request",
"statusCode": 400}`` and rejects properties its DTOs do not declare ("property X should not
exist"), which is how a removed field such as the legacy ``serverUrl`` fails loudly.

Every rule below names the part of Vapi's published OpenAPI document it comes from
(``#/components/schemas/...``, https://api.vapi.ai/api-json). Nothing is read from that document
at run time: the rules are written here by hand, for the bodies a bridge like ours sends.
Checked deeply (whitelist, enums, bounds, required fields): ``CreateCallDTO``, the
websocket ``transport``, ``customer``, ``assistantOverrides``, ``CreateAssistantDTO`` top
level, ``server``, the speaking plans, message lists, the provider of ``model``/``voice``/
``transcriber`` with the fields each provider declares for the ones in common use (OpenAI and
Vapi models, Vapi voice, Deepgram transcriber) and the numeric bounds shared by all. Not
modelled: each provider's model/voice/language names, and the inner shape of plans we never
send (``analysisPlan``, ``hooks``, ...), which pass as long as they are objects or arrays.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

# #/components/schemas/CreateAssistantDTO/properties
ASSISTANT_FIELDS = frozenset(
    {
        "transcriber",
        "model",
        "voice",
        "firstMessage",
        "firstMessageInterruptionsEnabled",
        "firstMessageMode",
        "voicemailDetection",
        "clientMessages",
        "serverMessages",
        "maxDurationSeconds",
        "backgroundSound",
        "modelOutputInMessagesEnabled",
        "transportConfigurations",
        "observabilityPlan",
        "credentials",
        "hooks",
        "name",
        "voicemailMessage",
        "endCallMessage",
        "endCallPhrases",
        "compliancePlan",
        "metadata",
        "backgroundSpeechDenoisingPlan",
        "analysisPlan",
        "artifactPlan",
        "startSpeakingPlan",
        "stopSpeakingPlan",
        "monitorPlan",
        "credentialIds",
        "server",
        "keypadInputPlan",
    }
)
# #/components/schemas/AssistantOverrides/properties: the assistant's, plus these two.
OVERRIDE_FIELDS = ASSISTANT_FIELDS | {"tools:append", "variableValues"}
# #/components/schemas/CreateCallDTO/properties: no ``metadata`` (it goes in assistantOverrides).
CALL_FIELDS = frozenset(
    {
        "assistantVersion",
        "transport",
        "customers",
        "name",
        "schedulePlan",
        "assistantId",
        "assistant",
        "assistantOverrides",
        "squadId",
        "squad",
        "squadOverrides",
        "workflowId",
        "workflow",
        "workflowOverrides",
        "phoneNumberId",
        "phoneNumber",
        "customerId",
        "customer",
    }
)
# #/components/schemas/CreateAssistantDTO/properties/serverMessages/items/enum
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
        "chat.created",
        "chat.deleted",
        "session.created",
        "session.updated",
        "session.deleted",
        "call.deleted",
        "call.delete.failed",
        "call.artifact.upload",
    }
)
# #/components/schemas/CreateAssistantDTO/properties/clientMessages/items/enum
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
# #/components/schemas/CreateAssistantDTO/properties/firstMessageMode/enum
FIRST_MESSAGE_MODES = frozenset(
    {
        "assistant-speaks-first",
        "assistant-speaks-first-with-model-generated-message",
        "assistant-waits-for-user",
    }
)
# #/components/schemas/CreateAssistantDTO/properties/model/oneOf: each *Model's provider enum.
MODEL_PROVIDERS = frozenset(
    {
        "anthropic",
        "anthropic-bedrock",
        "anyscale",
        "cerebras",
        "custom-llm",
        "deepinfra",
        "deep-seek",
        "google",
        "groq",
        "inflection-ai",
        "minimax",
        "openai",
        "openrouter",
        "perplexity-ai",
        "together-ai",
        "xai",
        "vapi",
    }
)
# Properties every *Model declares (OpenAIModel ... VapiModel); VapiModel has no maxTokens.
_MODEL_COMMON = frozenset(
    {"messages", "tools", "toolIds", "toolRefs", "knowledgeBase", "provider", "model"}
    | {"temperature", "emotionRecognitionEnabled", "numFastTurns"}
)
# #/components/schemas/OpenAIModel/properties and #/components/schemas/VapiModel/properties
MODEL_FIELDS: dict[str, frozenset[str]] = {
    "openai": _MODEL_COMMON
    | {
        "fallbackModels",
        "toolStrictCompatibilityMode",
        "promptCacheRetention",
        "promptCacheKey",
        "reasoningEffort",
        "maxTokens",
    },
    "vapi": _MODEL_COMMON | {"version", "workflowId", "workflow"},
}
# #/components/schemas/CreateAssistantDTO/properties/voice/oneOf: each *Voice's provider enum.
VOICE_PROVIDERS = frozenset(
    {
        "azure",
        "cartesia",
        "custom-voice",
        "deepgram",
        "11labs",
        "hume",
        "lmnt",
        "neuphonic",
        "openai",
        "playht",
        "wellsaid",
        "rime-ai",
        "smallest-ai",
        "tavus",
        "vapi",
        "sesame",
        "inworld",
        "minimax",
        "xai",
        "microsoft",
    }
)
# #/components/schemas/VapiVoice/properties
VAPI_VOICE_FIELDS = frozenset(
    {
        "cachingEnabled",
        "provider",
        "voiceId",
        "version",
        "speed",
        "language",
        "pronunciationDictionary",
        "chunkPlan",
    }
)
# #/components/schemas/CreateAssistantDTO/properties/transcriber/oneOf: each provider enum.
TRANSCRIBER_PROVIDERS = frozenset(
    {
        "assembly-ai",
        "azure",
        "custom-transcriber",
        "deepgram",
        "11labs",
        "gladia",
        "google",
        "speechmatics",
        "talkscriber",
        "openai",
        "cartesia",
        "soniox",
        "xai",
        "vapi",
    }
)
# #/components/schemas/DeepgramTranscriber/properties
DEEPGRAM_FIELDS = frozenset(
    {
        "provider",
        "model",
        "language",
        "smartFormat",
        "mipOptOut",
        "numerals",
        "profanityFilter",
        "redaction",
        "confidenceThreshold",
        "eotThreshold",
        "eotTimeoutMs",
        "languages",
        "keywords",
        "keyterm",
        "endpointing",
        "fallbackPlan",
    }
)
# AssemblyAITranscriber, AzureSpeechTranscriber, VapiTranscriber, CustomTranscriber: no model.
_TRANSCRIBERS_WITHOUT_MODEL = frozenset({"assembly-ai", "azure", "vapi", "custom-transcriber"})
# Required properties beyond ``provider`` (each schema's ``required``).
_REQUIRED: dict[tuple[str, str], tuple[str, ...]] = {
    ("model", "custom-llm"): ("url", "model"),
    ("voice", "custom-voice"): ("server",),
    ("voice", "neuphonic"): ("voiceId", "language"),
    ("voice", "sesame"): ("voiceId", "model"),
    ("transcriber", "custom-transcriber"): ("server",),
    ("transcriber", "speechmatics"): ("customVocabulary",),
    ("transcriber", "openai"): ("model",),
}
# #/components/schemas/Server/properties
SERVER_FIELDS = frozenset(
    {
        "timeoutSeconds",
        "credentialId",
        "staticIpAddressesEnabled",
        "encryptedPaths",
        "url",
        "headers",
        "backoffPlan",
    }
)
# #/components/schemas/OpenAIMessage/properties/role/enum
MESSAGE_ROLES = frozenset({"assistant", "function", "user", "system", "tool"})
# #/components/schemas/OpenAIModel/properties/tools/items/oneOf: each Create*ToolDTO's type.
TOOL_TYPES = frozenset(
    {
        "apiRequest",
        "bash",
        "code",
        "computer",
        "dtmf",
        "endCall",
        "function",
        "ghl.calendar.availability.check",
        "ghl.calendar.event.create",
        "ghl.contact.create",
        "ghl.contact.get",
        "google.calendar.availability.check",
        "google.calendar.event.create",
        "google.sheets.row.append",
        "handoff",
        "mcp",
        "query",
        "slack.message.send",
        "sms",
        "textEditor",
        "transferCall",
        "sipRequest",
        "voicemail",
    }
)
# #/components/schemas/OpenAIFunction/properties/name/pattern
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
E164 = re.compile(r"\+[1-9][0-9]{6,14}")  # CreateCustomerDTO.numberE164CheckEnabled (default)
# #/components/schemas/AudioFormat: format enum, container enum, sampleRate 0-192000. The rates
# per format are narrower here: Vapi's websocket transport docs list mulaw at 8 kHz and PCM at
# these rates (https://docs.vapi.ai/calls/websocket-transport).
AUDIO_FORMATS = {"mulaw": frozenset({8000}), "pcm_s16le": frozenset({8000, 16000, 24000, 48000})}
_TRANSPORT_FIELDS = frozenset({"provider", "audioFormat", "conversationType"})
_AUDIO_FIELDS = frozenset({"format", "container", "sampleRate"})
_CUSTOMER_FIELDS = frozenset(  # #/components/schemas/CreateCustomerDTO/properties
    {
        "numberE164CheckEnabled",
        "extension",
        "assistantOverrides",
        "squadOverrides",
        "number",
        "sipUri",
        "name",
        "email",
        "externalId",
    }
)


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
    """Collects class-validator style reasons (Vapi lists every problem, not the first)."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def fail(self, reason: str) -> None:
        self.reasons.append(reason)

    def whitelist(self, body: Mapping[str, Any], allowed: frozenset[str], path: str = "") -> None:
        for key in body:
            if key not in allowed:
                self.fail(f"property {path}{key} should not exist")

    def required(self, obj: Mapping[str, Any], keys: tuple[str, ...], path: str) -> None:
        for key in keys:
            if key not in obj:
                self.fail(f"{path}{key} should not be empty")

    def string(self, obj: Mapping[str, Any], key: str, path: str, max_length: int = 0) -> None:
        if key not in obj:
            return
        value = obj[key]
        if not isinstance(value, str):
            self.fail(f"{path}{key} must be a string")
        elif max_length and len(value) > max_length:
            self.fail(f"{path}{key} must be shorter than or equal to {max_length} characters")

    def obj(self, obj: Mapping[str, Any], key: str, path: str = "") -> dict[str, Any] | None:
        if key not in obj:
            return None
        if not isinstance(obj[key], dict):
            self.fail(f"{path}{key} must be an object")
            return None
        return obj[key]

    def array(self, obj: Mapping[str, Any], key: str, path: str = "") -> list[Any] | None:
        if key not in obj:
            return None
        if not isinstance(obj[key], list):
            self.fail(f"{path}{key} must be an array")
            return None
        return obj[key]

    def boolean(self, obj: Mapping[str, Any], key: str, path: str) -> None:
        if key in obj and not isinstance(obj[key], bool):
            self.fail(f"{path}{key} must be a boolean value")

    def number(self, obj: Mapping[str, Any], key: str, path: str, low: float, high: float) -> None:
        if key not in obj:
            return
        value = obj[key]
        if not _is_number(value):
            self.fail(f"{path}{key} must be a number conforming to the specified constraints")
        elif value < low:
            self.fail(f"{path}{key} must not be less than {low:g}")
        elif value > high:
            self.fail(f"{path}{key} must not be greater than {high:g}")

    def enum(self, obj: Mapping[str, Any], key: str, path: str, allowed: frozenset[str]) -> None:
        if key in obj and obj[key] not in allowed:
            self.fail(
                f"{path}{key} must be one of the following values: {', '.join(sorted(allowed))}"
            )

    def messages(
        self, obj: Mapping[str, Any], key: str, path: str, allowed: frozenset[str]
    ) -> None:
        value = self.array(obj, key, path)
        if value is None:
            return
        if not all(isinstance(v, str) for v in value):
            self.fail(f"{path}{key} must be an array of strings")
        elif any(item not in allowed for item in value):
            self.fail(f"each value in {path}{key} must be one of the following values")

    def done(self) -> None:
        if self.reasons:
            raise ValidationFailed(self.reasons)


def _check_model(check: _Checker, model: dict[str, Any], path: str) -> None:
    provider = model.get("provider")
    if provider not in MODEL_PROVIDERS:
        check.fail(f"{path}provider must be one of the following values")  # the oneOf branches
        return
    allowed = MODEL_FIELDS.get(provider)
    if allowed is not None:
        check.whitelist(model, allowed, path)
    # VapiModel is the only *Model whose ``model`` is optional.
    needed = () if provider == "vapi" else _REQUIRED.get(("model", provider), ("model",))
    check.required(model, needed, path)
    check.string(model, "model", path)
    check.number(model, "temperature", path, 0, 2)  # every *Model.temperature
    if provider == "vapi" and "maxTokens" in model:  # VapiModel declares no maxTokens
        check.fail(f"property {path}maxTokens should not exist")
    check.number(model, "maxTokens", path, 50, 10_000)  # every other *Model.maxTokens
    for index, message in enumerate(check.array(model, "messages", path) or []):
        where = f"{path}messages.{index}."
        if not isinstance(message, dict):
            check.fail(f"{where[:-1]} must be an object")
            continue
        check.whitelist(message, frozenset({"role", "content"}), where)  # OpenAIMessage
        check.enum(message, "role", where, MESSAGE_ROLES)
        check.required(message, ("role", "content"), where)
        check.string(message, "content", where)
    for index, tool in enumerate(check.array(model, "tools", path) or []):
        _check_tool(check, tool, f"{path}tools.{index}.")


def _check_tool(check: _Checker, tool: Any, where: str) -> None:
    if not isinstance(tool, dict) or tool.get("type") not in TOOL_TYPES:
        check.fail(f"{where}type must be one of the following values")
        return
    if tool["type"] != "function":
        return
    # #/components/schemas/CreateFunctionToolDTO and OpenAIFunction / OpenAIFunctionParameters
    check.whitelist(
        tool,
        frozenset(
            {"messages", "type", "async", "server", "variableExtractionPlan", "parameters"}
            | {"function", "rejectionPlan"}
        ),
        where,
    )
    function = check.obj(tool, "function", where)
    if function is None:
        return
    at = f"{where}function."
    check.whitelist(function, frozenset({"name", "strict", "description", "parameters"}), at)
    name = function.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
        check.fail(f"{at}name must match /^[a-zA-Z0-9_-]{{1,64}}$/ regular expression")
    check.string(function, "description", at)
    parameters = check.obj(function, "parameters", at)
    if parameters is not None:
        check.whitelist(
            parameters, frozenset({"type", "properties", "required"}), f"{at}parameters."
        )
        if parameters.get("type") != "object":
            check.fail(f"{at}parameters.type must be one of the following values: object")
        if not isinstance(parameters.get("properties"), dict):
            check.fail(f"{at}parameters.properties must be an object")


def _check_voice(check: _Checker, voice: dict[str, Any], path: str) -> None:
    provider = voice.get("provider")
    if provider not in VOICE_PROVIDERS:
        check.fail(f"{path}provider must be one of the following values")
        return
    if provider == "vapi":
        check.whitelist(voice, VAPI_VOICE_FIELDS, path)
        check.number(voice, "speed", path, 0.25, 2)  # VapiVoice.speed
    check.required(voice, _REQUIRED.get(("voice", provider), ("voiceId",)), path)
    check.string(voice, "voiceId", path)


def _check_transcriber(check: _Checker, transcriber: dict[str, Any], path: str) -> None:
    provider = transcriber.get("provider")
    if provider not in TRANSCRIBER_PROVIDERS:
        check.fail(f"{path}provider must be one of the following values")
        return
    if provider == "deepgram":
        check.whitelist(transcriber, DEEPGRAM_FIELDS, path)
        check.number(transcriber, "endpointing", path, 10, 500)  # DeepgramTranscriber
    elif provider == "gladia":
        check.number(transcriber, "endpointing", path, 0.01, 10)  # GladiaTranscriber (s)
    elif "endpointing" in transcriber:
        check.fail(f"property {path}endpointing should not exist")
    if provider in _TRANSCRIBERS_WITHOUT_MODEL and "model" in transcriber:
        check.fail(f"property {path}model should not exist")
    check.required(transcriber, _REQUIRED.get(("transcriber", provider), ()), path)


def _check_server(check: _Checker, server: dict[str, Any], path: str) -> None:
    check.whitelist(server, SERVER_FIELDS, path)
    url = server.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        check.fail(f"{path}url must be a URL address")
    check.number(server, "timeoutSeconds", path, 1, 300)  # Server.timeoutSeconds
    headers = server.get("headers")
    if headers is not None and (
        not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())
    ):
        check.fail(f"{path}headers must be an object of strings")
    check.string(server, "credentialId", path)


def _check_assistant_fields(check: _Checker, body: dict[str, Any], path: str) -> None:
    """The properties CreateAssistantDTO and AssistantOverrides share."""
    check.string(body, "name", path, 40)  # CreateAssistantDTO.name maxLength 40
    check.string(body, "firstMessage", path)
    check.enum(body, "firstMessageMode", path, FIRST_MESSAGE_MODES)
    check.boolean(body, "firstMessageInterruptionsEnabled", path)
    check.number(body, "maxDurationSeconds", path, 10, 43_200)
    check.string(body, "endCallMessage", path, 1000)
    check.string(body, "voicemailMessage", path, 1000)
    if (model := check.obj(body, "model", path)) is not None:
        _check_model(check, model, f"{path}model.")
    if (voice := check.obj(body, "voice", path)) is not None:
        _check_voice(check, voice, f"{path}voice.")
    if (transcriber := check.obj(body, "transcriber", path)) is not None:
        _check_transcriber(check, transcriber, f"{path}transcriber.")
    if (server := check.obj(body, "server", path)) is not None:
        _check_server(check, server, f"{path}server.")
    check.messages(body, "serverMessages", path, SERVER_MESSAGES)
    check.messages(body, "clientMessages", path, CLIENT_MESSAGES)
    if (plan := check.obj(body, "stopSpeakingPlan", path)) is not None:  # StopSpeakingPlan
        at = f"{path}stopSpeakingPlan."
        check.whitelist(
            plan,
            frozenset(
                {"numWords", "voiceSeconds", "backoffSeconds"}
                | {"acknowledgementPhrases", "interruptionPhrases"}
            ),
            at,
        )
        check.number(plan, "numWords", at, 0, 10)
        check.number(plan, "voiceSeconds", at, 0, 0.5)
        check.number(plan, "backoffSeconds", at, 0, 10)
    if (plan := check.obj(body, "startSpeakingPlan", path)) is not None:  # StartSpeakingPlan
        check.number(plan, "waitSeconds", f"{path}startSpeakingPlan.", 0, 5)
    check.obj(body, "metadata", path)
    if (plan := check.obj(body, "monitorPlan", path)) is not None:  # MonitorPlan
        at = f"{path}monitorPlan."
        check.whitelist(plan, MONITOR_PLAN_FIELDS, at)
        for key in sorted(MONITOR_PLAN_FIELDS - {"monitorIds"}):
            check.boolean(plan, key, at)
        check.array(plan, "monitorIds", at)
    for key in ("analysisPlan", "artifactPlan", "compliancePlan"):
        check.obj(body, key, path)
    for key in ("endCallPhrases", "credentialIds", "hooks", "credentials"):
        check.array(body, key, path)


def validate_assistant(body: Any) -> dict[str, Any]:
    """Check a CreateAssistantDTO body; return it or raise ValidationFailed."""
    check = _Checker()
    if not isinstance(body, dict):
        raise ValidationFailed(["body must be a JSON object"])
    check.whitelist(body, ASSISTANT_FIELDS)
    _check_assistant_fields(check, body, "")
    check.done()
    return body


def _check_overrides(check: _Checker, overrides: dict[str, Any], path: str) -> None:
    check.whitelist(overrides, OVERRIDE_FIELDS, path)  # AssistantOverrides
    _check_assistant_fields(check, overrides, path)
    check.obj(overrides, "variableValues", path)
    check.array(overrides, "tools:append", path)


def _check_customer(check: _Checker, customer: dict[str, Any]) -> None:
    check.whitelist(customer, _CUSTOMER_FIELDS, "customer.")  # CreateCustomerDTO
    check.string(customer, "number", "customer.", 40)
    check.string(customer, "name", "customer.", 40)
    check.string(customer, "extension", "customer.", 10)
    number = customer.get("number")
    if (
        isinstance(number, str)
        and customer.get("numberE164CheckEnabled", True)
        and not E164.fullmatch(number)
    ):
        check.fail("customer.number must be a valid phone number in the E.164 format")
    if (overrides := check.obj(customer, "assistantOverrides", "customer.")) is not None:
        _check_overrides(check, overrides, "customer.assistantOverrides.")


def validate_call(body: Any, assistants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Check a CreateCallDTO for the websocket transport; return the resolved assistant."""
    check = _Checker()
    if not isinstance(body, dict):
        raise ValidationFailed(["body must be a JSON object"])
    check.whitelist(body, CALL_FIELDS)
    check.string(body, "name", "", 40)  # CreateCallDTO.name maxLength 40
    if (overrides := check.obj(body, "assistantOverrides")) is not None:
        _check_overrides(check, overrides, "assistantOverrides.")
    if (customer := check.obj(body, "customer")) is not None:
        _check_customer(check, customer)
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


def _check_transport(check: _Checker, transport: dict[str, Any]) -> None:
    # #/components/schemas/VapiWebsocketTransport (provider vapi.websocket, conversationType
    # voice) and #/components/schemas/AudioFormat (required: format, sampleRate)
    if transport.get("provider") != "vapi.websocket":
        check.fail("transport.provider must be one of the following values: vapi.websocket")
        return
    check.whitelist(transport, _TRANSPORT_FIELDS, "transport.")
    check.enum(transport, "conversationType", "transport.", frozenset({"voice"}))
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


# #/components/schemas/MonitorPlan/properties
MONITOR_PLAN_FIELDS = frozenset(
    {
        "listenEnabled",
        "listenAuthenticationEnabled",
        "controlEnabled",
        "controlAuthenticationEnabled",
        "monitorIds",
    }
)
# #/components/schemas/ClientInboundMessageControl/properties/control/enum
CONTROLS = frozenset(
    {"mute-assistant", "unmute-assistant", "mute-customer", "unmute-customer", "say-first-message"}
)
OPENAI_ROLES = frozenset({"assistant", "function", "user", "system", "tool"})  # OpenAIMessage.role


def control_enabled(assistant: Mapping[str, Any], overrides: Mapping[str, Any]) -> bool:
    """MonitorPlan.controlEnabled ("Defaults to true"), the call's overrides first."""
    for holder in (overrides, assistant):
        plan = holder.get("monitorPlan")
        if isinstance(plan, dict) and "controlEnabled" in plan:
            return plan["controlEnabled"] is True
    return True


def validate_control(body: Any) -> dict[str, Any]:
    """A message POSTed to ``call.monitor.controlUrl``: one of ``ClientInboundMessage``'s
    types, sent bare as the docs' examples send it (https://docs.vapi.ai/calls/call-features),
    each checked against its schema (``#/components/schemas/ClientInboundMessage*``)."""
    check = _Checker()
    if not isinstance(body, dict):
        raise ValidationFailed(["body must be a JSON object"])
    kind = body.get("type")
    if kind == "say":  # ClientInboundMessageSay
        check.whitelist(
            body,
            frozenset(
                {"type", "content", "endCallAfterSpoken", "interruptionsEnabled"}
                | {"interruptAssistantEnabled"}
            ),
        )
        if not isinstance(body.get("content"), str):
            check.fail("content must be a string")
        for key in ("endCallAfterSpoken", "interruptionsEnabled", "interruptAssistantEnabled"):
            check.boolean(body, key, "")
    elif kind == "add-message":  # ClientInboundMessageAddMessage (message required)
        check.whitelist(body, frozenset({"type", "message", "triggerResponseEnabled"}))
        message = body.get("message")
        if (
            not isinstance(message, dict)
            or message.get("role") not in OPENAI_ROLES
            or "content" not in message
            or not isinstance(message["content"], str | None)
        ):
            check.fail("message must be an OpenAIMessage (role and content)")
        check.boolean(body, "triggerResponseEnabled", "")
    elif kind == "control":  # ClientInboundMessageControl (control required)
        check.whitelist(body, frozenset({"type", "control"}))
        if body.get("control") not in CONTROLS:
            check.fail(
                f"control must be one of the following values: {', '.join(sorted(CONTROLS))}"
            )
    elif kind == "end-call":  # ClientInboundMessageEndCall
        check.whitelist(body, frozenset({"type"}))
    elif kind == "transfer":  # ClientInboundMessageTransfer
        check.whitelist(body, frozenset({"type", "destination", "content"}))
        destination = body.get("destination")
        if destination is not None and not (
            isinstance(destination, dict)
            and (
                (
                    destination.get("type") == "number"
                    and E164.fullmatch(str(destination.get("number")))
                )
                or (destination.get("type") == "sip" and isinstance(destination.get("sipUri"), str))
            )
        ):
            check.fail("destination must be a TransferDestinationNumber or TransferDestinationSip")
    else:
        check.fail(
            "type must be one of the following values: add-message, control, say, end-call, "
            "transfer (send-transport-message is not emulated)"
        )
    check.done()
    return body
