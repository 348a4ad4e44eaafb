"""Twilio request signatures (``X-Twilio-Signature``): the API's webhooks and the edge's upgrade.

twilio-python's ``RequestValidator`` does the work (sorted params, with/without default ports);
this module adds the two things both deployables need on top: a WebSocket-upgrade check (the
``wss://`` URL, empty params, also with a trailing ``/``) and bounded input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"
MAX_SIGNATURE_LENGTH = 128  # base64 of a SHA-256 digest is 44 characters

Params = Mapping[str, str] | Mapping[str, Sequence[str]]


class _MultiParams(dict[str, list[str]]):
    """Repeated form fields, in the shape RequestValidator reads (``getlist``)."""

    def getlist(self, name: str) -> list[str]:
        return self[name]


def _as_params(params: Params) -> Mapping[str, str] | _MultiParams:
    if any(not isinstance(value, str) for value in params.values()):
        return _MultiParams({k: [v] if isinstance(v, str) else list(v) for k, v in params.items()})
    return params  # type: ignore[return-value]


def is_valid(auth_token: str, url: str, params: Params, signature: str | None) -> bool:
    """True if ``signature`` is Twilio's for a request to ``url`` with form ``params``."""
    if not auth_token or not signature or len(signature) > MAX_SIGNATURE_LENGTH:
        return False
    return bool(RequestValidator(auth_token).validate(url, _as_params(params), signature))


def is_valid_upgrade(auth_token: str, wss_url: str, signature: str | None) -> bool:
    """True if ``signature`` signs the Media Streams upgrade to ``wss_url`` (with/without ``/``)."""
    base = wss_url.rstrip("/")
    return is_valid(auth_token, base, {}, signature) or is_valid(
        auth_token, base + "/", {}, signature
    )


def sign(auth_token: str, url: str, params: Params | None = None) -> str:
    """The signature Twilio would send (for the simulated caller, tests and the README helper)."""
    return str(RequestValidator(auth_token).compute_signature(url, _as_params(params or {})))
