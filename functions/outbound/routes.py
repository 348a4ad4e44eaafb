"""Admin API for outbound calling (``Authorization: Bearer ADMIN_API_KEY``, like every admin route).

- ``POST /calls`` places one call now: 201 ``{"callSid", ...}``.
- ``POST /campaigns`` creates a campaign (draft): 201 ``{"campaignId", "contacts", "rejected"}``;
  ``POST /campaigns/{id}/start|pause|resume|cancel``; ``GET /campaigns/{id}`` its status,
  counts and contacts (``?limit=`` up to 1000, default 100, then ``?cursor=`` from
  ``nextCursor``: a console can poll the first page and the counts cheaply).
- ``POST /dnc`` ``{"numbers": [...]}``, ``DELETE /dnc/{number}``, ``GET /dnc``: the do-not-call
  list, checked by the dialer just before each call and by ``POST /calls``.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, Final

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from functions import clients, web
from functions.admin import Admin
from functions.outbound import campaign as campaigns
from functions.outbound.dial import DialPlan, create_params, new_dial_id
from functions.outbound.queue import get_dialer_queue
from functions.outbound.requests import (
    E164,
    CallOptions,
    CreateCall,
    CreateCampaign,
    CsvError,
    parse_contacts,
    parse_csv,
)
from functions.outbound.store import (
    CANCELLED,
    DRAFT,
    PAUSED,
    RUNNING,
    OutboundStore,
    get_outbound_store,
)
from voicebridge.config import Settings

if TYPE_CHECKING:
    from voicebridge.twilio_calls import TwilioCallError

router = APIRouter()
VAPI_LOOKUP_BUDGET_S: Final = 5.0
MAX_PAGE: Final = 1000
MAX_REJECTED_KEPT: Final = 1000
# action -> (the states it may start from, the state it leads to, whether the dialer is woken)
ACTIONS: Final = {
    "start": ((DRAFT,), RUNNING, True),
    "pause": ((RUNNING,), PAUSED, False),
    "resume": ((PAUSED,), RUNNING, True),
    "cancel": ((DRAFT, RUNNING, PAUSED), CANCELLED, False),
}


def _invalid(exc: ValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e["loc"]), "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return JSONResponse({"detail": errors}, status_code=422)


def _outbound(config: Settings) -> OutboundStore:
    if not config.outbound_table:
        raise HTTPException(503, "outbound calling is not configured (OUTBOUND_TABLE)")
    return get_outbound_store(config.outbound_table, config.aws_endpoint_url)


def _api_base(request: Request, config: Settings) -> str:
    """Where Twilio reaches this API (Url and StatusCallback of the calls we place)."""
    return web.public_url(request, config, "/").rstrip("/")


async def _assistant_for(config: Settings, options: CallOptions, from_number: str) -> str:
    """The call's assistant: given, else the one bound to ``from``, else the default; known to
    Vapi in every case (an unknown one would fail only once someone answers)."""
    assistant_id = options.assistant_id
    if assistant_id is None:
        try:
            assistant_id = web.store(config).get_binding(from_number)
        except Exception:
            web.logger.exception("binding lookup failed; trying the default assistant")
        assistant_id = assistant_id or config.vapi_assistant_id
    if not assistant_id:
        raise HTTPException(
            422, f"no assistantId given and none is bound to {from_number} or set as default"
        )
    if assistant_id != config.vapi_assistant_id:
        await _check_with_vapi(config, assistant_id)
    return assistant_id


async def _check_with_vapi(config: Settings, assistant_id: str) -> None:
    import httpx

    if not config.vapi_api_key:
        raise HTTPException(503, "VAPI_API_KEY is not configured: cannot check the assistant")
    url = f"{config.vapi_base_url.rstrip('/')}/assistant/{assistant_id}"
    try:
        async with clients.new_http_client() as client:
            response = await client.get(
                url,
                headers={"Authorization": f"Bearer {config.vapi_api_key}"},
                timeout=VAPI_LOOKUP_BUDGET_S,
            )
    except httpx.HTTPError:
        raise HTTPException(502, "Vapi could not be reached to check the assistant") from None
    if response.status_code in (400, 404):
        raise HTTPException(422, f"unknown assistant {assistant_id!r} (Vapi has no such id)")
    if response.status_code >= 300:
        raise HTTPException(502, f"Vapi answered {response.status_code} checking the assistant")


def _from_number(config: Settings, options: CallOptions) -> str:
    number = options.from_number or config.outbound_from_number
    if not number:
        raise HTTPException(422, "no `from` given and OUTBOUND_FROM_NUMBER is not configured")
    return number


def _twilio_error(error: TwilioCallError) -> HTTPException:
    if error.credentials:
        return HTTPException(502, "Twilio refused our credentials (check TWILIO_AUTH_TOKEN)")
    if error.status == 429:
        return HTTPException(503, "Twilio asks us to slow down (429): try again shortly")
    if error.created is False and error.status is not None:
        return HTTPException(400, f"Twilio refused the call: {error.code or ''} {error.detail}")
    return HTTPException(
        502, "Twilio did not confirm the call; it may still be placed: check GET /calls"
    )


@router.post("/calls", status_code=201)
async def place_call(request: Request, config: Admin) -> JSONResponse:
    try:
        spec = CreateCall.model_validate_json(await web.read_body(request))
    except ValidationError as exc:
        return _invalid(exc)
    outbound = _outbound(config)
    from_number = _from_number(config, spec)
    assistant_id = await _assistant_for(config, spec, from_number)
    if outbound.dnc_contains(spec.to):
        raise HTTPException(409, f"{spec.to} is on the do-not-call list")
    if not (config.twilio_account_sid and config.twilio_auth_token):
        raise HTTPException(503, "TWILIO_ACCOUNT_SID is not configured")
    now = time.time()
    plan = DialPlan(
        dial_id=new_dial_id(),
        to=spec.to,
        from_number=from_number,
        assistant_id=assistant_id,
        api_base=_api_base(request, config),
        ring_timeout_seconds=spec.ring_timeout_seconds,
        machine_detection=spec.machine_detection,
        first_message=spec.first_message,
        voicemail_message=spec.voicemail_message,
        variables=spec.variables,
    )
    outbound.put_dial(plan.dial_id, plan.to_item(now))

    from voicebridge import twilio_calls  # httpx: loaded by the routes that call out, not at init

    def create() -> dict[str, Any]:
        with twilio_calls.new_client() as client:
            return twilio_calls.create_call(
                client,
                config.twilio_api_base,
                str(config.twilio_account_sid),
                str(config.twilio_auth_token),
                create_params(plan),
            )

    try:
        call = await run_in_threadpool(create)
    except twilio_calls.TwilioCallError as error:
        web.logger.warning("Calls.create failed", extra={"error": str(error)})
        raise _twilio_error(error) from None
    call_sid = str(call["sid"])
    fields = {
        "direction": "outbound-api",
        "to": plan.to,
        "from": plan.from_number,
        "assistant_id": assistant_id,
    }
    expires_at = int(now) + config.call_record_retention_days * 86_400
    try:
        web.store(config).apply_report(call_sid, fields, expires_at)
    except Exception:  # the call is placed; its record fills in from the callbacks
        web.logger.exception("call record write failed", extra={"callSid": call_sid})
    body = {
        "callSid": call_sid,
        "status": call.get("status"),
        "to": plan.to,
        "from": from_number,
        "assistantId": assistant_id,
    }
    return JSONResponse(body, status_code=201)


@router.post("/campaigns", status_code=201)
async def create_campaign(request: Request, config: Admin) -> JSONResponse:
    try:
        spec = CreateCampaign.model_validate_json(await web.read_body(request))
    except ValidationError as exc:
        return _invalid(exc)
    try:
        if spec.contacts is not None:
            contacts, rejected = parse_contacts(spec.contacts)
        else:
            contacts, rejected = parse_csv(spec.contacts_csv or "")
    except CsvError as exc:
        raise HTTPException(422, str(exc)) from None
    report = [r.to_json() for r in rejected]
    if not contacts:
        return JSONResponse(
            {"error": "no valid contacts: nothing to call", "rejected": report}, status_code=422
        )
    outbound = _outbound(config)
    from_number = _from_number(config, spec)
    assistant_id = await _assistant_for(config, spec, from_number)
    settings = campaigns.CampaignSettings.from_request(
        spec, assistant_id, from_number, _api_base(request, config)
    )
    now = time.time()
    campaign_id = uuid.uuid4().hex
    meta = {
        "campaign_id": campaign_id,
        "name": spec.name,
        "status": DRAFT,
        "created_at": int(now),
        "updated_at": int(now),
        "expires_at": int(now) + config.call_record_retention_days * 86_400,
        "settings": settings.to_item(),
        "rejected": report[:MAX_REJECTED_KEPT],
    }
    rows = [
        {"number": c.number, "name": c.name, "timezone": c.timezone, "variables": c.variables}
        for c in contacts
    ]
    await run_in_threadpool(outbound.create_campaign, campaign_id, meta, rows)
    web.logger.info(
        "campaign created",
        extra={"campaignId": campaign_id, "contacts": len(rows), "rejected": len(report)},
    )
    body = {"campaignId": campaign_id, "status": DRAFT, "contacts": len(rows), "rejected": report}
    return JSONResponse(body, status_code=201)


def _campaign_id(request: Request) -> str:
    campaign_id = request.path_params["campaign_id"]
    if not (len(campaign_id) == 32 and campaign_id.isalnum()):
        raise HTTPException(404, "no such campaign")
    return str(campaign_id)


@router.get("/campaigns/{campaign_id}")
async def get_campaign(request: Request, config: Admin) -> JSONResponse:
    campaign_id = _campaign_id(request)
    outbound = _outbound(config)
    meta = outbound.get_campaign(campaign_id)
    if meta is None:
        raise HTTPException(404, "no such campaign")
    try:
        limit = min(MAX_PAGE, max(1, int(request.query_params.get("limit", "100"))))
        cursor = request.query_params.get("cursor")
        after = int(cursor) if cursor else None
    except ValueError:
        raise HTTPException(400, "limit and cursor must be integers") from None
    contacts, next_index = outbound.contacts_page(campaign_id, limit, after)
    settings = campaigns.CampaignSettings.from_item(meta["settings"])
    body = {
        "campaignId": campaign_id,
        "name": meta.get("name"),
        "status": meta["status"],
        "statusReason": meta.get("status_reason"),
        "createdAt": meta.get("created_at"),
        "updatedAt": meta.get("updated_at"),
        "settings": settings.public(),
        "counts": campaigns.counts(meta),
        "contacts": [campaigns.contact_view(c) for c in contacts],
        "nextCursor": str(next_index) if next_index is not None else None,
        "rejected": meta.get("rejected") or [],
    }
    return JSONResponse(body)


@router.post("/campaigns/{campaign_id}/{action}")
async def campaign_action(request: Request, config: Admin) -> JSONResponse:
    campaign_id = _campaign_id(request)
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise HTTPException(404, f"unknown action {action[:20]!r}: start, pause, resume, cancel")
    allowed, target, wake = ACTIONS[action]
    outbound = _outbound(config)
    if wake and not config.dialer_queue_url:
        raise HTTPException(503, "outbound calling is not configured (DIALER_QUEUE_URL)")
    if not outbound.set_status(campaign_id, allowed, target, time.time()):
        meta = outbound.get_campaign(campaign_id)
        if meta is None:
            raise HTTPException(404, "no such campaign")
        raise HTTPException(409, f"cannot {action} a campaign that is {meta['status']}")
    if wake:
        get_dialer_queue(str(config.dialer_queue_url), config.aws_endpoint_url).tick(campaign_id)
    web.logger.info("campaign " + target, extra={"campaignId": campaign_id})
    return JSONResponse({"campaignId": campaign_id, "status": target})


class AddNumbers(BaseModel):
    numbers: list[E164] = Field(min_length=1, max_length=1000)
    reason: str | None = Field(None, max_length=200)


@router.post("/dnc")
async def add_do_not_call(request: Request, config: Admin) -> JSONResponse:
    try:
        spec = AddNumbers.model_validate_json(await web.read_body(request))
    except ValidationError as exc:
        return _invalid(exc)
    _outbound(config).dnc_add(spec.numbers, time.time(), spec.reason)
    return JSONResponse({"added": len(set(spec.numbers))})


@router.delete("/dnc/{number}")
async def remove_do_not_call(request: Request, config: Admin) -> JSONResponse:
    number = request.path_params["number"]
    if not _outbound(config).dnc_remove(number[:20]):
        raise HTTPException(404, f"{number[:20]} is not on the do-not-call list")
    return JSONResponse({"removed": number})


@router.get("/dnc")
async def list_do_not_call(request: Request, config: Admin) -> JSONResponse:
    try:
        limit = min(MAX_PAGE, max(1, int(request.query_params.get("limit", "100"))))
    except ValueError:
        raise HTTPException(400, "limit must be an integer") from None
    cursor = request.query_params.get("cursor")
    entries, next_cursor = _outbound(config).dnc_page(limit, cursor[:20] if cursor else None)
    numbers = [
        {"number": e["number"], "addedAt": e.get("added_at"), "reason": e.get("reason")}
        for e in entries
    ]
    return JSONResponse({"numbers": numbers, "nextCursor": next_cursor})
