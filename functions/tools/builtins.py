"""Built-in tools: hand the live Twilio call to a person, or hang it up (Twilio REST).

The CallSid comes from the Vapi message (``call.phoneCallProviderId`` or, for calls our edge
bridges, ``call.metadata.callSid``). Transfers only go to numbers in ``TRANSFER_ALLOWLIST``: the
model chooses the destination, and a prompt-injected caller must not get a free outbound call.
"""

from __future__ import annotations

from typing import Any

from functions.tools.registry import ToolContext, ToolError, tool
from voicebridge.config import Settings

ENDED = "The call has ended."
ENDED_ALREADY = "The call had already ended."


def resolve_destination(settings: Settings, wanted: str) -> tuple[str, str] | None:
    """(name, E.164 number) from the allow-list, matched by name (any case) or by number."""
    wanted = wanted.strip()
    for name, number in settings.transfer_allowlist.items():
        if wanted.lower() == name.lower() or wanted == number:
            return name, number
    return None


def _twilio_ready(ctx: ToolContext) -> tuple[str, str, str]:
    settings = ctx.settings
    if not ctx.call_sid:
        raise ToolError("this call has no Twilio CallSid, so it cannot be changed")
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        raise ToolError("Twilio REST is not configured (TWILIO_ACCOUNT_SID)")
    return ctx.call_sid, settings.twilio_account_sid, settings.twilio_auth_token


async def _update(ctx: ToolContext, **change: str) -> bool:
    """Apply ``change`` to the live call; False when the call had already ended (not an error:
    the caller is gone either way, so the assistant is told it is done)."""
    from voicebridge.twilio_rest import CallUpdate, TwilioRestError, update_call

    call_sid, account_sid, auth_token = _twilio_ready(ctx)
    try:
        outcome = await update_call(
            ctx.http(), ctx.settings.twilio_api_base, account_sid, auth_token, call_sid, **change
        )
    except (TwilioRestError, ValueError) as exc:
        raise ToolError(f"the phone system refused: {exc}") from None
    return outcome is CallUpdate.UPDATED


@tool(
    "transfer_call",
    "Transfer the caller to a person. Use only a destination the caller asked for.",
    {
        "type": "object",
        "properties": {"destination": {"type": "string", "description": "e.g. sales, support"}},
        "required": ["destination"],
    },
)
async def transfer_call(ctx: ToolContext, args: dict[str, Any]) -> str:
    """Args: ``destination`` (an allow-list name such as "sales", or its number)."""
    wanted = str(args.get("destination") or args.get("number") or args.get("name") or "")
    match = resolve_destination(ctx.settings, wanted)
    if match is None:
        allowed = ", ".join(ctx.settings.transfer_allowlist) or "none configured"
        raise ToolError(f"cannot transfer to {wanted[:40]!r}; allowed: {allowed}")
    from twilio.twiml.voice_response import VoiceResponse

    twiml = VoiceResponse()
    twiml.dial(match[1])
    if not await _update(ctx, twiml=str(twiml)):
        return ENDED_ALREADY
    return f"Transferring the call to {match[0]}."


@tool(
    "end_call",
    "Hang up the call once the conversation is finished.",
    {"type": "object", "properties": {}},
)
async def end_call(ctx: ToolContext, args: dict[str, Any]) -> str:
    """No args: hang up (a call that already ended counts as done)."""
    await _update(ctx, status="completed")
    return ENDED
