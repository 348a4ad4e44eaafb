"""``POST /vapi/webhook``: Vapi's server-URL messages.

Answered inline (Vapi waits for these): ``assistant-request``, ``tool-calls`` and the legacy
``function-call``, ``transfer-destination-request``. ``phone-call-control`` is informational but
carried out at once through Twilio (``phone_control``). Everything else is informational and
goes to the queue for the worker, answered 200 at once. Authentication (``vapi_auth``) runs on
the raw bytes before the body is parsed, then ``vapi_message`` bounds its nesting and key
fields (400, before anything is queued) and ``replay`` keeps a replayed request from running a
tool, a hang-up or a transfer, or queueing an event, twice.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from functions import aws, clients, replay, vapi_message, web
from functions.events import edge_metadata, vapi_call_sid, vapi_event
from functions.observability import MetricUnit, bind_call_sid
from functions.tools.builtins import resolve_destination
from functions.vapi_auth import is_authentic
from voicebridge import telemetry
from voicebridge.config import Settings

router = APIRouter()
NO_ASSISTANT = "Sorry, this number is not set up yet."


def _bad_request(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=400)


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is an object, else empty: Vapi payloads are parsed leniently."""
    return value if isinstance(value, dict) else {}


def _called_number(message: dict[str, Any]) -> str | None:
    """The number the caller dialled: Vapi's phone number, or our edge's call metadata."""
    call = _dict(message.get("call"))
    for holder in (_dict(message.get("phoneNumber")), _dict(call.get("phoneNumber"))):
        if holder.get("number"):
            return str(holder["number"])[:32]
    to = edge_metadata(message).get("to")
    return str(to)[:32] if to else None


async def assistant_request(
    config: Settings, message: dict[str, Any], until: aws.Deadline
) -> dict[str, str]:
    assistant_id = await web.assistant_for(config, _called_number(message), until)
    if not assistant_id:
        web.logger.error("assistant-request: no binding and no VAPI_ASSISTANT_ID")
        return {"error": NO_ASSISTANT}
    return {"assistantId": assistant_id}


def transfer_destination(config: Settings, message: dict[str, Any]) -> dict[str, Any]:
    """The assistant asked where to transfer: the named allow-list entry, else the first one."""
    wanted = _dict(message.get("destination"))
    hint = str(wanted.get("number") or wanted.get("name") or "")
    match = resolve_destination(config, hint) if hint else None
    if match is None and not hint and config.transfer_allowlist:
        match = next(iter(config.transfer_allowlist.items()))
    if match is None:
        return {"error": "No transfer destination is available."}
    return {"destination": {"type": "number", "number": match[1]}}


async def tool_calls(
    config: Settings, message: dict[str, Any], body: bytes, until: aws.Deadline, legacy: bool
) -> dict[str, Any]:
    from functions.tools import ToolCall, ToolContext, parse_tool_calls, run_tool_calls
    from functions.tools.registry import MAX_CALLS_PER_MESSAGE

    if legacy:
        function = _dict(message.get("functionCall"))
        calls = [ToolCall("", str(function.get("name") or ""), function.get("parameters"))]
    else:
        calls = parse_tool_calls(message)[:MAX_CALLS_PER_MESSAGE]
    call_id = _dict(message.get("call")).get("id")
    claims = await replay.claim_tool_calls(config, call_id, calls, body, until)
    ctx = ToolContext(config, vapi_call_sid(message), call_id, clients.new_http_client)
    outcomes = await run_tool_calls(claims.fresh, ctx, float(config.tool_timeout_seconds))
    for outcome in outcomes:
        web.metrics.add_metric(
            name=telemetry.TOOL_LATENCY, unit=MetricUnit.Milliseconds, value=outcome.latency_ms
        )
        if outcome.error is not None:
            web.metrics.add_metric(name=telemetry.TOOL_ERRORS, unit=MetricUnit.Count, value=1)
            web.logger.warning(
                "tool failed", extra={"tool": outcome.call.name, "error": outcome.error}
            )
    answers = await replay.settle(config, claims, outcomes)
    if legacy:
        only = answers[0]
        return {"result": only["result"]} if "result" in only else {"error": only["error"]}
    return {"results": answers}


@router.post("/vapi/webhook")
async def webhook(request: Request) -> JSONResponse:
    config = web.settings()
    body = await web.read_body(request)
    if not is_authentic(
        config.vapi_webhook_secret or "",
        request.headers,
        body,
        time.time(),
        plans=config.vapi_webhook_auth,
        method=request.method,
        url=web.public_url(request, config),
    ):
        web.count_auth_failure("/vapi/webhook", "vapi auth")
        return JSONResponse({"error": "unauthorized"}, status_code=401)
    try:
        message = vapi_message.parse(body)
    except vapi_message.BadMessage as exc:
        return _bad_request(str(exc))
    kind = message["type"]
    call_sid = vapi_call_sid(message)
    if call_sid:
        bind_call_sid(call_sid)
    until = web.deadline()
    if kind == "assistant-request":
        return JSONResponse(await assistant_request(config, message, until))
    if kind in ("tool-calls", "function-call"):
        legacy = kind == "function-call"
        return JSONResponse(await tool_calls(config, message, body, until, legacy=legacy))
    if kind == "transfer-destination-request":
        return JSONResponse(transfer_destination(config, message))
    if not await replay.first_delivery(config, body, until):
        return JSONResponse({"received": True})  # accepted before: not acted on or queued twice
    acted = False
    if kind == "phone-call-control":  # acted on now (see phone_control), then recorded
        from functions.phone_control import carry_out

        await carry_out(config, message)
        acted = True
    if not await web.enqueue(config, vapi_event(message, time.time()), until):
        if not acted:  # a retry may queue it; a hang-up or transfer done is never redone
            await replay.forget_delivery(config, body)
        return JSONResponse({"error": "event not accepted; retry"}, status_code=503)
    return JSONResponse({"received": True})
