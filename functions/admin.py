"""Admin API (``Authorization: Bearer ADMIN_API_KEY``): create/list assistants, read call records.

``POST /assistants`` turns a small request, validated as Vapi would (``functions.assistants``:
a 400 naming the field), into Vapi's ``CreateAssistantDTO``: the server URL is our
``/vapi/webhook``, authenticated with the ``x-vapi-secret`` header when ``VAPI_WEBHOOK_AUTH``
accepts it and/or the Vapi credential ``VAPI_WEBHOOK_CREDENTIAL_ID``; ``serverMessages`` lists
exactly what the control plane handles.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError

from functions import clients, web
from functions.assistants import CamelModel, CreateAssistant, vapi_assistant_body
from functions.console.auth import operator
from voicebridge.config import Settings
from voicebridge.identifiers import is_call_sid, is_e164
from voicebridge.vapi_credentials import LegacySecretPlan

router = APIRouter()
VAPI_BUDGET_S = 8.0


def require_admin(request: Request) -> Settings:
    """``Authorization: Bearer ADMIN_API_KEY``, or a live console session (its cookie, plus the
    CSRF header for a change): ``functions.console.auth``."""
    return operator(request).config


Admin = Annotated[Settings, Depends(require_admin)]


def _invalid(exc: ValidationError) -> JSONResponse:
    """400, as Vapi answers a body it rejects: ``error`` names the first field, ``detail`` all."""
    errors = [
        {"loc": [str(part) for part in e["loc"]], "msg": str(e["msg"])}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    message = str(first["msg"]).removeprefix("Value error, ")
    if not message.startswith(f"{where}."):  # our own rules already name the field
        message = f"{where}: {message}"
    return JSONResponse({"error": message, "detail": errors}, status_code=400)


def _accepts_secret_header(config: Settings) -> bool:
    """Whether the assistant should send ``x-vapi-secret``; without it and without a credential
    id Vapi's requests could never authenticate, so creation is refused."""
    legacy = any(isinstance(plan, LegacySecretPlan) for plan in config.vapi_webhook_auth)
    if not (legacy or config.vapi_webhook_credential_id):
        raise HTTPException(
            503,
            "VAPI_WEBHOOK_AUTH does not accept x-vapi-secret: set VAPI_WEBHOOK_CREDENTIAL_ID to "
            "the Vapi credential that signs for this server",
        )
    return legacy


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
    if exc.maybe_created:  # not retried: POST /assistant is not idempotent (voicebridge.vapi_api)
        return HTTPException(
            502,
            f"Vapi failed mid-request ({exc.detail}); the assistant may have been created: "
            "check Vapi's assistant list before trying again",
        )
    return HTTPException(502, f"Vapi is unavailable: {exc.detail}")


@router.post("/assistants", status_code=201)
async def create_assistant(request: Request, config: Admin) -> JSONResponse:
    from voicebridge.vapi_api import VapiApiError
    from voicebridge.vapi_api import create_assistant as vapi_create

    body = await web.read_body(request)
    try:
        spec = CreateAssistant.model_validate_json(body)
    except ValidationError as exc:
        return _invalid(exc)
    payload = vapi_assistant_body(
        spec,
        web.public_url(request, config, "/vapi/webhook"),
        config.vapi_webhook_secret or "",
        credential_id=config.vapi_webhook_credential_id,
        secret_header=_accepts_secret_header(config),
        transfer_allowlist=config.transfer_allowlist,
    )
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


class BindNumber(CamelModel):
    """``PUT /numbers/{e164}``: which existing Vapi assistant answers this number."""

    assistant_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-fA-F-]{36}$")


def _number(request: Request) -> str:
    number = request.path_params["number"]
    if not is_e164(number):
        raise HTTPException(400, f"{number[:20]!r} is not an E.164 number like +14155550123")
    return number


@router.put("/numbers/{number}")
async def bind_number(request: Request, config: Admin) -> JSONResponse:
    """Bind a number to an assistant that already exists in Vapi (e.g. made in its dashboard);
    ``POST /assistants`` binds the numbers of the assistants it creates. Idempotent."""
    number = _number(request)
    try:
        spec = BindNumber.model_validate_json(await web.read_body(request))
    except ValidationError as exc:
        return _invalid(exc)
    web.store(config).put_binding(number, spec.assistant_id, time.time())
    return JSONResponse({"phoneNumber": number, "assistantId": spec.assistant_id})


@router.get("/numbers/{number}")
async def get_number(request: Request, config: Admin) -> JSONResponse:
    number = _number(request)
    assistant_id = web.store(config).get_binding(number)
    if assistant_id is None:
        raise HTTPException(404, f"{number} is not bound (calls use VAPI_ASSISTANT_ID)")
    return JSONResponse({"phoneNumber": number, "assistantId": assistant_id})


@router.get("/calls/{call_sid}")
async def get_call(request: Request, config: Admin) -> JSONResponse:
    call_sid = request.path_params["call_sid"]  # read here: a typed param costs a pydantic field
    record = None
    if is_call_sid(call_sid):
        record = web.store(config).get_call(call_sid, time.time())
    if record is None:
        raise HTTPException(404, "no such call")
    return JSONResponse(record)
