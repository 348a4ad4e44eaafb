"""One outbound call, as the API and the dialer place it and the TwiML webhook answers it.

``Calls.create`` gets a ``Url`` rather than inline TwiML: the stream token binds the CallSid, which
only exists once Twilio has created the call, so the TwiML is minted by our
``/twilio/outbound/answer`` when the call is answered, and that request also carries AMD's
``AnsweredBy`` when machine detection runs (synchronously, the default). Both that URL and the
``StatusCallback`` carry ``dial=<id>``, the :class:`DialPlan` written before the call is created,
so every callback finds its call's settings and contact even if the dialer died right after
``Calls.create``. Twilio signs the whole URL, query included, so ``dial`` cannot be forged.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from functions.outbound import policy
from voicebridge.call_overrides import CallOptions

ANSWER_PATH: Final = "/twilio/outbound/answer"
STATUS_PATH: Final = "/twilio/outbound/status"
DIAL_PARAM: Final = "_dial"  # the dial id, added to a queued status callback (Twilio's are Camel)
# Every progress event Twilio offers for API calls
# (https://www.twilio.com/docs/voice/api/call-resource#statuscallbackevent).
STATUS_EVENTS: Final = ("initiated", "ringing", "answered", "completed")
# Twilio's MachineDetection values: "Enable" returns as soon as it knows who answered (we hang up
# on a machine); "DetectMessageEnd" waits for the greeting's end, the beep, to leave a message
# (https://www.twilio.com/docs/voice/answering-machine-detection).
AMD_MODES: Final = {"hangup": "Enable", "message": "DetectMessageEnd"}
DIAL_RETENTION_SECONDS: Final = 2 * 86_400  # longer than any call plus Twilio's callback retries
VOICEMAIL_EXTRA_SECONDS: Final = 15


@dataclass(frozen=True, slots=True)
class DialPlan:
    """Everything about one call that the webhooks need later (stored as the DIAL item)."""

    dial_id: str
    to: str
    from_number: str
    assistant_id: str
    api_base: str  # the API as Twilio sees it: where Url and StatusCallback point
    ring_timeout_seconds: int = 30
    machine_detection: str = "off"  # off | hangup | message
    first_message: str | None = None
    voicemail_message: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    campaign_id: str | None = None
    contact_index: int | None = None
    attempt: int = 1  # of this contact: the retry policy needs it when the call ends

    def to_item(self, now: float) -> dict[str, Any]:
        return {
            **asdict(self),
            "created_at": int(now),
            "expires_at": int(now) + DIAL_RETENTION_SECONDS,
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> DialPlan:
        names = set(cls.__dataclass_fields__)
        values = {k: v for k, v in item.items() if k in names}
        values["variables"] = {str(k): str(v) for k, v in (item.get("variables") or {}).items()}
        if values.get("contact_index") is not None:
            values["contact_index"] = int(values["contact_index"])
        values["ring_timeout_seconds"] = int(item.get("ring_timeout_seconds", 30))
        values["attempt"] = int(item.get("attempt", 1))
        return cls(**values)


def new_dial_id(campaign_id: str | None = None, index: int | None = None) -> str:
    """A fresh id per attempt (``{campaign}.{contact}.{random}``): URL-safe, never reused."""
    nonce = secrets.token_hex(6)
    return f"{campaign_id}.{index}.{nonce}" if campaign_id is not None else f"call.{nonce}"


def create_params(plan: DialPlan) -> list[tuple[str, str]]:
    """The form of ``POST /Calls.json`` (names as in Twilio's Call resource docs)."""
    query = f"?dial={plan.dial_id}"
    params = [
        ("To", plan.to),
        ("From", plan.from_number),
        ("Url", f"{plan.api_base}{ANSWER_PATH}{query}"),
        ("Method", "POST"),
        ("StatusCallback", f"{plan.api_base}{STATUS_PATH}{query}"),
        ("StatusCallbackMethod", "POST"),
        *(("StatusCallbackEvent", event) for event in STATUS_EVENTS),
        ("Timeout", str(plan.ring_timeout_seconds)),
    ]
    mode = AMD_MODES.get(plan.machine_detection)
    if mode:
        params.append(("MachineDetection", mode))
    return params


def is_machine(answered_by: str | None) -> bool:
    return answered_by in policy.MACHINE_ANSWERS


def call_options(plan: DialPlan, answered_by: str | None) -> CallOptions:
    """What the edge adds to the Vapi call: variables, the first message (or, on a machine under
    the "message" policy, the voicemail message and a call short enough to end after it), and
    the callee as Vapi's customer."""
    variables = dict(plan.variables)
    if answered_by:
        variables.setdefault("answeredBy", answered_by)
    overrides: dict[str, Any] = {}
    if variables:
        overrides["variableValues"] = variables
    first = plan.first_message
    if is_machine(answered_by) and plan.machine_detection == "message":
        first = plan.voicemail_message or plan.first_message
        if first:
            words = len(first.split())
            overrides["maxDurationSeconds"] = max(10, words // 2 + VOICEMAIL_EXTRA_SECONDS)
    if first:
        overrides["firstMessage"] = first
        overrides["firstMessageMode"] = "assistant-speaks-first"
    return CallOptions(overrides, plan.to)
