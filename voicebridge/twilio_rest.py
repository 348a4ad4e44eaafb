"""Twilio REST: update a live call (hang up, or replace its TwiML, e.g. ``<Dial>`` to transfer).

Used by the control plane's ``transfer_call``/``end_call`` tools and ``phone-call-control``
handling, and by the edge's fallback when Vapi is unreachable. A call that is already over is
not a failure: hanging up or redirecting it has nothing left to do, so the caller learns it as
:attr:`CallUpdate.ALREADY_ENDED` (no error, nothing to retry, nothing to count). Twilio says so
in two ways, both defined once here (:data:`ALREADY_ENDED`):

- HTTP 400, error 21220 "Invalid call state": "You attempted a realtime operation on a Call that
  was not in-progress. Calls that have completed cannot be recorded or redirected."
  (https://www.twilio.com/docs/api/errors/21220);
- HTTP 404, error 20404 "Not Found": no such call, e.g. a CallSid not of this account
  (https://www.twilio.com/docs/api/errors/20404).
"""

from __future__ import annotations

import enum
from typing import Final

import httpx

from voicebridge import identifiers

MAX_DETAIL_CHARS = 300
CALL_NOT_IN_PROGRESS: Final = 21220
CALL_NOT_FOUND: Final = 20404
# (HTTP status, Twilio error code) pairs that mean "this call is already over".
ALREADY_ENDED: Final = frozenset({(400, CALL_NOT_IN_PROGRESS), (404, CALL_NOT_FOUND)})


class CallUpdate(enum.Enum):
    """What became of an update Twilio did not refuse."""

    UPDATED = "updated"
    ALREADY_ENDED = "already-ended"


class TwilioRestError(Exception):
    """Twilio refused the update (or could not be reached); the message carries no secrets."""

    def __init__(self, status: int | None, detail: str) -> None:
        self.status = status
        self.detail = detail[:MAX_DETAIL_CHARS]
        super().__init__(f"Twilio {status or 'unreachable'}: {self.detail}")


def _error_code(response: httpx.Response) -> tuple[int | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:MAX_DETAIL_CHARS] or response.reason_phrase
    if not isinstance(body, dict):
        return None, str(body)[:MAX_DETAIL_CHARS]
    code = body.get("code")
    return (code if isinstance(code, int) else None), str(body.get("message", ""))


def already_ended(status: int, code: int | None) -> bool:
    """True when Twilio's answer means the call is over. Only Twilio's own coded answers count:
    a bare 404 (a wrong ``TWILIO_API_BASE``, a proxy) is a fault to report, not a hang-up."""
    return (status, code) in ALREADY_ENDED


async def update_call(
    client: httpx.AsyncClient,
    api_base: str,
    account_sid: str,
    auth_token: str,
    call_sid: str,
    *,
    status: str | None = None,
    twiml: str | None = None,
) -> CallUpdate:
    """Update call ``call_sid``: UPDATED, ALREADY_ENDED, or TwilioRestError for anything else."""
    if not (status or twiml):
        raise ValueError("update_call needs status or twiml")
    if not identifiers.CALL_SID.fullmatch(call_sid):
        raise ValueError("not a Twilio CallSid")
    form: dict[str, str] = {}
    if status:
        form["Status"] = status
    if twiml:
        form["Twiml"] = twiml
    url = f"{api_base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"
    try:
        response = await client.post(url, data=form, auth=(account_sid, auth_token))
    except httpx.HTTPError as exc:
        raise TwilioRestError(None, f"{type(exc).__name__} calling Twilio") from None
    if response.status_code < 300:
        return CallUpdate.UPDATED
    code, message = _error_code(response)
    if already_ended(response.status_code, code):
        return CallUpdate.ALREADY_ENDED
    raise TwilioRestError(response.status_code, f"{code or ''} {message}".strip())
