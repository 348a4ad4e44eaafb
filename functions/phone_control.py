"""``phone-call-control``: Vapi hands its own hang-up and transfer to us, we do them on Twilio.

With ``phone-call-control`` in an assistant's ``serverMessages``, "the hangup and forwarding
responsibilities are delegated to your server. Vapi will no longer do the actual transfer and
hangup" (``#/components/schemas/ServerMessagePhoneCallControl``, property ``type``). The message
carries ``request`` (``hang-up`` | ``forward``) and, to forward, ``destination``
(``TransferDestinationNumber`` ``{type: "number", number, extension?}`` or
``TransferDestinationSip``). Vapi's built-in ``endCall`` and ``transferCall`` tools produce it.

Done inline, inside the webhook, not through the queue: the message is informational (Vapi
neither waits for an answer nor retries it), so nothing but us will act, and the caller is on
the line now. The queue would add seconds of dead air, and an SQS redelivery of a transfer
half a minute later would be worse than none. The Twilio update is bounded by
``TOOL_TIMEOUT_SECONDS`` (<= 5 s, under Vapi's 20 s server timeout). Transfers go only to
numbers in ``TRANSFER_ALLOWLIST`` (the destination comes from the assistant's configuration,
which a prompt can steer); anything else, SIP included, is refused and logged.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from functions import clients, web
from functions.events import vapi_call_sid
from functions.observability import MetricUnit
from voicebridge import identifiers, telemetry
from voicebridge.config import Settings

_EXTENSION = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one request: ``done`` False means refused or failed (logged, counted)."""

    done: bool
    detail: str


def _dial_twiml(number: str, extension: str | None) -> str:
    from twilio.twiml.voice_response import Dial, VoiceResponse

    response = VoiceResponse()
    dial = Dial()
    # "w" waits half a second before the digits, so the far end's IVR is listening.
    dial.number(number, send_digits=f"ww{extension}" if extension else None)
    response.append(dial)
    return str(response)


def _forward_twiml(config: Settings, destination: Any) -> tuple[str | None, str]:
    """(TwiML, description) for an allow-listed number destination, else (None, reason)."""
    if not isinstance(destination, dict) or destination.get("type") != "number":
        kind = destination.get("type") if isinstance(destination, dict) else None
        return None, f"destination type {str(kind)[:20]!r} is not an allow-listed number"
    number = destination.get("number")
    if not isinstance(number, str) or not identifiers.E164.fullmatch(number):
        return None, "destination number is not E.164"
    if number not in config.transfer_allowlist.values():
        return None, f"{number} is not in TRANSFER_ALLOWLIST"
    extension = destination.get("extension")
    if extension is not None and not (
        isinstance(extension, str) and _EXTENSION.fullmatch(extension)
    ):
        return None, "destination extension is not 1-10 digits"
    return _dial_twiml(number, extension), number


async def _update(config: Settings, call_sid: str, **change: str) -> Outcome:
    from voicebridge.twilio_rest import CallUpdate, TwilioRestError, update_call

    if not (config.twilio_account_sid and config.twilio_auth_token):
        return Outcome(False, "Twilio REST is not configured (TWILIO_ACCOUNT_SID)")
    try:
        async with (
            clients.new_http_client() as client,
            asyncio.timeout(config.tool_timeout_seconds),
        ):
            result = await update_call(
                client,
                config.twilio_api_base,
                config.twilio_account_sid,
                config.twilio_auth_token,
                call_sid,
                **change,
            )
    except TimeoutError:
        return Outcome(False, f"Twilio did not answer within {config.tool_timeout_seconds} s")
    except (TwilioRestError, ValueError) as exc:
        return Outcome(False, str(exc))
    if result is CallUpdate.ALREADY_ENDED:
        return Outcome(True, "the call had already ended")
    return Outcome(True, "done")


async def carry_out(config: Settings, message: dict[str, Any]) -> Outcome:
    """Hang up or forward the Twilio call behind ``message`` as Vapi asked."""
    request = message.get("request")
    call_sid = vapi_call_sid(message)
    if request not in ("hang-up", "forward"):
        outcome = Outcome(False, f"unknown request {str(request)[:20]!r}")
    elif call_sid is None:
        outcome = Outcome(False, "the call has no Twilio CallSid")
    elif request == "hang-up":
        outcome = await _update(config, call_sid, status="completed")
    else:
        twiml, detail = _forward_twiml(config, message.get("destination"))
        if twiml is None:
            outcome = Outcome(False, f"transfer refused: {detail}")
        else:
            outcome = await _update(config, call_sid, twiml=twiml)
            outcome = Outcome(outcome.done, f"to {detail}: {outcome.detail}")
    fields = {"request": str(request)[:20], "detail": outcome.detail}
    if outcome.done:
        web.logger.info("phone-call-control carried out", extra=fields)
    else:
        web.metrics.add_metric(name=telemetry.TOOL_ERRORS, unit=MetricUnit.Count, value=1)
        web.logger.warning("phone-call-control not carried out", extra=fields)
    return outcome
