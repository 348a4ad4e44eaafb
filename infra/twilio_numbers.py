"""Twilio's IncomingPhoneNumbers resource, as the REST emulator serves it (sans-I/O rules).

Source for every field and parameter: https://www.twilio.com/docs/phone-numbers/api/incomingphonenumber-resource
and Twilio's own generated client (``twilio`` package, ``rest/api/v2010/account/
incoming_phone_number/__init__.py``: the update and read parameters, the list path
``/2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json``, ``PageSize`` "defaults to 50").

Where Twilio's behaviour is not documented the emulator is stricter, so a mistake of ours fails a
test instead of passing here and failing on Twilio:
- an unknown form or query parameter is a 400 (Twilio does not document rejecting them);
- the error codes for a bad method or a bad parameter value are not documented for this resource;
  the emulator answers 400 with code 20001 (Twilio's generic "invalid parameter") for them, and
  21205 ("Url is not a valid URL", the code Twilio answers for a bad ``Url``) for a bad URL.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from voicebridge.identifiers import is_e164

INVALID_PARAMETER = 20001
INVALID_URL = 21205
MAX_PAGE_SIZE = 1000  # Twilio's documented maximum PageSize for list resources
DEFAULT_PAGE_SIZE = 50

# The update operation's parameters (Twilio's client ``IncomingPhoneNumberContext._update``).
UPDATE_PARAMETERS = frozenset(
    {
        "AccountSid",
        "ApiVersion",
        "FriendlyName",
        "SmsApplicationSid",
        "SmsFallbackMethod",
        "SmsFallbackUrl",
        "SmsMethod",
        "SmsUrl",
        "StatusCallback",
        "StatusCallbackMethod",
        "VoiceApplicationSid",
        "VoiceCallerIdLookup",
        "VoiceFallbackMethod",
        "VoiceFallbackUrl",
        "VoiceMethod",
        "VoiceUrl",
        "EmergencyStatus",
        "EmergencyAddressSid",
        "TrunkSid",
        "VoiceReceiveMode",
        "IdentitySid",
        "AddressSid",
        "BundleSid",
    }
)
# The read operation's filters and paging (``IncomingPhoneNumberList.page``).
LIST_PARAMETERS = frozenset(
    {"Beta", "FriendlyName", "PhoneNumber", "Origin", "PageToken", "Page", "PageSize"}
)
# "The HTTP method we use to call `voice_url`. Can be: `GET` or `POST`." (same for the others)
_METHODS = frozenset({"GET", "POST"})
_METHOD_PARAMETERS = {
    "VoiceMethod": "voice_method",
    "VoiceFallbackMethod": "voice_fallback_method",
    "StatusCallbackMethod": "status_callback_method",
    "SmsMethod": "sms_method",
    "SmsFallbackMethod": "sms_fallback_method",
}
_URL_PARAMETERS = {
    "VoiceUrl": "voice_url",
    "VoiceFallbackUrl": "voice_fallback_url",
    "StatusCallback": "status_callback",
    "SmsUrl": "sms_url",
    "SmsFallbackUrl": "sms_fallback_url",
}
_SID_PARAMETERS = {"VoiceApplicationSid": "voice_application_sid", "TrunkSid": "trunk_sid"}


class NumberRequestError(ValueError):
    """A 400 from the resource, with Twilio's error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _now() -> str:
    return format_datetime(datetime.now(UTC), usegmt=True)  # RFC 2822, as Twilio dates are


@dataclass(slots=True)
class EmulatedNumber:
    """One IncomingPhoneNumber; attribute names are the resource's JSON property names."""

    sid: str
    account_sid: str
    phone_number: str
    friendly_name: str
    voice_url: str = ""
    voice_method: str = "POST"
    voice_fallback_url: str = ""
    voice_fallback_method: str = "POST"
    voice_application_sid: str = ""
    trunk_sid: str = ""
    status_callback: str = ""
    status_callback_method: str = "POST"
    sms_url: str = ""
    sms_method: str = "POST"
    sms_fallback_url: str = ""
    sms_fallback_method: str = "POST"
    date_created: str = field(default_factory=_now)
    date_updated: str = field(default_factory=_now)

    @classmethod
    def new(cls, account_sid: str, phone_number: str, **fields: str) -> EmulatedNumber:
        if not is_e164(phone_number):
            raise ValueError(f"{phone_number!r} is not an E.164 number")
        sid = "PN" + secrets.token_hex(16)
        return cls(
            sid, account_sid, phone_number, fields.pop("friendly_name", phone_number), **fields
        )

    def resource(self) -> dict[str, Any]:
        """The JSON Twilio answers for a fetch, an update and each list item (null for unset)."""
        text = {
            name: (getattr(self, name) or None)
            for name in (
                "voice_url",
                "voice_fallback_url",
                "voice_application_sid",
                "trunk_sid",
                "status_callback",
                "sms_url",
                "sms_fallback_url",
            )
        }
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "phone_number": self.phone_number,
            "friendly_name": self.friendly_name,
            "api_version": "2010-04-01",
            "voice_method": self.voice_method,
            "voice_fallback_method": self.voice_fallback_method,
            "status_callback_method": self.status_callback_method,
            "sms_method": self.sms_method,
            "sms_fallback_method": self.sms_fallback_method,
            "voice_caller_id_lookup": False,
            "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
            "origin": "twilio",
            "beta": False,
            "status": "in-use",
            "date_created": self.date_created,
            "date_updated": self.date_updated,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/IncomingPhoneNumbers/{self.sid}.json",
            **text,
        }


def _check_url(name: str, value: str) -> None:
    """An absolute http(s) URL (Twilio error 11100 "Invalid URL format": "protocol (http:// or
    https://), hostname"), or empty to clear the setting."""
    if value == "":
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NumberRequestError(INVALID_URL, f"{name} is not a valid URL: {value}")


def update_form(number: EmulatedNumber, form: dict[str, str]) -> None:
    """Apply an update form, all or nothing (nothing changes if any parameter is bad)."""
    unknown = sorted(set(form) - UPDATE_PARAMETERS)
    if unknown:
        raise NumberRequestError(INVALID_PARAMETER, f"Unknown parameters: {', '.join(unknown)}")
    for name, value in form.items():
        if name in _METHOD_PARAMETERS and value.upper() not in _METHODS:
            raise NumberRequestError(INVALID_PARAMETER, f"{name} must be GET or POST")
        if name in _URL_PARAMETERS:
            _check_url(name, value)
        if (
            name == "VoiceApplicationSid"
            and value
            and not re.fullmatch(r"AP[0-9a-fA-F]{32}", value)
        ):
            raise NumberRequestError(INVALID_PARAMETER, f"{name} is not an Application SID")
        if name == "FriendlyName" and len(value) > 64:  # "up to 64 characters long"
            raise NumberRequestError(INVALID_PARAMETER, "FriendlyName is longer than 64")
    for name, value in form.items():
        if name in _METHOD_PARAMETERS:
            setattr(number, _METHOD_PARAMETERS[name], value.upper())
        elif name in _URL_PARAMETERS:
            setattr(number, _URL_PARAMETERS[name], value)
        elif name in _SID_PARAMETERS:
            setattr(number, _SID_PARAMETERS[name], value)
            # "Setting a `voice_application_sid` will automatically delete your `trunk_sid` and
            # vice versa."
            other = "trunk_sid" if name == "VoiceApplicationSid" else "voice_application_sid"
            if value:
                setattr(number, other, "")
        elif name == "FriendlyName":
            number.friendly_name = value
    number.date_updated = _now()


def _matches(pattern: str, phone_number: str) -> bool:
    """``PhoneNumber`` filter: "You can specify partial numbers and use '*' as a wildcard for
    any digit." A partial number matches anywhere in the number."""
    regex = "".join("[0-9]" if ch == "*" else re.escape(ch) for ch in pattern)
    return re.search(regex, phone_number) is not None


def page(numbers: list[EmulatedNumber], path: str, query: dict[str, str]) -> dict[str, Any]:
    """One page of the list resource, with Twilio's paging envelope."""
    unknown = sorted(set(query) - LIST_PARAMETERS)
    if unknown:
        raise NumberRequestError(INVALID_PARAMETER, f"Unknown parameters: {', '.join(unknown)}")
    try:
        size = int(query.get("PageSize", DEFAULT_PAGE_SIZE))
        index = int(query.get("Page", 0))
    except ValueError:
        raise NumberRequestError(INVALID_PARAMETER, "Page and PageSize must be integers") from None
    if not 1 <= size <= MAX_PAGE_SIZE or index < 0:
        raise NumberRequestError(INVALID_PARAMETER, f"PageSize must be 1 to {MAX_PAGE_SIZE}")
    found = [
        n
        for n in numbers
        if _matches(query.get("PhoneNumber", ""), n.phone_number)
        and query.get("FriendlyName", n.friendly_name) == n.friendly_name
    ]
    found.sort(key=lambda n: n.phone_number)
    start = index * size
    items = found[start : start + size]
    filters = {k: v for k, v in query.items() if k in ("PhoneNumber", "FriendlyName")}

    def uri(at: int) -> str:
        return f"{path}?{urlencode({**filters, 'PageSize': size, 'Page': at})}"

    more = start + size < len(found)
    return {
        "incoming_phone_numbers": [n.resource() for n in items],
        "page": index,
        "page_size": size,
        "start": start,
        "end": start + max(len(items) - 1, 0),
        "uri": uri(index),
        "first_page_uri": uri(0),
        "next_page_uri": uri(index + 1) if more else None,
        "previous_page_uri": uri(index - 1) if index > 0 else None,
    }
