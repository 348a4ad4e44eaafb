import json

import httpx
import pytest

from functions import admin, assistants, clients
from tests.functions.conftest import (
    ADMIN_KEY,
    DOMAIN,
    WEBHOOK_SECRET,
    apigw_event,
    invoke,
    response_body,
    twilio_post,
    voice_params,
)

AUTH = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
SPEC = {
    "name": "Front desk",
    "systemPrompt": "You answer the phone for Acme.",
    "phoneNumbers": ["+18005550199"],
    "tools": ["order_status", "transfer_call"],
}


@pytest.fixture
def vapi(monkeypatch):
    """A fake Vapi REST API: answers queued responses (default 201) and records requests."""
    seen: list[httpx.Request] = []
    answers: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if answers:
            return answers.pop(0)
        return httpx.Response(
            201, json={"id": "asst-new", "orgId": "org", "createdAt": "2026-11-21"}
        )

    monkeypatch.setattr(
        clients,
        "new_http_client",
        lambda: httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    return seen, answers


def _post(spec, headers=AUTH):
    return invoke(apigw_event("POST", "/assistants", json.dumps(spec).encode(), headers))


def _json(result):
    return json.loads(response_body(result))


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/assistants"), ("GET", "/assistants"), ("GET", "/calls/CA1")]
)
@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer nope"}, {"authorization": ADMIN_KEY}]
)
def test_admin_routes_need_the_admin_key(aws, vapi, method, path, headers):
    result = invoke(apigw_event(method, path, json.dumps(SPEC).encode(), headers))
    assert result["statusCode"] == 401
    assert result["headers"]["www-authenticate"] == "Bearer"
    assert vapi[0] == []


def test_create_assistant_sends_a_complete_dto_and_binds_numbers(aws, vapi):
    seen, _ = vapi
    result = _post(SPEC)
    assert result["statusCode"] == 201
    body = _json(result)
    assert body["id"] == "asst-new"
    assert body["phoneNumbers"] == ["+18005550199"]
    (request,) = seen
    assert str(request.url) == "https://vapi.test/assistant"
    assert request.headers["authorization"] == "Bearer vapi-key"
    dto = json.loads(request.content)
    assert dto["server"] == {
        "url": f"https://{DOMAIN}/vapi/webhook",
        "timeoutSeconds": 20,
        "headers": {"x-vapi-secret": WEBHOOK_SECRET},
    }
    assert dto["serverMessages"] == list(assistants.SERVER_MESSAGES)
    assert "assistant-request" not in dto["serverMessages"]
    assert dto["model"]["provider"] == "openai"
    assert dto["model"]["model"] == "gpt-4o-mini"
    assert dto["model"]["messages"] == [{"role": "system", "content": SPEC["systemPrompt"]}]
    assert [t["function"]["name"] for t in dto["model"]["tools"]] == [
        "order_status",
        "transfer_call",
    ]
    assert dto["voice"]["provider"] == "vapi"
    assert dto["transcriber"] == {
        "provider": "deepgram",
        "model": "nova-3",
        "language": "en",
        "endpointing": 300,
    }
    assert dto["firstMessage"]
    # The new binding answers the next call to that number.
    listed = _json(invoke(apigw_event("GET", "/assistants", headers=AUTH)))["assistants"]
    assert [a["id"] for a in listed] == ["asst-new"]
    assert listed[0]["numbers"] == ["+18005550199"]
    assert twilio_post("/twilio/voice", voice_params())["statusCode"] == 200
    session = aws.dynamodb.get_item(
        TableName=aws.env["SESSIONS_TABLE"],
        Key={"pk": {"S": f"CALL#{voice_params()['CallSid']}"}, "sk": {"S": "SESSION"}},
    )["Item"]
    assert session["assistant_id"]["S"] == "asst-new"


def test_public_base_url_is_the_server_url(aws, vapi, monkeypatch):
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://voice.example.com")
    assert _post(SPEC)["statusCode"] == 201
    assert (
        json.loads(vapi[0][0].content)["server"]["url"] == "https://voice.example.com/vapi/webhook"
    )


def test_429_then_201_is_retried(aws, vapi):
    seen, answers = vapi
    answers.append(httpx.Response(429, headers={"Retry-After": "0"}, json={"message": "slow down"}))
    result = _post(SPEC)
    assert result["statusCode"] == 201
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("vapi_status", "ours", "text"),
    [
        (400, 400, "voice.voiceId must be a string"),
        (422, 422, "voice.voiceId must be a string"),
        (401, 502, "VAPI_API_KEY"),
        (404, 400, "voice.voiceId must be a string"),
    ],
)
def test_vapi_4xx_maps_to_a_clear_error_without_storing(aws, vapi, vapi_status, ours, text):
    seen, answers = vapi
    answers.append(
        httpx.Response(vapi_status, json={"message": ["voice.voiceId must be a string"]})
    )
    result = _post(SPEC)
    assert result["statusCode"] == ours
    assert text in _json(result)["error"]
    assert len(seen) == 1
    assert _json(invoke(apigw_event("GET", "/assistants", headers=AUTH))) == {"assistants": []}


def test_vapi_5xx_is_502_without_a_retry(aws, vapi):
    seen, answers = vapi
    answers.extend(
        httpx.Response(503, headers={"Retry-After": "0.1"}, text="down") for _ in range(20)
    )
    result = _post(SPEC)
    assert result["statusCode"] == 502
    assert "may have been created" in _json(result)["error"]  # POST /assistant is not idempotent
    assert len(seen) == 1


def test_vapi_unreachable_is_502_after_retries(aws, vapi, monkeypatch):
    monkeypatch.setattr(admin, "VAPI_BUDGET_S", 0.5)
    seen, answers = vapi
    answers.extend(httpx.Response(429, headers={"Retry-After": "0.1"}) for _ in range(20))
    result = _post(SPEC)
    assert result["statusCode"] == 502
    assert len(seen) >= 2


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({**SPEC, "phoneNumbers": ["555-1234"]}, "phoneNumbers"),
        ({**SPEC, "phoneNumbers": ["+18005550199\n"]}, "phoneNumbers"),  # E.164 in full
        ({**SPEC, "name": ""}, "name"),
        ({**SPEC, "name": "x" * 41}, "name"),  # CreateAssistantDTO.name maxLength 40
        ({k: v for k, v in SPEC.items() if k != "systemPrompt"}, "systemPrompt"),
        ({**SPEC, "model": {"temperature": 9}}, "model.temperature"),
        ({**SPEC, "surprise": 1}, "surprise"),
        ({**SPEC, "tools": ["launch_rockets"]}, "launch_rockets"),
        # What Vapi's schema rejects, caught before the request leaves:
        ({**SPEC, "transcriber": {"endpointing": 501}}, "transcriber.endpointing"),
        ({**SPEC, "transcriber": {"endpointing": 9}}, "transcriber.endpointing"),
        ({**SPEC, "transcriber": {"provider": "whisper"}}, "transcriber.provider"),
        ({**SPEC, "transcriber": {"provider": "google", "endpointing": 300}}, "endpointing"),
        ({**SPEC, "transcriber": {"provider": "assembly-ai", "model": "best"}}, "model"),
        ({**SPEC, "transcriber": {"provider": "openai"}}, "transcriber.model is required"),
        ({**SPEC, "transcriber": {"provider": "speechmatics"}}, "customVocabulary"),
        ({**SPEC, "model": {"provider": "gpt"}}, "model.provider"),
        ({**SPEC, "model": {"maxTokens": 49}}, "model.maxTokens"),
        ({**SPEC, "model": {"maxTokens": 10_001}}, "model.maxTokens"),
        ({**SPEC, "model": {"provider": "anthropic"}}, "model.model is required"),
        ({**SPEC, "model": {"provider": "vapi", "maxTokens": 100}}, "maxTokens"),
        ({**SPEC, "model": {"provider": "custom-llm", "model": "m"}}, "model.url"),
        ({**SPEC, "voice": {"provider": "polly", "voiceId": "Joanna"}}, "voice.provider"),
        ({**SPEC, "voice": {"provider": "11labs"}}, "voice.voiceId is required"),
        ({**SPEC, "voice": {"provider": "sesame", "voiceId": "x"}}, "voice.model"),
        ({**SPEC, "firstMessageMode": "assistant-speaks-last"}, "firstMessageMode"),
        ({**SPEC, "maxDurationSeconds": 9}, "maxDurationSeconds"),
        ({**SPEC, "maxDurationSeconds": 43_201}, "maxDurationSeconds"),
    ],
)
def test_invalid_request_is_400_naming_the_field_before_calling_vapi(aws, vapi, spec, field):
    result = _post(spec)
    assert result["statusCode"] == 400
    body = _json(result)
    assert field in body["error"] or field in json.dumps(body["detail"]), body
    assert vapi[0] == []


@pytest.mark.parametrize("endpointing", [10, 500])
def test_deepgram_endpointing_bounds_are_vapis(aws, vapi, endpointing):
    assert _post({**SPEC, "transcriber": {"endpointing": endpointing}})["statusCode"] == 201
    assert json.loads(vapi[0][0].content)["transcriber"]["endpointing"] == endpointing


def test_providers_get_only_the_fields_their_schema_declares(aws, vapi):
    spec = {
        **SPEC,
        "model": {"provider": "anthropic", "model": "claude-3-5-haiku-20241022"},
        "voice": {"provider": "11labs", "voiceId": "burt"},
        "transcriber": {"provider": "assembly-ai", "language": "en"},
    }
    assert _post(spec)["statusCode"] == 201
    dto = json.loads(vapi[0][0].content)
    assert dto["transcriber"] == {"provider": "assembly-ai", "language": "en"}
    assert dto["voice"] == {"provider": "11labs", "voiceId": "burt"}
    assert (dto["model"]["provider"], dto["model"]["maxTokens"]) == ("anthropic", 250)


def test_vapi_model_gets_no_max_tokens(aws, vapi):
    assert _post({**SPEC, "model": {"provider": "vapi"}})["statusCode"] == 201
    model = json.loads(vapi[0][0].content)["model"]
    assert "maxTokens" not in model
    assert "model" not in model


def test_phone_call_control_asks_vapi_to_delegate_hang_up_and_transfer(aws, vapi):
    assert _post({**SPEC, "phoneCallControl": True})["statusCode"] == 201
    dto = json.loads(vapi[0][0].content)
    assert dto["serverMessages"] == [*assistants.SERVER_MESSAGES, "phone-call-control"]
    builtin = [t for t in dto["model"]["tools"] if t["type"] != "function"]
    assert builtin == [
        {"type": "endCall"},
        {
            "type": "transferCall",
            "destinations": [
                {"type": "number", "number": "+14155550100", "description": "sales"},
                {"type": "number", "number": "+14155550111", "description": "support"},
            ],
        },
    ]


def test_without_phone_call_control_vapi_keeps_hang_up_and_transfer(aws, vapi):
    assert _post(SPEC)["statusCode"] == 201
    dto = json.loads(vapi[0][0].content)
    assert "phone-call-control" not in dto["serverMessages"]
    assert all(t["type"] == "function" for t in dto["model"]["tools"])


def test_a_vapi_credential_id_goes_to_the_server(aws, vapi, monkeypatch):
    monkeypatch.setenv("VAPI_WEBHOOK_CREDENTIAL_ID", "550e8400-e29b-41d4-a716-446655440000")
    monkeypatch.setenv("VAPI_WEBHOOK_AUTH", '{"type": "hmac", "algorithm": "sha512"}')
    assert _post(SPEC)["statusCode"] == 201
    server = json.loads(vapi[0][0].content)["server"]
    assert server["credentialId"] == "550e8400-e29b-41d4-a716-446655440000"
    assert "headers" not in server  # the secret header would not be accepted: not sent


def test_no_way_for_vapi_to_authenticate_refuses_creation(aws, vapi, monkeypatch):
    monkeypatch.setenv("VAPI_WEBHOOK_AUTH", "hmac")
    result = _post(SPEC)
    assert result["statusCode"] == 503
    assert "VAPI_WEBHOOK_CREDENTIAL_ID" in _json(result)["error"]
    assert vapi[0] == []


def test_snake_case_and_defaults(aws, vapi):
    spec = {"name": "Minimal", "system_prompt": "Be brief."}
    assert _post(spec)["statusCode"] == 201
    dto = json.loads(vapi[0][0].content)
    assert "tools" not in dto["model"]
    assert dto["maxDurationSeconds"] == 600


def test_without_a_vapi_key_creation_is_unavailable(aws, vapi, monkeypatch):
    monkeypatch.delenv("VAPI_API_KEY")
    result = _post(SPEC)
    assert result["statusCode"] == 503
    assert "VAPI_API_KEY" in _json(result)["error"]
    assert vapi[0] == []
