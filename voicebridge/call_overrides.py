"""Per-call options of the Vapi call (assistant overrides, the customer) carried to the edge.

An outbound call may set ``variableValues`` and a ``firstMessage`` for its Vapi call, and its
customer is the number called rather than the caller; but the edge creates the Vapi call from the
TwiML ``<Stream>``'s ``<Parameter>``s alone, and Twilio caps each parameter's name + value below
500 characters. So the control plane writes the options as a JSON document
``{"assistantOverrides": {...}, "customerNumber": "+1..."}`` cut into parameters ``o0``, ``o1``,
... and signs it in ``om``:
``v1.<base64url HMAC-SHA256(secret, "ov1." + callSid + "." + document)>``, with the stream token's
secret under its own prefix. The edge passes on exactly what the control plane decided, for this
call only; a parameter changed on the way fails the check and ends the stream like a bad token.

Only the override fields below reach Vapi (``#/components/schemas/AssistantOverrides`` in Vapi's
OpenAPI): a whitelist here, so no caller of :func:`encode` can smuggle other settings through.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from voicebridge.identifiers import is_e164

VERSION: Final = "v1"
MAC_PARAMETER: Final = "om"
CHUNK_PREFIX: Final = "o"
CHUNK_CHARS: Final = 400  # + a 3-character name: well under Twilio's 500 per <Parameter>
MAX_DOCUMENT_CHARS: Final = 4000  # 10 parameters; the edge accepts 32 and 16 KB per message
MAX_CHUNKS: Final = -(-MAX_DOCUMENT_CHARS // CHUNK_CHARS)
MAX_VARIABLES: Final = 32
FIRST_MESSAGE_MODES: Final = frozenset(
    {
        "assistant-speaks-first",
        "assistant-waits-for-user",
        "assistant-speaks-first-with-model-generated-message",
    }
)


@dataclass(frozen=True, slots=True)
class CallOptions:
    """What the edge adds to its ``POST /call`` for this call."""

    assistant_overrides: dict[str, Any] = field(default_factory=dict)
    customer_number: str | None = None


class OverridesError(ValueError):
    """The overrides are malformed, too large, or not signed for this call (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _mac(secret: str, call_sid: str, document: str) -> str:
    digest = hmac.new(
        secret.encode(), f"ov1.{call_sid}.{document}".encode(), hashlib.sha256
    ).digest()
    return f"{VERSION}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode('ascii')}"


def _checked(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides if every field is one we allow with the right type, else OverridesError."""
    allowed = {"variableValues", "firstMessage", "firstMessageMode", "maxDurationSeconds"}
    unknown = set(overrides) - allowed
    if unknown:
        raise OverridesError(f"unsupported override {sorted(unknown)[0]!r}")
    variables = overrides.get("variableValues", {})
    if not isinstance(variables, dict) or len(variables) > MAX_VARIABLES:
        raise OverridesError("variableValues must be an object of at most 32 strings")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items()):
        raise OverridesError("variableValues must map strings to strings")
    first = overrides.get("firstMessage")
    if first is not None and not isinstance(first, str):
        raise OverridesError("firstMessage must be a string")
    mode = overrides.get("firstMessageMode")
    if mode is not None and mode not in FIRST_MESSAGE_MODES:
        raise OverridesError("firstMessageMode is not one Vapi knows")
    seconds = overrides.get("maxDurationSeconds")
    if seconds is not None and (type(seconds) is not int or not 10 <= seconds <= 43_200):
        raise OverridesError("maxDurationSeconds must be an integer from 10 to 43200")
    return dict(overrides)


def _document(options: Mapping[str, Any]) -> CallOptions:
    if set(options) - {"assistantOverrides", "customerNumber"}:
        raise OverridesError("unsupported call option")
    overrides = options.get("assistantOverrides", {})
    if not isinstance(overrides, dict):
        raise OverridesError("assistantOverrides is not an object")
    customer = options.get("customerNumber")
    if customer is not None and not is_e164(customer):
        raise OverridesError("customerNumber is not an E.164 number")
    return CallOptions(_checked(overrides), customer)


def encode(secret: str, call_sid: str, options: CallOptions) -> dict[str, str]:
    """The ``<Parameter>`` name -> value pairs for ``options`` (empty when there are none)."""
    document_fields: dict[str, Any] = {}
    if options.assistant_overrides:
        document_fields["assistantOverrides"] = _checked(options.assistant_overrides)
    if options.customer_number is not None:
        _document({"customerNumber": options.customer_number})
        document_fields["customerNumber"] = options.customer_number
    if not document_fields:
        return {}
    if not secret:
        raise ValueError("stream token secret is empty")
    document = json.dumps(document_fields, separators=(",", ":"), sort_keys=True)
    if len(document) > MAX_DOCUMENT_CHARS:
        raise OverridesError(f"overrides are {len(document)} characters, at most 4000")
    params = {
        f"{CHUNK_PREFIX}{index}": document[start : start + CHUNK_CHARS]
        for index, start in enumerate(range(0, len(document), CHUNK_CHARS))
    }
    params[MAC_PARAMETER] = _mac(secret, call_sid, document)
    return params


def decode(secret: str, call_sid: str, params: Mapping[str, str]) -> CallOptions:
    """The verified options in a stream's custom parameters (empty when it carries none)."""
    mac = params.get(MAC_PARAMETER)
    if mac is None:
        if f"{CHUNK_PREFIX}0" in params:
            raise OverridesError("overrides without a signature")
        return CallOptions()
    chunks: list[str] = []
    for index in range(MAX_CHUNKS + 1):
        chunk = params.get(f"{CHUNK_PREFIX}{index}")
        if chunk is None:
            break
        chunks.append(chunk)
    else:
        raise OverridesError("too many override parameters")
    document = "".join(chunks)
    if not document or len(document) > MAX_DOCUMENT_CHARS:
        raise OverridesError("overrides missing or too large")
    if not hmac.compare_digest(mac.encode(), _mac(secret, call_sid, document).encode()):
        raise OverridesError("bad_signature")
    try:
        options = json.loads(document)
    except ValueError:
        raise OverridesError("overrides are not JSON") from None
    if not isinstance(options, dict):
        raise OverridesError("overrides are not an object")
    return _document(options)
