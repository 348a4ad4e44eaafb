"""How Vapi may authenticate its webhooks to us: the ``VAPI_WEBHOOK_AUTH`` setting, parsed.

Vapi signs or tags each server-URL request with the credential the assistant's ``server``
names (https://docs.vapi.ai/server-url/server-authentication). The setting lists the forms we
accept, written the way Vapi's own credential is (``CreateWebhookCredentialDTO.
authenticationPlan``) minus the secret, which stays in ``VAPI_WEBHOOK_SECRET``:

- ``{"type": "hmac", ...}``: ``#/components/schemas/HMACAuthenticationPlan``: ``algorithm``
  sha256|sha512|sha1, ``signatureEncoding`` hex|base64, ``signatureHeader`` (x-signature),
  ``timestampHeader`` (x-timestamp), ``signaturePrefix``, ``includeTimestamp`` (true),
  ``payloadFormat`` (``{timestamp}.{body}``; placeholders ``{body} {timestamp} {method} {url}
  {svix-id}``), ``messageIdHeader`` (carries ``{svix-id}``), ``secretIsBase64`` (false);
- ``{"type": "bearer", ...}``: ``#/components/schemas/BearerAuthenticationPlan``:
  ``headerName`` (Authorization), ``bearerPrefixEnabled`` (true: the value is ``Bearer <token>``);
- ``{"type": "x-vapi-secret"}``: the legacy shared secret Vapi sends as ``x-vapi-secret``
  (also what ``POST /assistants`` puts in ``server.headers``).

The value is one such object, a JSON array of them, or type names separated by commas
(``hmac,bearer``: those types with their defaults). Unset: every form accepted before this
setting existed (:data:`DEFAULT_PLANS`). ``OAuth2AuthenticationPlan`` is refused: with it Vapi
fetches a token from your token endpoint, which this product does not run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

Algorithm = Literal["sha256", "sha512", "sha1"]
Encoding = Literal["hex", "base64"]
ALGORITHMS: Final = ("sha256", "sha512", "sha1")  # HMACAuthenticationPlan.algorithm
ENCODINGS: Final = ("hex", "base64")  # HMACAuthenticationPlan.signatureEncoding
PLACEHOLDERS: Final = ("body", "timestamp", "method", "url", "svix-id")  # .payloadFormat
PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
DEFAULT_FORMAT: Final = "{timestamp}.{body}"
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")  # an RFC 9110 token


@dataclass(frozen=True, slots=True)
class HmacPlan:
    """``HMACAuthenticationPlan`` without ``secretKey``; header names are lower-case."""

    algorithm: Algorithm = "sha256"
    signature_encoding: Encoding = "hex"
    signature_header: str = "x-signature"
    timestamp_header: str = "x-timestamp"
    signature_prefix: str | None = None
    include_timestamp: bool = True
    payload_format: str = DEFAULT_FORMAT
    message_id_header: str | None = None
    secret_is_base64: bool = False


@dataclass(frozen=True, slots=True)
class BearerPlan:
    """``BearerAuthenticationPlan`` without ``token``; the header name is lower-case."""

    header_name: str = "authorization"
    bearer_prefix_enabled: bool = True


@dataclass(frozen=True, slots=True)
class LegacySecretPlan:
    """The legacy ``x-vapi-secret: <secret>`` header."""

    header_name: str = "x-vapi-secret"


Plan = HmacPlan | BearerPlan | LegacySecretPlan
DEFAULT_PLANS: Final[tuple[Plan, ...]] = (LegacySecretPlan(), BearerPlan(), HmacPlan())

_HMAC_KEYS: Final = {
    "algorithm": "algorithm",
    "signatureEncoding": "signature_encoding",
    "signatureHeader": "signature_header",
    "timestampHeader": "timestamp_header",
    "signaturePrefix": "signature_prefix",
    "includeTimestamp": "include_timestamp",
    "payloadFormat": "payload_format",
    "messageIdHeader": "message_id_header",
    "secretIsBase64": "secret_is_base64",
}
_BEARER_KEYS: Final = {"headerName": "header_name", "bearerPrefixEnabled": "bearer_prefix_enabled"}
_KEYS: Final[dict[str, dict[str, str]]] = {
    "hmac": _HMAC_KEYS,
    "bearer": _BEARER_KEYS,
    "x-vapi-secret": {},
}
_SECRETS: Final = ("secretKey", "token")


def _header(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"{name} must be an HTTP header name, got {value!r}")
    return value.lower()


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _one_of(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}, got {value!r}")
    return str(value)


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"{name} must be a non-empty string of at most {limit} characters")
    return value


def _hmac(spec: dict[str, Any]) -> HmacPlan:
    values: dict[str, Any] = {}
    for key, value in spec.items():
        field = _HMAC_KEYS[key]
        if key == "algorithm":
            values[field] = _one_of(key, value, ALGORITHMS)
        elif key == "signatureEncoding":
            values[field] = _one_of(key, value, ENCODINGS)
        elif key in ("signatureHeader", "timestampHeader", "messageIdHeader"):
            values[field] = _header(key, value)
        elif key in ("includeTimestamp", "secretIsBase64"):
            values[field] = _flag(key, value)
        elif key == "signaturePrefix":
            values[field] = _text(key, value, 32)
        else:
            values[field] = _text(key, value, 200)
    if not values.get("include_timestamp", True) and "payload_format" not in values:
        values["payload_format"] = "{body}"  # the timestamp is left out of the signed payload
    plan = HmacPlan(**values)
    used = PLACEHOLDER.findall(plan.payload_format)
    unknown = [name for name in used if name not in PLACEHOLDERS]
    if unknown:
        raise ValueError(
            f"payloadFormat has {{{unknown[0]}}}; the placeholders are "
            + " ".join(f"{{{name}}}" for name in PLACEHOLDERS)
        )
    if "body" not in used:
        raise ValueError("payloadFormat must contain {body}: a signature must cover the body")
    if "timestamp" in used and not plan.include_timestamp:
        raise ValueError("payloadFormat uses {timestamp} but includeTimestamp is false")
    if "svix-id" in used and plan.message_id_header is None:
        raise ValueError("payloadFormat uses {svix-id}: set messageIdHeader to the header with it")
    return plan


def _plan(spec: Any) -> Plan:
    if isinstance(spec, str):
        spec = {"type": spec.strip()}
    if not isinstance(spec, dict):
        raise ValueError("each plan must be a JSON object with a type")
    kind = spec.get("type")
    rest = {k: v for k, v in spec.items() if k != "type"}
    secrets = [key for key in _SECRETS if key in rest]
    if secrets:
        raise ValueError(f"{secrets[0]} does not belong here: the secret is VAPI_WEBHOOK_SECRET")
    if kind not in _KEYS:
        hint = " (Vapi then calls a token endpoint this product does not run)"
        raise ValueError(
            f"type must be hmac, bearer or x-vapi-secret, got {kind!r}"
            + (hint if kind == "oauth2" else "")
        )
    unknown = sorted(set(rest) - set(_KEYS[kind]))
    if unknown:
        raise ValueError(f"{kind} plan has no property {unknown[0]!r}")
    if kind == "hmac":
        return _hmac(rest)
    if kind == "bearer":
        return BearerPlan(
            header_name=_header("headerName", rest.get("headerName", "authorization")),
            bearer_prefix_enabled=_flag(
                "bearerPrefixEnabled", rest.get("bearerPrefixEnabled", True)
            ),
        )
    return LegacySecretPlan()


def parse_plans(value: str) -> tuple[Plan, ...]:
    """``VAPI_WEBHOOK_AUTH`` -> the accepted plans (ValueError with a one-line reason)."""
    text = value.strip()
    if text.startswith(("{", "[")):
        try:
            spec = json.loads(text)
        except ValueError:
            raise ValueError("not valid JSON") from None
    else:
        spec = [part for part in text.split(",") if part.strip()]
    specs = spec if isinstance(spec, list) else [spec]
    if not specs or len(specs) > 8:
        raise ValueError("must name 1 to 8 plans")
    return tuple(_plan(item) for item in specs)
