"""The end of one dial, wherever it is learnt: its final status callback (the worker), Twilio's
answer when the dialer reconciles an expired lease, or Calls.create refusing the call."""

from __future__ import annotations

from dataclasses import dataclass

from functions.outbound import policy
from functions.outbound.campaign import CampaignSettings
from functions.outbound.dial import DialPlan
from functions.outbound.queue import DialerQueue
from functions.outbound.store import RUNNING, OutboundStore
from functions.storage import Store


@dataclass(frozen=True, slots=True)
class Sinks:
    """Where the end of a dial is written."""

    outbound: OutboundStore
    records: Store | None  # the call record (SESSIONS_TABLE), when the dial has a CallSid
    queue: DialerQueue | None  # wakes the campaign's dialer once a slot is free
    record_retention_days: int = 90


def conclude(
    sinks: Sinks,
    plan: DialPlan,
    call_sid: str | None,
    outcome: str,
    now: float,
    error: str | None = None,
    retry: bool = True,
) -> bool:
    """Record ``outcome`` on the call and, for a campaign, move the contact on (retry or done)
    and release its slot. False when this dial had already been concluded. ``retry=False``:
    done whatever the outcome (Twilio refused the number: trying again cannot help)."""
    if sinks.records is not None and call_sid:
        expires_at = int(now) + sinks.record_retention_days * 86_400
        sinks.records.apply_report(call_sid, {"outcome": outcome}, expires_at)
    if plan.campaign_id is None or plan.contact_index is None:
        return True
    meta = sinks.outbound.get_campaign(plan.campaign_id)
    if meta is None:
        return False
    settings = CampaignSettings.from_item(meta["settings"])
    again = policy.retry_at(outcome, plan.attempt, settings.retries, now) if retry else None
    applied = sinks.outbound.finish(
        plan.campaign_id, plan.contact_index, plan.dial_id, outcome, again, now, call_sid, error
    )
    if applied and sinks.queue is not None and meta.get("status") == RUNNING:
        sinks.queue.tick(plan.campaign_id)
    return applied
