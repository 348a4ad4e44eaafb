"""The worker's part for calls we placed: a final status ends the dial (``results.conclude``).

Called by ``functions.worker`` after the usual call-record update, for callbacks that came through
``/twilio/outbound/status`` (they carry the dial id). Everything it does is conditional on the
dial's own id, so Powertools' idempotency is a first layer, not the only one: a duplicate or
late callback finds the attempt already concluded and changes nothing.
"""

from __future__ import annotations

from typing import Any

from functions.events import Envelope
from functions.outbound import policy
from functions.outbound.dial import DIAL_PARAM, DialPlan
from functions.outbound.queue import get_dialer_queue
from functions.outbound.results import Sinks, conclude
from functions.outbound.store import get_outbound_store
from functions.storage import Store
from voicebridge.config import Settings


def dial_id_of(env: Envelope) -> str | None:
    value = env.payload.get(DIAL_PARAM)
    return value if isinstance(value, str) and value else None


def apply(env: Envelope, records: Store, config: Settings, now: float) -> str:
    """Conclude the dial if this callback is its final status; returns what happened."""
    dial_id = dial_id_of(env)
    status = str(env.payload.get("CallStatus", ""))
    if dial_id is None or env.type != "call-status" or status not in policy.FINAL_STATUSES:
        return "live"
    if not config.outbound_table:
        return "OUTBOUND_TABLE not configured"
    outbound = get_outbound_store(config.outbound_table, config.aws_endpoint_url)
    item: dict[str, Any] | None = outbound.get_dial(dial_id)
    if item is None:
        return "unknown dial"
    answered_by = env.payload.get("AnsweredBy") or item.get("answered_by")
    result = policy.outcome(status, answered_by if isinstance(answered_by, str) else None)
    expires_at = int(now) + config.call_record_retention_days * 86_400
    if env.call_sid and answered_by:
        records.apply_report(env.call_sid, {"answered_by": answered_by}, expires_at)
    queue = (
        get_dialer_queue(config.dialer_queue_url, config.aws_endpoint_url)
        if config.dialer_queue_url
        else None
    )
    sinks = Sinks(outbound, records, queue, config.call_record_retention_days)
    applied = conclude(sinks, DialPlan.from_item(item), env.call_sid, result, now)
    return result if applied else f"{result} (already applied)"
