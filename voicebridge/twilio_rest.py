"""Twilio REST: update a live call (hang up, or replace its TwiML, e.g. ``<Dial>`` to transfer).

Used by the control plane's ``transfer_call``/``end_call`` tools and by the edge's fallback when
Vapi is unreachable. A call that already ended (HTTP 404, Twilio error 20404) counts as done:
hanging up or transferring a finished call is not a failure worth retrying.
"""

from __future__ import annotations

import httpx

MAX_DETAIL_CHARS = 300
CALL_NOT_FOUND = 20404


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


async def update_call(
    client: httpx.AsyncClient,
    api_base: str,
    account_sid: str,
    auth_token: str,
    call_sid: str,
    *,
    status: str | None = None,
    twiml: str | None = None,
) -> bool:
    """Update call ``call_sid``; True when updated or already ended, TwilioRestError otherwise."""
    if not (status or twiml):
        raise ValueError("update_call needs status or twiml")
    if not (call_sid.startswith("CA") and call_sid.isalnum() and len(call_sid) <= 64):
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
        return True
    code, message = _error_code(response)
    if response.status_code == 404 and code in (CALL_NOT_FOUND, None):
        return True
    raise TwilioRestError(response.status_code, f"{code or ''} {message}".strip())
