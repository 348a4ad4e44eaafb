"""What we send to Vapi, checked against Vapi's published OpenAPI schema.

The requests are the real ones, captured by the emulator during a call through the local stack:
``POST /assistant`` built by the control plane, ``POST /call`` built by the media edge. The schema
file lives outside the repo (``../shared/reference/vapi-openapi.json``); nothing of it is copied
here. Besides JSON-schema validity, properties the schema does not declare are reported, because
Vapi's API rejects them ("property X should not exist").
"""

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from infra.caller import Hangup, WaitForSpeech
from tests.e2e.helpers import call

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
# ``shared/reference/`` beside the repo, or beside a folder holding it (a worktree); never needed.
SPEC = next(
    (
        folder / "shared/reference/vapi-openapi.json"
        for folder in REPO.parents
        if (folder / "shared/reference/vapi-openapi.json").is_file()
    ),
    REPO.parent / "shared/reference/vapi-openapi.json",
)
URI = "urn:vapi-openapi"


def _fix_spec_quirks(node):
    """Read Vapi's generated spec the way its API behaves (class-validator, not JSON Schema):
    string enums typed ``object`` (``AudioFormat.format``) are strings; an ``enum`` placed on an
    array (``serverMessages``) constrains its items, which ``items`` already says; ``oneOf`` of
    TypeScript unions is "any of" (``model: string | known-model-enum`` overlaps); patterns
    written as JavaScript literals (``/^[a-z]$/``) lose their slashes."""
    if isinstance(node, dict):
        values = node.get("enum")
        if node.get("type") == "object" and values and all(isinstance(v, str) for v in values):
            node["type"] = "string"
        if node.get("type") == "array" and "enum" in node:
            del node["enum"]
        if "oneOf" in node:
            node["anyOf"] = node.pop("oneOf")
        pattern = node.get("pattern")
        if isinstance(pattern, str) and len(pattern) > 1 and pattern[0] == pattern[-1] == "/":
            node["pattern"] = pattern[1:-1]  # a JavaScript regex literal, not a pattern
        for value in list(node.values()):
            _fix_spec_quirks(value)
    elif isinstance(node, list):
        for value in node:
            _fix_spec_quirks(value)
    return node


@pytest.fixture(scope="module")
def spec():
    if not SPEC.exists():
        pytest.skip(f"Vapi's OpenAPI schema is not beside the repo ({SPEC}); CI provides it")
    return _fix_spec_quirks(json.loads(SPEC.read_text()))


class Checker:
    def __init__(self, spec):
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(URI, resource)

    def validator(self, schema):
        return Draft202012Validator(schema, registry=self.registry)

    def ref(self, name):
        return {"$ref": f"{URI}#/components/schemas/{name}"}

    def resolve(self, schema):
        while isinstance(schema, dict) and "$ref" in schema:
            pointer = schema["$ref"].split("#", 1)[1]
            node = self.spec
            for part in pointer.strip("/").split("/"):
                node = node[part]
            schema = node
        return schema

    def errors(self, instance, name):
        found = self.validator(self.ref(name)).iter_errors(instance)
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in found]

    def undeclared(self, instance, schema, path=""):
        """Paths of properties the schema does not declare (Vapi's whitelist validation)."""
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return []
        if "anyOf" in schema:
            for branch in schema["anyOf"]:
                if self.validator(self._absolute(branch)).is_valid(instance):
                    return self.undeclared(instance, branch, path)
            return []
        properties = {}
        for part in [schema, *schema.get("allOf", [])]:
            properties.update(self.resolve(part).get("properties", {}))
        out = []
        if isinstance(instance, dict) and properties:
            for key, value in instance.items():
                if key not in properties:
                    out.append(f"{path}{key}")
                else:
                    out += self.undeclared(value, properties[key], f"{path}{key}.")
        elif isinstance(instance, list) and "items" in schema:
            for index, item in enumerate(instance):
                out += self.undeclared(item, schema["items"], f"{path}{index}.")
        return out

    def _absolute(self, schema):
        if isinstance(schema, dict) and str(schema.get("$ref", "")).startswith("#"):
            return {"$ref": URI + schema["$ref"]}
        return schema


async def test_requests_we_send_match_vapis_schema(stack, spec):
    report = await call(stack, [WaitForSpeech(), Hangup()])
    assert report.protocol_errors == []
    captured = {(r.method, r.path): r.body for r in stack.vapi.requests}
    checker = Checker(spec)
    problems = []
    for key, dto in (
        (("POST", "/assistant"), "CreateAssistantDTO"),
        (("POST", "/call"), "CreateCallDTO"),
    ):
        assert key in captured, f"no {key} was sent"
        body = captured[key]
        problems += [f"{key} breaks {dto}: {error}" for error in checker.errors(body, dto)]
        problems += [
            f"{key}: Vapi answers 400 'property {path} should not exist'"
            for path in checker.undeclared(body, checker.ref(dto))
        ]
    assert problems == []


def _problems(checker, body, dto, label):
    found = [f"{label} breaks {dto}: {error}" for error in checker.errors(body, dto)]
    found += [
        f"{label}: Vapi answers 400 'property {path} should not exist'"
        for path in checker.undeclared(body, checker.ref(dto))
    ]
    return found


ASSISTANT_VARIANTS = {
    "defaults": {},
    "tools, phone-call-control, plans": {
        "tools": ["order_status", "transfer_call", "end_call"],
        "phoneCallControl": True,
        "firstMessageMode": "assistant-waits-for-user",
        "transcriber": {"endpointing": 500, "language": "en-US", "model": "nova-2-phonecall"},
        "model": {"maxTokens": 50, "temperature": 0},
        "maxDurationSeconds": 43_200,
    },
    "other providers": {
        "model": {"provider": "anthropic", "model": "claude-3-5-haiku-20241022"},
        "voice": {"provider": "11labs", "voiceId": "burt"},
        "transcriber": {"provider": "assembly-ai", "language": "en"},
    },
    "vapi model, google transcriber": {
        "model": {"provider": "vapi"},
        "transcriber": {"provider": "google"},
    },
}


def test_every_assistant_variant_we_build_matches_vapis_schema(spec):
    from functions.assistants import CreateAssistant, vapi_assistant_body

    checker = Checker(spec)
    problems = []
    for label, changes in ASSISTANT_VARIANTS.items():
        request = CreateAssistant.model_validate({"name": "Desk", "systemPrompt": "Hi", **changes})
        for credential_id, header in (
            (None, True),
            ("550e8400-e29b-41d4-a716-446655440000", False),
        ):
            body = vapi_assistant_body(
                request,
                "https://api.example.com/vapi/webhook",
                "s3cret",
                credential_id=credential_id,
                secret_header=header,
                transfer_allowlist={"sales": "+14155550100", "support": "+442071838750"},
            )
            problems += _problems(checker, body, "CreateAssistantDTO", label)
    assert problems == []


def test_every_call_body_our_edge_builds_matches_vapis_schema(spec):
    from media_edge.protocol.vapi import create_call_body

    checker = Checker(spec)
    problems = []
    for audio in ("mulaw", "pcm16"):
        for caller in ("+14155550123", None):
            metadata = {"callSid": "CA" + "1" * 32, "to": "+15550100002"}
            for control in (False, True):  # monitorPlan: with the console's control URL or not
                body = create_call_body("asst-1", audio, metadata, caller, control=control)
                problems += _problems(checker, body, "CreateCallDTO", f"{audio}/{caller}")
    assert problems == []


async def test_our_webhook_answers_match_vapis_schema(stack, spec):
    import httpx

    checker = Checker(spec)
    call = {"id": "vapi-1", "phoneCallProviderId": "CA" + "2" * 32}
    tool_call = {"id": "t1", "type": "function", "function": {"name": "order_status"}}
    cases = [
        (
            {"type": "assistant-request", "call": call, "phoneNumber": {"number": "+15550100002"}},
            "ServerMessageResponseAssistantRequest",
        ),
        (
            {
                "type": "tool-calls",
                "call": call,
                "toolCallList": [
                    {
                        **tool_call,
                        "function": {**tool_call["function"], "arguments": {"order_id": "1001"}},
                    },
                    {"id": "t2", "type": "function", "function": {"name": "nope", "arguments": {}}},
                ],
            },
            "ServerMessageResponseToolCalls",
        ),
        (
            {"type": "transfer-destination-request", "call": call},
            "ServerMessageResponseTransferDestinationRequest",
        ),
    ]
    problems = []
    headers = {"x-vapi-secret": stack.env["VAPI_WEBHOOK_SECRET"]}
    async with httpx.AsyncClient(timeout=10) as client:
        for message, dto in cases:
            response = await client.post(
                f"{stack.api_url}/vapi/webhook", json={"message": message}, headers=headers
            )
            assert response.status_code == 200, response.text
            problems += _problems(checker, response.json(), dto, message["type"])
    assert problems == []


def test_the_emulators_phone_call_control_message_matches_vapis_schema(spec):
    from infra.vapi_emulator import Script
    from tests.infra.test_vapi_assistant import _one_turn_and_reply, hooks, make

    checker = Checker(spec)
    problems = []
    for script in (Script(end_after_turns=1), Script(transfer_after_turns=1)):
        server_messages = ["end-of-call-report", "phone-call-control"]
        clock = _one_turn_and_reply(make(script, serverMessages=server_messages))
        (message,) = hooks(clock.actions, "phone-call-control")
        # ``call`` and ``assistant`` are the emulator's records, checked elsewhere.
        claim = {k: v for k, v in message.items() if k not in ("call", "assistant")}
        problems += _problems(checker, claim, "ServerMessagePhoneCallControl", claim["request"])
    assert problems == []


def test_the_consoles_step_in_messages_match_vapis_schema(spec):
    """What the console POSTs to ``call.monitor.controlUrl``, each against its own
    ``ClientInboundMessage*`` schema."""
    from functions.console.control import vapi_message

    checker = Checker(spec)
    schemas = {
        "say": "ClientInboundMessageSay",
        "add-context": "ClientInboundMessageAddMessage",
        "mute-assistant": "ClientInboundMessageControl",
        "unmute-assistant": "ClientInboundMessageControl",
        "end-call": "ClientInboundMessageEndCall",
    }
    problems = []
    for action, dto in schemas.items():
        problems += _problems(
            checker, vapi_message(action, "Please hold <one> moment."), dto, action
        )
    assert problems == []


def test_the_emulators_transcripts_match_vapis_schema(spec):
    """Partials and finals of both roles, as the emulator sends them on the socket."""
    from infra.vapi_emulator.assistant import Script, ScriptedCall, SendEvent

    call = ScriptedCall(
        {"id": "c"},
        {"firstMessage": "Hello there, how can I help?"},
        ("mulaw", 8000),
        Script(greeting_ms=2000),
        now_ms=0.0,
        wall_ms=1e12,
    )
    actions = call.start(0.0)
    for step in range(1, 120):
        actions += call.tick(step * 20.0)
    sent = [a.message for a in actions if isinstance(a, SendEvent)]
    transcripts = [m for m in sent if m["type"] == "transcript"]
    assert {m["transcriptType"] for m in transcripts} == {"partial", "final"}
    checker = Checker(spec)
    problems = []
    for message in transcripts:
        problems += _problems(checker, message, "ClientMessageTranscript", message["transcript"])
    assert problems == []
