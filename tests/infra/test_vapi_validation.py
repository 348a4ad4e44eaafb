"""The Vapi emulator rejects what Vapi's API rejects (schema paths in infra/vapi_emulator/
validation.py), and accepts every body our product sends."""

import copy

import pytest

from functions.assistants import CreateAssistant, vapi_assistant_body
from infra.vapi_emulator.validation import ValidationFailed, validate_assistant, validate_call
from media_edge.protocol.vapi import create_call_body

ALLOWLIST = {"sales": "+14155550100"}


def assistant_body(**spec):
    request = CreateAssistant.model_validate({"name": "Desk", "systemPrompt": "Be brief.", **spec})
    return vapi_assistant_body(
        request, "https://api.example.com/vapi/webhook", "s3cret", transfer_allowlist=ALLOWLIST
    )


PRODUCT_ASSISTANTS = {
    "defaults": {},
    "tools-and-phone-call-control": {
        "tools": ["order_status", "transfer_call", "end_call"],
        "phoneCallControl": True,
    },
    "other-providers": {
        "model": {"provider": "anthropic", "model": "claude-3-5-haiku-20241022"},
        "voice": {"provider": "11labs", "voiceId": "burt"},
        "transcriber": {"provider": "assembly-ai", "language": "en"},
    },
    "vapi-model": {"model": {"provider": "vapi"}, "transcriber": {"provider": "google"}},
}
ASSISTANTS = {"a-1": {"name": "x"}}


@pytest.mark.parametrize("name", PRODUCT_ASSISTANTS)
def test_every_assistant_our_admin_api_builds_is_accepted(name):
    body = assistant_body(**PRODUCT_ASSISTANTS[name])
    assert validate_assistant(body) is body


@pytest.mark.parametrize("audio", ["mulaw", "pcm16"])
@pytest.mark.parametrize("caller", ["+14155550123", None])
def test_every_call_our_edge_creates_is_accepted(audio, caller):
    body = create_call_body("a-1", audio, {"callSid": "CA" + "1" * 32, "to": "+1555"}, caller)
    assert validate_call(body, ASSISTANTS) == ASSISTANTS["a-1"]


def _call(**changes):
    body = create_call_body("a-1", "mulaw", {"callSid": "CA1"}, "+14155550123")
    body.update(changes)
    return body


def _with(path, value, body=None):
    """``body`` (the default call) with ``value`` set at the dotted ``path``."""
    body = copy.deepcopy(body if body is not None else _call())
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return body


BAD_CALLS = {
    # CreateCallDTO has no metadata: it belongs in assistantOverrides.metadata
    "top-level metadata": (_call(metadata={"callSid": "CA1"}), "property metadata should not"),
    "unknown property": (_call(serverUrl="https://x"), "property serverUrl should not exist"),
    "name too long": (_call(name="x" * 41), "name must be shorter than or equal to 40"),
    "transport provider": (_with("transport.provider", "vapi.webrtc"), "transport.provider"),
    "transport property": (_with("transport.codec", "opus"), "property transport.codec"),
    "conversation type": (_with("transport.conversationType", "chat"), "conversationType"),
    "audio format": (_with("transport.audioFormat.format", "opus"), "audioFormat.format"),
    "audio rate": (_with("transport.audioFormat.sampleRate", 16000), "sampleRate"),
    "audio container": (_with("transport.audioFormat.container", "wav"), "container"),
    "audio property": (_with("transport.audioFormat.bits", 16), "audioFormat.bits"),
    "override property": (_with("assistantOverrides.serverUrl", "https://x"), "serverUrl"),
    "override client messages": (
        _with("assistantOverrides.clientMessages", ["speech-update", "everything"]),
        "each value in assistantOverrides.clientMessages",
    ),
    "override bound": (
        _with("assistantOverrides.maxDurationSeconds", 5),
        "assistantOverrides.maxDurationSeconds must not be less than 10",
    ),
    "override metadata": (_with("assistantOverrides.metadata", "CA1"), "metadata must be an obj"),
    "override variables": (_with("assistantOverrides.variableValues", []), "variableValues"),
    "override model": (
        _with("assistantOverrides.model", {"provider": "openai", "model": "x", "maxTokens": 20}),
        "assistantOverrides.model.maxTokens must not be less than 50",
    ),
    "customer number": (_with("customer.number", "555-1234"), "E.164"),
    "customer property": (_with("customer.phone", "+14155550123"), "property customer.phone"),
    "no transport": (
        {k: v for k, v in _call().items() if k != "transport"},
        "transport must be provided",
    ),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_call_bodies_are_400(case):
    body, reason = BAD_CALLS[case]
    with pytest.raises(ValidationFailed) as failed:
        validate_call(body, ASSISTANTS)
    assert any(reason in r for r in failed.value.reasons), failed.value.reasons


def _assistant(path, value):
    return _with(path, value, assistant_body())


BAD_ASSISTANTS = {
    "legacy serverUrl": (_assistant("serverUrl", "https://x"), "property serverUrl should not"),
    "name too long": (_assistant("name", "x" * 41), "name must be shorter than or equal to 40"),
    "first message mode": (_assistant("firstMessageMode", "never"), "firstMessageMode must be"),
    "max duration low": (_assistant("maxDurationSeconds", 9), "maxDurationSeconds must not"),
    "max duration high": (_assistant("maxDurationSeconds", 43_201), "maxDurationSeconds"),
    # assistant-request is a server message, but not one an assistant can ask for
    "server message enum": (
        _assistant("serverMessages", ["assistant-request"]),
        "each value in serverMessages",
    ),
    "client message enum": (_assistant("clientMessages", ["audio"]), "clientMessages"),
    "model provider": (_assistant("model.provider", "gpt"), "model.provider must be one of"),
    "model max tokens": (_assistant("model.maxTokens", 49), "model.maxTokens must not be less"),
    "model max tokens high": (_assistant("model.maxTokens", 10_001), "model.maxTokens"),
    "model temperature": (_assistant("model.temperature", 2.5), "model.temperature"),
    "openai property": (_assistant("model.topP", 0.9), "property model.topP should not exist"),
    "model missing": (
        _assistant("model", {"provider": "anthropic", "messages": []}),
        "model.model should not be empty",
    ),
    "vapi model max tokens": (
        _assistant("model", {"provider": "vapi", "maxTokens": 100}),
        "property model.maxTokens should not exist",
    ),
    "message role": (
        _assistant("model.messages", [{"role": "boss", "content": "x"}]),
        "model.messages.0.role",
    ),
    "tool type": (_assistant("model.tools", [{"type": "magic"}]), "model.tools.0.type"),
    "function name": (
        _assistant("model.tools", [{"type": "function", "function": {"name": "has space"}}]),
        "model.tools.0.function.name must match",
    ),
    "function parameters": (
        _assistant(
            "model.tools",
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}],
        ),
        "parameters.type",
    ),
    "voice provider": (_assistant("voice.provider", "polly"), "voice.provider must be one of"),
    "vapi voice property": (_assistant("voice.pitch", 2), "property voice.pitch should not"),
    "vapi voice speed": (_assistant("voice.speed", 3), "voice.speed must not be greater than 2"),
    "voice id missing": (_assistant("voice", {"provider": "11labs"}), "voice.voiceId"),
    "transcriber provider": (_assistant("transcriber.provider", "whisper"), "transcriber.prov"),
    "deepgram endpointing high": (
        _assistant("transcriber.endpointing", 501),
        "transcriber.endpointing must not be greater than 500",
    ),
    "deepgram endpointing low": (_assistant("transcriber.endpointing", 9), "endpointing"),
    "deepgram property": (_assistant("transcriber.vad", True), "property transcriber.vad"),
    "endpointing elsewhere": (
        _assistant("transcriber", {"provider": "google", "endpointing": 300}),
        "property transcriber.endpointing should not exist",
    ),
    "model on assembly-ai": (
        _assistant("transcriber", {"provider": "assembly-ai", "model": "best"}),
        "property transcriber.model should not exist",
    ),
    "openai transcriber model": (
        _assistant("transcriber", {"provider": "openai"}),
        "transcriber.model should not be empty",
    ),
    "server property": (_assistant("server.secret", "x"), "property server.secret should not"),
    "server timeout": (_assistant("server.timeoutSeconds", 301), "server.timeoutSeconds"),
    "server url": (_assistant("server.url", "ftp://x"), "server.url must be a URL address"),
    "stop speaking": (_assistant("stopSpeakingPlan.voiceSeconds", 0.6), "voiceSeconds"),
    "stop speaking property": (_assistant("stopSpeakingPlan.words", 2), "stopSpeakingPlan.words"),
    "start speaking": (_assistant("startSpeakingPlan.waitSeconds", 6), "waitSeconds"),
}


@pytest.mark.parametrize("case", BAD_ASSISTANTS)
def test_bad_assistant_bodies_are_400(case):
    body, reason = BAD_ASSISTANTS[case]
    with pytest.raises(ValidationFailed) as failed:
        validate_assistant(body)
    assert any(reason in r for r in failed.value.reasons), failed.value.reasons


def test_an_inline_assistant_on_a_call_is_checked_too():
    body = {k: v for k, v in _call().items() if k != "assistantId"}
    body["assistant"] = _assistant("transcriber.endpointing", 1000)
    with pytest.raises(ValidationFailed, match="endpointing"):
        validate_call(body, {})
