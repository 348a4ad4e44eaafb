"""The campaign dialer (``functions.dialer.handler``): SQS ticks in, calls placed.

Each batch wakes each campaign it names once (ten ticks for one campaign are one run); a run is
``functions.outbound.pump`` with this invocation's time as its budget. No state lives here: a
run that crashes leaves its tick to be redelivered and its contacts to their leases, so a killed
invocation loses nothing, and a redelivered tick dials nothing twice (conditional writes).
A tick whose ``at`` is still more than a second away (a wait longer than SQS's 900 s delay) is
sent on again with the rest of the wait instead.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from functions import snapstart
from functions.observability import MetricUnit, logger_for, metrics_for
from functions.outbound.pump import Pump, TwilioAccount
from functions.outbound.queue import DialerQueue, Tick, TickError, get_dialer_queue
from functions.outbound.results import Sinks
from functions.outbound.store import get_outbound_store
from functions.storage import get_store
from voicebridge import telemetry, twilio_calls
from voicebridge.config import Settings, get_settings, running_in_lambda

logger = logger_for(telemetry.SERVICE_DIALER)
metrics = metrics_for(telemetry.SERVICE_DIALER)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
snapstart.register()  # SnapStart: warm before the snapshot, re-read secrets after a restore
MAX_RUN_SECONDS = 40.0
RESERVE_SECONDS = 15.0  # left for the follow-up writes and the batch response


@cache
def _http() -> Any:
    return twilio_calls.new_client()


def _queue(config: Settings) -> DialerQueue:
    return get_dialer_queue(config.dialer_queue_url or "", config.aws_endpoint_url)


def _pump(config: Settings) -> Pump:
    outbound = get_outbound_store(config.outbound_table or "", config.aws_endpoint_url)
    records = get_store(config.sessions_table or "", config.aws_endpoint_url)
    account = TwilioAccount(
        _http(),
        config.twilio_api_base,
        config.twilio_account_sid or "",
        config.twilio_auth_token or "",
    )
    return Pump(
        store=outbound,
        twilio=account,
        sinks=Sinks(outbound, records, _queue(config), config.call_record_retention_days),
        check_after_s=config.dialer_reconcile_seconds,
        logger=logger,
        on_dial=lambda: metrics.add_metric(
            name=telemetry.CALLS_DIALED, unit=MetricUnit.Count, value=1
        ),
        on_dial_error=lambda reason: metrics.add_metric(
            name=telemetry.DIAL_ERRORS, unit=MetricUnit.Count, value=1
        ),
    )


def _budget(context: Any) -> float:
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return MAX_RUN_SECONDS
    remaining = context.get_remaining_time_in_millis() / 1000 - RESERVE_SECONDS
    return max(0.0, min(MAX_RUN_SECONDS, remaining))


def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    """Lambda entry point for the dialer queue (partial batch responses)."""
    config = get_settings("dialer")
    ticks: dict[str, Tick] = {}
    runs: set[str] = set()
    now = time.time()
    for record in event.get("Records", []):
        try:
            tick = Tick.from_json(SQSRecord(record).body)
        except TickError:
            continue  # not ours and never will be: drop it rather than redrive it forever
        ticks[record["messageId"]] = tick
        if tick.at is not None and tick.at > now + 1:
            continue  # forwarded below
        runs.add(tick.campaign_id)
    budget = _budget(context)
    outcomes: dict[str, Exception | None] = {}
    for campaign_id in sorted(runs):
        try:
            reason = _pump(config).run(campaign_id, budget)
            logger.info("dialer run", extra={"campaignId": campaign_id, "result": reason})
            outcomes[campaign_id] = None
        except Exception as exc:
            logger.exception("dialer run failed", extra={"campaignId": campaign_id})
            outcomes[campaign_id] = exc

    def settle(record: SQSRecord) -> None:
        tick = ticks.get(record.message_id)
        if tick is None:
            return
        if tick.at is not None and tick.at > now + 1:
            _queue(config).tick(tick.campaign_id, tick.at - now, tick.at)
            return
        failure = outcomes.get(tick.campaign_id)
        if failure is not None:
            raise failure  # this tick is redelivered after the visibility timeout

    try:
        return process_partial_response(
            event=event, record_handler=settle, processor=processor, context=context
        )
    finally:
        if metrics.metric_set:  # a run that dialled nothing has nothing to report
            metrics.flush_metrics()


if running_in_lambda():
    get_settings("dialer")
