"""Twilio REST for outbound calls: create a call, fetch one, list recent calls to a number.

``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` is not idempotent: a timeout or a 5xx may
still have created the call, so :class:`TwilioCallError` says whether a retry is safe
(``created`` is False only when Twilio certainly did not create it). The dialer never retries an
ambiguous create; it looks the call up with :func:`list_calls` once its lease expires.
Synchronous on purpose: the dialer is a plain Lambda loop; the API calls it from a thread.
Parameters: https://www.twilio.com/docs/voice/api/call-resource (the same text is in the
``twilio`` package's ``CallList.create`` docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import httpx

MAX_DETAIL_CHARS: Final = 300
TOO_MANY_REQUESTS: Final = 20429  # Twilio's code for HTTP 429
_TIMEOUT: Final = httpx.Timeout(10.0, connect=3.0)


class TwilioCallError(Exception):
    """Twilio refused or could not be reached. ``created`` is None when the outcome is unknown
    (no answer, 5xx): the call may exist. ``code`` is Twilio's error code when it sent one."""

    def __init__(
        self, status: int | None, code: int | None, detail: str, created: bool | None
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail[:MAX_DETAIL_CHARS]
        self.created = created
        super().__init__(f"Twilio {status or 'unreachable'} {code or ''}: {self.detail}".strip())

    @property
    def transient(self) -> bool:
        """Twilio certainly did not create the call, and trying again later may work: it was not
        reached at all, or it asked us to slow down (429)."""
        return self.created is False and self.status in (None, 429)

    @property
    def credentials(self) -> bool:
        """Twilio refused our account SID / auth token: no call will work until they are fixed."""
        return self.status in (401, 403)


def new_client() -> httpx.Client:
    return httpx.Client(timeout=_TIMEOUT)


def _calls_url(api_base: str, account_sid: str, suffix: str = "") -> str:
    return f"{api_base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Calls{suffix}.json"


def _error(response: httpx.Response) -> TwilioCallError:
    code: int | None = None
    message = response.reason_phrase
    try:
        body = response.json()
    except ValueError:
        message = response.text[:MAX_DETAIL_CHARS] or message
    else:
        if isinstance(body, dict):
            code = body.get("code") if isinstance(body.get("code"), int) else None
            message = str(body.get("message", message))
    created = None if response.status_code >= 500 else False
    return TwilioCallError(response.status_code, code, message, created)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise TwilioCallError(response.status_code, None, "answer is not JSON", None) from None
    if not isinstance(body, dict):
        raise TwilioCallError(response.status_code, None, "answer is not an object", None)
    return body


def create_call(
    client: httpx.Client,
    api_base: str,
    account_sid: str,
    auth_token: str,
    params: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """Create the call (form ``params``, repeated names allowed) -> Twilio's Call resource."""
    try:
        response = client.post(
            _calls_url(api_base, account_sid), data=_group(params), auth=(account_sid, auth_token)
        )
    except httpx.HTTPError as exc:
        # Once the request may have left, whether Twilio created the call is unknown.
        created = False if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) else None
        raise TwilioCallError(None, None, f"{type(exc).__name__} calling Twilio", created) from None
    if response.status_code >= 300:
        raise _error(response)
    call = _json(response)
    if not isinstance(call.get("sid"), str):
        raise TwilioCallError(response.status_code, None, "created call has no sid", None)
    return call


def fetch_call(
    client: httpx.Client, api_base: str, account_sid: str, auth_token: str, call_sid: str
) -> dict[str, Any] | None:
    """The Call resource, or None if Twilio does not know it (404)."""
    try:
        response = client.get(
            _calls_url(api_base, account_sid, f"/{call_sid}"), auth=(account_sid, auth_token)
        )
    except httpx.HTTPError as exc:
        raise TwilioCallError(None, None, f"{type(exc).__name__} calling Twilio", None) from None
    if response.status_code == 404:
        return None
    if response.status_code >= 300:
        raise _error(response)
    return _json(response)


def list_calls(
    client: httpx.Client,
    api_base: str,
    account_sid: str,
    auth_token: str,
    *,
    to: str,
    from_: str,
    page_size: int = 20,
) -> list[dict[str, Any]]:
    """The most recent calls from ``from_`` to ``to`` (one page, newest first).

    Filtered by To and From only: ``StartTime`` is empty until a call is dialled, so a call still
    queued behind the account's CPS would be missed by a StartTime filter.
    """
    try:
        response = client.get(
            _calls_url(api_base, account_sid),
            params={"To": to, "From": from_, "PageSize": str(page_size)},
            auth=(account_sid, auth_token),
        )
    except httpx.HTTPError as exc:
        raise TwilioCallError(None, None, f"{type(exc).__name__} calling Twilio", None) from None
    if response.status_code >= 300:
        raise _error(response)
    calls = _json(response).get("calls")
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def _group(params: Sequence[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Form pairs -> httpx ``data`` (a repeated name becomes a list: each value is sent)."""
    grouped: dict[str, str | list[str]] = {}
    for name, value in params:
        previous = grouped.get(name)
        if previous is None:
            grouped[name] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            grouped[name] = [previous, value]
    return grouped
