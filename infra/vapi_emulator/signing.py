"""How Vapi authenticates a server-URL request, for every credential it offers.

A credential's ``authenticationPlan`` (``#/components/schemas/CreateWebhookCredentialDTO``) is
one of:

- ``HMACAuthenticationPlan``: ``algorithm`` (required: sha256|sha512|sha1), ``signatureHeader``
  ("Defaults to 'x-signature'"), ``timestampHeader`` ("Defaults to 'x-timestamp'"),
  ``signaturePrefix`` (e.g. 'sha256='), ``includeTimestamp`` ("Defaults to true"),
  ``payloadFormat`` ("Use {body} for request body, {timestamp} for timestamp, {method} for HTTP
  method, {url} for URL, {svix-id} for unique message ID. Defaults to '{timestamp}.{body}'"),
  ``messageIdHeader`` (where the message id is sent), ``signatureEncoding`` (hex|base64,
  "Defaults to 'hex'"), ``secretIsBase64`` ("Defaults to false");
- ``BearerAuthenticationPlan``: ``headerName`` ("Defaults to 'Authorization'"),
  ``bearerPrefixEnabled`` ("Defaults to true");
- (``OAuth2AuthenticationPlan``: a token fetched from the server's token URL; not emulated.)

Plus the legacy ``x-vapi-secret`` header (``{"type": "x-vapi-secret"}`` here). Undocumented,
and chosen here: the timestamp is epoch milliseconds; with ``includeTimestamp`` false the
default payload is ``{body}`` and no timestamp header is sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

_HMAC_KEYS = frozenset(
    {
        "type",
        "algorithm",
        "signatureHeader",
        "timestampHeader",
        "signaturePrefix",
        "includeTimestamp",
        "payloadFormat",
        "messageIdHeader",
        "signatureEncoding",
        "secretIsBase64",
    }
)
_BEARER_KEYS = frozenset({"type", "headerName", "bearerPrefixEnabled"})
_PLACEHOLDER = re.compile(r"\{(body|timestamp|method|url|svix-id)\}")


def check_plan(plan: Mapping[str, Any]) -> None:
    """Refuse a plan Vapi's credential API would refuse (enums, required, unknown keys)."""
    kind = plan.get("type")
    if kind == "x-vapi-secret":
        return
    if kind == "bearer":
        unknown = set(plan) - _BEARER_KEYS
    elif kind == "hmac":
        unknown = set(plan) - _HMAC_KEYS
        if plan.get("algorithm") not in ("sha256", "sha512", "sha1"):
            raise ValueError("algorithm must be one of the following values: sha256, sha512, sha1")
        if plan.get("signatureEncoding", "hex") not in ("hex", "base64"):
            raise ValueError("signatureEncoding must be one of the following values: hex, base64")
    else:
        raise ValueError(f"authenticationPlan type {kind!r} is not emulated")
    if unknown:
        raise ValueError(f"property {sorted(unknown)[0]} should not exist")


def credential_headers(
    plan: Mapping[str, Any],
    secret: str,
    body: bytes,
    *,
    method: str,
    url: str,
    timestamp_ms: int,
    message_id: str,
) -> dict[str, str]:
    """The headers Vapi adds to a server-URL request authenticated by ``plan``."""
    kind = plan.get("type")
    if kind == "x-vapi-secret":
        return {"x-vapi-secret": secret}
    if kind == "bearer":
        prefix = "Bearer " if plan.get("bearerPrefixEnabled", True) else ""
        return {str(plan.get("headerName", "Authorization")): prefix + secret}
    include_timestamp = plan.get("includeTimestamp", True)
    template = str(
        plan.get("payloadFormat") or ("{timestamp}.{body}" if include_timestamp else "{body}")
    )
    stamp = str(timestamp_ms)
    values = {
        "body": body,
        "timestamp": stamp.encode(),
        "method": method.encode(),
        "url": url.encode(),
        "svix-id": message_id.encode(),
    }
    signed = b"".join(
        values[part] if index % 2 else part.encode()
        for index, part in enumerate(_PLACEHOLDER.split(template))
    )
    key = base64.b64decode(secret) if plan.get("secretIsBase64") else secret.encode()
    digest = hmac.new(key, signed, getattr(hashlib, str(plan["algorithm"]))).digest()
    encoded = (
        base64.b64encode(digest).decode()
        if plan.get("signatureEncoding") == "base64"
        else digest.hex()
    )
    headers = {
        str(plan.get("signatureHeader", "x-signature")): plan.get("signaturePrefix", "") + encoded
    }
    if include_timestamp:
        headers[str(plan.get("timestampHeader", "x-timestamp"))] = stamp
    if plan.get("messageIdHeader"):
        headers[str(plan["messageIdHeader"])] = message_id
    return headers
