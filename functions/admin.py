"""Admin API (``Authorization: Bearer ADMIN_API_KEY``): create/list assistants, read call records.

``POST /assistants`` turns a small validated request into Vapi's ``CreateAssistantDTO``: the
server URL is our ``/vapi/webhook`` with the webhook secret as the ``x-vapi-secret`` header, and
``serverMessages`` lists exactly what the control plane handles, so Vapi does not post traffic
we would only drop (``assistant-request`` is not sent for an existing assistant).
"""

from __future__ import annotations

import hmac
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from functions import clients, web
from voicebridge.config import Settings
from voicebridge.identifiers import E164_EXAMPLE, is_call_sid, is_e164

router = APIRouter()
VAPI_BUDGET_S = 8.0
SERVER_MESSAGES = (
    "tool-calls",
    "transfer-destination-request",
    "status-update",
    "end-of-call-report",
    "hang",
    "transfer-update",
)


def require_admin(request: Request) -> Settings:
    config = web.settings()
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    expected = (config.admin_api_key or "").encode()
    if not (
        expected
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), expected)
    ):
        web.count_auth_failure(request.url.path, "admin key")
        raise HTTPException(401, "admin API key required", {"WWW-Authenticate": "Bearer"})
    return config


Admin = Annotated[Settings, Depends(require_admin)]


def _e164(value: str) -> str:
    if not is_e164(value):
        raise ValueError(f"{value!r} is not an E.164 number like {E164_EXAMPLE}")
    return value


class _Options(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ModelOptions(_Options):
    provider: str = Field("openai", max_length=40)
    model: str = Field("gpt-4o-mini", max_length=80)
    temperature: float = Field(0.5, ge=0, le=2)
    max_tokens: int = Field(250, ge=1, le=4096)


class VoiceOptions(_Options):
    provider: str = Field("vapi", max_length=40)
    voice_id: str = Field("Elliot", max_length=120)


class TranscriberOptions(_Options):
    provider: str = Field("deepgram", max_length=40)
    model: str = Field("nova-3", max_length=60)
    language: str = Field("en", max_length=16)
    endpointing: int = Field(300, ge=10, le=5000, description="ms of silence that ends a turn")


class CreateAssistant(_Options):
    """What an operator provides; everything else has a sensible phone-call default."""

    name: str = Field(min_length=1, max_length=40)
    system_prompt: str = Field(min_length=1, max_length=20_000)
    first_message: str = Field("Hello! How can I help you today?", max_length=1000)
    first_message_mode: Literal[
        "assistant-speaks-first",
        "assistant-waits-for-user",
        "assistant-speaks-first-with-model-generated-message",
    ] = "assistant-speaks-first"
    model: ModelOptions = ModelOptions()
    voice: VoiceOptions = VoiceOptions()
    transcriber: TranscriberOptions = TranscriberOptions()
    tools: list[str] = Field(default_factory=list, max_length=16)
    max_duration_seconds: int = Field(600, ge=10, le=43_200)
    phone_numbers: list[Annotated[str, AfterValidator(_e164)]] = Field(
        default_factory=list, max_length=20
    )
    metadata: dict[str, str] = Field(default_factory=dict, max_length=20)


def _tool_definitions(names: list[str]) -> list[dict[str, Any]]:
    from functions.tools import REGISTRY, SCHEMAS

    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise HTTPException(
            422, f"unknown tools: {', '.join(unknown)}; known: {', '.join(REGISTRY)}"
        )
    return [SCHEMAS[n] for n in dict.fromkeys(names)]


def vapi_assistant_body(spec: CreateAssistant, server_url: str, secret: str) -> dict[str, Any]:
    """The CreateAssistantDTO for ``spec`` (field names as in Vapi's OpenAPI)."""
    model: dict[str, Any] = {
        "provider": spec.model.provider,
        "model": spec.model.model,
        "temperature": spec.model.temperature,
        "maxTokens": spec.model.max_tokens,
        "messages": [{"role": "system", "content": spec.system_prompt}],
    }
    if spec.tools:
        model["tools"] = _tool_definitions(spec.tools)
    return {
        "name": spec.name,
        "firstMessage": spec.first_message,
        "firstMessageMode": spec.first_message_mode,
        "model": model,
        "voice": {"provider": spec.voice.provider, "voiceId": spec.voice.voice_id},
        "transcriber": spec.transcriber.model_dump(),
        "maxDurationSeconds": spec.max_duration_seconds,
        "server": {"url": server_url, "timeoutSeconds": 20, "headers": {"x-vapi-secret": secret}},
        "serverMessages": list(SERVER_MESSAGES),
        "metadata": {**spec.metadata, "managedBy": "voicebridge"},
    }


def _vapi_key(config: Settings) -> str:
    if not config.vapi_api_key:
        raise HTTPException(503, "VAPI_API_KEY is not configured")
    return config.vapi_api_key


def _vapi_error(exc: Any) -> HTTPException:
    status = exc.status
    if status in (400, 422):
        return HTTPException(status, f"Vapi rejected the assistant: {exc.detail}")
    if status in (401, 403):
        return HTTPException(502, "Vapi rejected our API key (check VAPI_API_KEY)")
    if status is not None and 400 <= status < 500 and status != 429:
        return HTTPException(400, f"Vapi refused the request ({status}): {exc.detail}")
    return HTTPException(502, f"Vapi is unavailable: {exc.detail}")


@router.post("/assistants", status_code=201)
async def create_assistant(request: Request, config: Admin) -> JSONResponse:
    from voicebridge.vapi_api import VapiApiError
    from voicebridge.vapi_api import create_assistant as vapi_create

    body = await web.read_body(request)
    try:
        spec = CreateAssistant.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {"loc": list(e["loc"]), "msg": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        return JSONResponse({"detail": errors}, status_code=422)
    server_url = web.public_url(request, config, "/vapi/webhook")
    payload = vapi_assistant_body(spec, server_url, config.vapi_webhook_secret or "")
    try:
        async with clients.new_http_client() as client:
            created = await vapi_create(
                client, config.vapi_base_url, _vapi_key(config), payload, budget_s=VAPI_BUDGET_S
            )
    except VapiApiError as exc:
        web.logger.warning("Vapi create assistant failed", extra={"status": exc.status})
        raise _vapi_error(exc) from None
    assistant_id = created.get("id")
    if not isinstance(assistant_id, str) or not assistant_id:
        raise HTTPException(502, "Vapi answered without an assistant id")
    summary = {
        "id": assistant_id,
        "name": spec.name,
        "model": f"{spec.model.provider}/{spec.model.model}",
        "voice": f"{spec.voice.provider}/{spec.voice.voice_id}",
        "tools": spec.tools,
        "vapiCreatedAt": created.get("createdAt"),
    }
    try:
        web.store(config).put_assistant(summary, spec.phone_numbers, time.time())
    except Exception:
        web.logger.exception("assistant created in Vapi but not stored", extra=summary)
        raise HTTPException(
            500, f"assistant {assistant_id} was created in Vapi but could not be stored"
        ) from None
    return JSONResponse({**summary, "phoneNumbers": spec.phone_numbers}, status_code=201)


@router.get("/assistants")
async def list_assistants(config: Admin) -> JSONResponse:
    return JSONResponse({"assistants": web.store(config).list_assistants()})


@router.get("/calls/{call_sid}")
async def get_call(request: Request, config: Admin) -> JSONResponse:
    call_sid = request.path_params["call_sid"]  # read here: a typed param costs a pydantic field
    record = None
    if is_call_sid(call_sid):
        record = web.store(config).get_call(call_sid, time.time())
    if record is None:
        raise HTTPException(404, "no such call")
    return JSONResponse(record)
