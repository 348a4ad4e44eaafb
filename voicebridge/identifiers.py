"""Vendor identifiers, each defined once for the whole codebase: Twilio SIDs and E.164 numbers.

Twilio: "Twilio identifies every resource with a 34-character String Identifier (SID). This SID
consists of a two-letter prefix followed by 32 hexadecimal digits"
(https://www.twilio.com/docs/glossary/what-is-a-sid). E.164: a ``+``, then the country code
(never starting with 0) and the subscriber number, at most 15 digits in all (ITU-T E.164;
https://www.twilio.com/docs/glossary/what-e164).

Every check is a full match of the whole string. A prefix match, or ``$`` (which also matches
before a trailing newline), would let through what Twilio never sends: for example a CallSid
with ``"CallStatusringing"`` appended, which Twilio's separator-less request signature still
validates (name and value are concatenated without separators).
"""

from __future__ import annotations

import re
from typing import Final

_HEX32: Final = "[0-9a-fA-F]{32}"

CALL_SID: Final = re.compile(f"CA{_HEX32}")
ACCOUNT_SID: Final = re.compile(f"AC{_HEX32}")
STREAM_SID: Final = re.compile(f"MZ{_HEX32}")
PHONE_NUMBER_SID: Final = re.compile(f"PN{_HEX32}")
E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")  # 7-15 digits: no real number is shorter

E164_EXAMPLE: Final = "+14155550123"


def _full(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def is_call_sid(value: object) -> bool:
    """A Twilio Call SID (``CA`` + 32 hex digits), nothing more."""
    return _full(CALL_SID, value)


def is_account_sid(value: object) -> bool:
    """A Twilio Account SID (``AC`` + 32 hex digits)."""
    return _full(ACCOUNT_SID, value)


def is_stream_sid(value: object) -> bool:
    """A Twilio Media Stream SID (``MZ`` + 32 hex digits)."""
    return _full(STREAM_SID, value)


def is_phone_number_sid(value: object) -> bool:
    """A Twilio IncomingPhoneNumber SID (``PN`` + 32 hex digits)."""
    return _full(PHONE_NUMBER_SID, value)


def is_e164(value: object) -> bool:
    """An E.164 phone number such as ``+14155550123``."""
    return _full(E164, value)
