"""``POST /vapi/webhook``: Vapi's server-URL messages.

Answered inline (Vapi waits for these): ``assistant-request``, ``tool-calls`` and the legacy
``function-call``, ``transfer-destination-request``. ``phone-call-control`` is informational but
carried out at once through Twilio (``phone_control``). Everything else is informational and
goes to the queue for the worker, answered 200 at once. Authentication (``vapi_auth``) runs on
the raw bytes before the body is parsed.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from functions import clients, web
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


def assistant_request(config: Settings, message: dict[str, Any]) -> dict[str, str]:
    number = _called_number(message)
    assistant_id = None
    if number:
        try:
            assistant_id = web.store(config).get_binding(number)
        except Exception:
            web.logger.exception("binding lookup failed; using the default assistant")
    assistant_id = assistant_id or config.vapi_assistant_id
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


async def tool_calls(config: Settings, message: dict[str, Any], legacy: bool) -> dict[str, Any]:
    from functions.tools import ToolCall, ToolContext, parse_tool_calls, run_tool_calls
    from functions.tools.registry import MAX_CALLS_PER_MESSAGE

    if legacy:
        function = _dict(message.get("functionCall"))
        calls = [ToolCall("", str(function.get("name") or ""), function.get("parameters"))]
    else:
        calls = parse_tool_calls(message)[:MAX_CALLS_PER_MESSAGE]
    call_id = _dict(message.get("call")).get("id")
    ctx = ToolContext(config, vapi_call_sid(message), call_id, clients.new_http_client)
    outcomes = await run_tool_calls(calls, ctx, float(config.tool_timeout_seconds))
    for outcome in outcomes:
        web.metrics.add_metric(
            name=telemetry.TOOL_LATENCY, unit=MetricUnit.Milliseconds, value=outcome.latency_ms
        )
        if outcome.error is not None:
            web.metrics.add_metric(name=telemetry.TOOL_ERRORS, unit=MetricUnit.Count, value=1)
            web.logger.warning(
                "tool failed", extra={"tool": outcome.call.name, "error": outcome.error}
            )
    if legacy:
        only = outcomes[0]
        return {"result": only.result} if only.error is None else {"error": only.error}
    return {"results": [outcome.as_vapi() for outcome in outcomes]}


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
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return _bad_request("body is not valid JSON")
    message = data.get("message") if isinstance(data, dict) else None
    kind = message.get("type") if isinstance(message, dict) else None
    if not isinstance(kind, str) or not kind:
        return _bad_request('expected {"message": {"type": ...}}')
    call_sid = vapi_call_sid(message)
    if call_sid:
        bind_call_sid(call_sid)
    if kind == "assistant-request":
        return JSONResponse(assistant_request(config, message))
    if kind in ("tool-calls", "function-call"):
        return JSONResponse(await tool_calls(config, message, legacy=kind == "function-call"))
    if kind == "transfer-destination-request":
        return JSONResponse(transfer_destination(config, message))
    if kind == "phone-call-control":  # acted on now (see phone_control), then recorded
        from functions.phone_control import carry_out

        await carry_out(config, message)
    web.queue(config).send(vapi_event(message, time.time()))
    web.metrics.add_metric(name=telemetry.EVENTS_ENQUEUED, unit=MetricUnit.Count, value=1)
    return JSONResponse({"received": True})
