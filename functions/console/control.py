"""Step in on a live call: say a line, add context, mute/unmute the assistant, end, transfer.

Why Vapi's ``call.monitor.controlUrl`` and not the edge's own Vapi socket: the API runs in a
Lambda and the call lives in one of N edge tasks behind a load balancer that routes by
connection, not by call; the API cannot address the task that holds a call. The control URL is
Vapi's documented way to "send any control message via a POST request"
(``#/components/schemas/MonitorPlan`` ``controlEnabled``; https://docs.vapi.ai/calls/call-features)
and reaches the call wherever it runs, so a step-in needs no new path into the edge. The edge
stores the URL on the call's session item when Vapi creates the call; it is a capability (no
other credential protects it), so it is never logged or returned.

Transfer is the exception: the caller's leg is Twilio's, not Vapi's (the edge bridges a
websocket-transport call, which has no phone number for Vapi to move), so it goes through
Twilio REST as ``<Dial>``, like the ``transfer_call`` tool, and only to ``TRANSFER_ALLOWLIST``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from functions import clients, web
from functions.tools.builtins import resolve_destination
from voicebridge.config import Settings

CONTROL_TIMEOUT_S = 3.0  # inside the API function's 10 s
MAX_TEXT_CHARS = 1000

Action = Literal["say", "add-context", "mute-assistant", "unmute-assistant", "end-call", "transfer"]
ACTIONS: tuple[str, ...] = (
    "say",
    "add-context",
    "mute-assistant",
    "unmute-assistant",
    "end-call",
    "transfer",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    detail: str
    status: int = 200  # the HTTP status the page gets


def vapi_message(action: str, text: str) -> dict[str, Any]:
    """Vapi's message for an action (``#/components/schemas/ClientInboundMessage*``)."""
    if action == "say":  # ClientInboundMessageSay
        return {"type": "say", "content": text, "endCallAfterSpoken": False}
    if action == "add-context":  # ClientInboundMessageAddMessage: into the history, no reply
        return {
            "type": "add-message",
            "message": {"role": "system", "content": text},
            "triggerResponseEnabled": False,
        }
    if action in ("mute-assistant", "unmute-assistant"):  # ClientInboundMessageControl
        return {"type": "control", "control": action}
    if action == "end-call":  # ClientInboundMessageEndCall
        return {"type": "end-call"}
    raise ValueError(action)


async def via_vapi(control_url: str | None, message: dict[str, Any]) -> Outcome:
    if not control_url:
        return Outcome(False, "the call is not live (no control URL from Vapi yet)", 409)
    try:
        async with clients.new_http_client() as client:
            answer = await client.post(control_url, json=message, timeout=CONTROL_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return Outcome(False, f"Vapi did not answer ({type(exc).__name__})", 502)
    if answer.status_code < 300:
        return Outcome(True, "done")
    if answer.status_code in (404, 410):
        return Outcome(False, "Vapi says the call has ended", 409)
    return Outcome(False, f"Vapi refused it ({answer.status_code})", 502)


async def transfer(config: Settings, call_sid: str, wanted: str) -> Outcome:
    from twilio.twiml.voice_response import VoiceResponse

    from voicebridge.twilio_rest import CallUpdate, TwilioRestError, update_call

    match = resolve_destination(config, wanted)
    if match is None:
        allowed = ", ".join(config.transfer_allowlist) or "none configured"
        return Outcome(False, f"not an allowed destination (TRANSFER_ALLOWLIST: {allowed})", 400)
    if not (config.twilio_account_sid and config.twilio_auth_token):
        return Outcome(False, "Twilio REST is not configured (TWILIO_ACCOUNT_SID)", 503)
    twiml = VoiceResponse()
    twiml.dial(match[1])
    try:
        async with clients.new_http_client() as client:
            outcome = await update_call(
                client,
                config.twilio_api_base,
                config.twilio_account_sid,
                config.twilio_auth_token,
                call_sid,
                twiml=str(twiml),
            )
    except (TwilioRestError, ValueError) as exc:
        return Outcome(False, f"Twilio refused the transfer: {exc}", 502)
    if outcome is not CallUpdate.UPDATED:
        return Outcome(False, "the call has already ended", 409)
    return Outcome(True, f"transferred to {match[0]}")


async def step_in(config: Settings, call_sid: str, action: str, text: str, target: str) -> Outcome:
    """Run one action on the live call (validated by the route)."""
    if action == "transfer":
        return await transfer(config, call_sid, target)
    session = web.store(config).get_session(call_sid, time.time())
    control_url = (session or {}).get("control_url")
    return await via_vapi(
        control_url if isinstance(control_url, str) else None, vapi_message(action, text)
    )
