"""A campaign's settings as stored on its META item, and its progress as the API shows it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from functions.outbound import policy, store, windows

if TYPE_CHECKING:  # the worker and the dialer read settings; only the API builds them
    from functions.outbound.requests import CreateCampaign


@dataclass(frozen=True, slots=True)
class CampaignSettings:
    assistant_id: str
    from_number: str
    api_base: str
    max_concurrent: int = 1
    max_calls_per_second: float = 1.0
    window: windows.CallingWindow | None = None
    timezone: str = "UTC"  # for contacts without their own
    retries: policy.Retries = field(default_factory=policy.Retries)
    ring_timeout_seconds: int = 30
    machine_detection: str = "off"
    first_message: str | None = None
    voicemail_message: str | None = None
    variables: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_request(
        cls, spec: CreateCampaign, assistant_id: str, from_number: str, api_base: str
    ) -> CampaignSettings:
        return cls(
            assistant_id=assistant_id,
            from_number=from_number,
            api_base=api_base,
            max_concurrent=spec.max_concurrent,
            max_calls_per_second=spec.max_calls_per_second,
            window=spec.window.window() if spec.window else None,
            timezone=spec.window.timezone if spec.window else "UTC",
            retries=policy.Retries(spec.retries.max, spec.retries.backoff_seconds),
            ring_timeout_seconds=spec.ring_timeout_seconds,
            machine_detection=spec.machine_detection,
            first_message=spec.first_message,
            voicemail_message=spec.voicemail_message,
            variables=dict(spec.variables),
        )

    def to_item(self) -> dict[str, Any]:
        window = self.window
        return {
            "assistant_id": self.assistant_id,
            "from": self.from_number,
            "api_base": self.api_base,
            "max_concurrent": self.max_concurrent,
            "max_calls_per_second": self.max_calls_per_second,
            "window": (
                {"start": window.start.isoformat(), "end": window.end.isoformat()}
                if window
                else None
            ),
            "timezone": self.timezone,
            "retries": {"max": self.retries.max, "backoff_seconds": self.retries.backoff_seconds},
            "ring_timeout_seconds": self.ring_timeout_seconds,
            "machine_detection": self.machine_detection,
            "first_message": self.first_message,
            "voicemail_message": self.voicemail_message,
            "variables": self.variables,
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> CampaignSettings:
        window = item.get("window")
        retries = item.get("retries") or {}
        return cls(
            assistant_id=str(item["assistant_id"]),
            from_number=str(item["from"]),
            api_base=str(item["api_base"]),
            max_concurrent=int(item.get("max_concurrent", 1)),
            max_calls_per_second=float(item.get("max_calls_per_second", 1.0)),
            window=windows.CallingWindow.parse(window["start"], window["end"]) if window else None,
            timezone=str(item.get("timezone") or "UTC"),
            retries=policy.Retries(
                int(retries.get("max", 0)), int(retries.get("backoff_seconds", 300))
            ),
            ring_timeout_seconds=int(item.get("ring_timeout_seconds", 30)),
            machine_detection=str(item.get("machine_detection", "off")),
            first_message=item.get("first_message"),
            voicemail_message=item.get("voicemail_message"),
            variables={str(k): str(v) for k, v in (item.get("variables") or {}).items()},
        )

    def public(self) -> dict[str, Any]:
        """The settings in the API's own field names."""
        window = self.window
        return {
            "assistantId": self.assistant_id,
            "from": self.from_number,
            "maxConcurrent": self.max_concurrent,
            "maxCallsPerSecond": self.max_calls_per_second,
            "window": (
                {
                    "start": window.start.isoformat(timespec="seconds"),
                    "end": window.end.isoformat(timespec="seconds"),
                    "timezone": self.timezone,
                }
                if window
                else None
            ),
            "retries": {"max": self.retries.max, "backoffSeconds": self.retries.backoff_seconds},
            "ringTimeoutSeconds": self.ring_timeout_seconds,
            "machineDetection": self.machine_detection,
            "firstMessage": self.first_message,
            "voicemailMessage": self.voicemail_message,
            "variables": self.variables,
        }


def counts(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Progress from the META counters (kept exact by the contacts' transactions)."""
    return {
        "total": int(meta.get("c_total", 0)),
        "pending": int(meta.get("c_pending", 0)),
        "inProgress": int(meta.get("c_live", 0)),
        "done": int(meta.get("c_done", 0)),
        "retriesScheduled": int(meta.get("c_retries", 0)),
        "outcomes": {
            name: int(meta.get(store.outcome_counter(name), 0)) for name in policy.OUTCOMES
        },
    }


def contact_view(contact: store.ContactItem) -> dict[str, Any]:
    """One contact as ``GET /campaigns/{id}`` lists it."""
    state = {store.DIALING: "in-progress", store.CALLING: "in-progress"}.get(
        contact.state, contact.state
    )
    view: dict[str, Any] = {
        "number": contact.number,
        "name": contact.name,
        "state": state,
        "outcome": contact.outcome,
        "attempts": contact.attempts,
        "callSids": [c["sid"] for c in contact.calls if c.get("sid")],
    }
    if contact.state == store.PENDING and contact.next_at:
        view["nextAttemptAt"] = int(contact.next_at)
    if contact.call_sid and state == "in-progress":
        view["callSid"] = contact.call_sid
    return view
