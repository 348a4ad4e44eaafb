"""SQS worker (``functions.worker.handler``): builds call records from queued events.

Exactly-once effect on an at-least-once queue, twice over: Powertools idempotency (DynamoDB,
keyed on the envelope's stable ``key``) skips an event already applied, and every write is
conditional or convergent (timeline entries keyed by event, status moved only forward by
rank then SequenceNumber, report fields SET to the same values), so even a duplicate that slips
past the first layer, or callbacks arriving out of order, end in the same record.
Failed records are reported individually (``ReportBatchItemFailures``); after the queue's
``maxReceiveCount`` SQS moves them to the DLQ.

The same envelopes also arrive by asynchronous invoke (``{"deferred": envelope}``) when the API
could not queue them (``functions.outbox``): a failure then raises, so Lambda retries the invoke
and finally hands it to the DLQ wrapped in its destination record, which this handler unwraps
too, so a DLQ redrive into the events queue works for both. Its DynamoDB client has explicit
timeouts and retries (``aws.WORKER``), bounded inside the function's 30 s.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

from functions import aws, snapstart
from functions.events import Envelope
from functions.observability import MetricUnit, call_context, logger_for, metrics_for
from functions.outbound import status as outbound_status
from functions.storage import MAX_TEXT_CHARS, STATUS_RANK, Store, get_store
from voicebridge import telemetry
from voicebridge.config import Settings, get_settings, running_in_lambda

snapstart.register()  # SnapStart: warm before the snapshot, re-read secrets after a restore
logger = logger_for(telemetry.SERVICE_WORKER)
metrics = metrics_for(telemetry.SERVICE_WORKER)
# A batch that fails entirely is reported item by item like any other (not raised): SQS retries
# exactly the same messages either way, and the local worker loop gets one response shape.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
IDEMPOTENCY = IdempotencyConfig(
    event_key_jmespath="key",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=24 * 3600,  # longer than any Twilio retry or SQS redelivery window
)
TERMINAL = frozenset(s for s, rank in STATUS_RANK.items() if rank == max(STATUS_RANK.values()))
TIMELINE_VAPI = frozenset(
    {"status-update", "hang", "transfer-update", "end-of-call-report", "phone-call-control"}
)


def _epoch(value: Any) -> float | None:
    """ISO 8601 (Vapi) or RFC 2822 (Twilio) -> epoch seconds; None if absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _vapi_time(stamp: Any) -> float | None:
    """Vapi's ``timestamp`` (epoch ms) -> epoch seconds."""
    try:
        return float(stamp) / 1000.0 if stamp else None
    except (TypeError, ValueError):
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _recording_urls(message: dict[str, Any]) -> tuple[Any, Any]:
    """(mono, stereo) recording URLs: ``artifact.recording`` (``#/components/schemas/Recording``:
    ``mono.combinedUrl``, ``stereoUrl``), else the deprecated ``artifact.recordingUrl`` /
    ``stereoRecordingUrl`` (``#/components/schemas/Artifact``), else older top-level ones."""
    artifact = _dict(message.get("artifact"))
    recording = _dict(artifact.get("recording"))
    mono = (
        _dict(recording.get("mono")).get("combinedUrl")
        or artifact.get("recordingUrl")
        or message.get("recordingUrl")
    )
    stereo = (
        recording.get("stereoUrl")
        or artifact.get("stereoRecordingUrl")
        or message.get("stereoRecordingUrl")
    )
    return mono, stereo


def report_fields(message: dict[str, Any]) -> dict[str, Any]:
    """The call-record fields of an end-of-call-report, current and legacy (top-level) shapes."""
    artifact = _dict(message.get("artifact"))
    analysis = _dict(message.get("analysis"))
    call = _dict(message.get("call"))
    started_at = message.get("startedAt") or call.get("startedAt")
    ended_at = message.get("endedAt") or call.get("endedAt")
    duration = message.get("durationSeconds")
    if duration is None:
        start, end = _epoch(started_at), _epoch(ended_at)
        if start is not None and end is not None and end >= start:
            duration = round(end - start, 3)
    transcript = artifact.get("transcript") or message.get("transcript")
    recording_url, stereo_recording_url = _recording_urls(message)
    return {
        "ended_reason": message.get("endedReason") or call.get("endedReason"),
        "transcript": transcript[:MAX_TEXT_CHARS] if isinstance(transcript, str) else None,
        "summary": analysis.get("summary") or message.get("summary"),
        "success_evaluation": analysis.get("successEvaluation"),
        "recording_url": recording_url,
        "stereo_recording_url": stereo_recording_url,
        "cost": message.get("cost"),
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_seconds": duration,
        "vapi_call_id": call.get("id"),
    }


def _apply_twilio(store: Store, env: Envelope, now: float, expires_at: int) -> str:
    params = env.payload
    sid = env.call_sid or ""
    at = _epoch(params.get("Timestamp")) or env.received_at
    if env.type == "stream-status":
        detail = {"event": params.get("StreamEvent"), "streamSid": params.get("StreamSid")}
        if params.get("StreamError"):
            detail["error"] = str(params["StreamError"])[:500]
        store.put_event(sid, env.key, at, "twilio.stream", detail, expires_at)
        if params.get("StreamEvent") == "stream-started":
            _list_from_session(store, sid, at, now, expires_at)
            # Twilio posts no in-progress callback for an inbound call (only the final one:
            # https://www.twilio.com/docs/voice/twiml "Ending the call: callback requests"), but
            # a <Connect><Stream> only starts on an answered call: the record shows it live.
            # Ranked below every final status, so a late delivery never undoes "completed".
            store.apply_status(sid, "in-progress", 0, at, expires_at)
        return "stream"
    status = str(params.get("CallStatus", ""))
    try:
        sequence = int(params.get("SequenceNumber") or 0)
    except ValueError:
        sequence = 0
    detail = {"status": status, "sequence": sequence, "duration": params.get("CallDuration")}
    store.put_event(sid, env.key, at, "twilio.call-status", detail, expires_at)
    # A call /twilio/voice did not list (its session write failed, or it was placed through
    # the REST API) is listed now; its start is the callback's time less the call's length.
    duration = str(params.get("CallDuration") or "")
    created = at - (int(duration) if duration.isdigit() else 0)
    summary = {k.lower(): params.get(k) for k in ("From", "To", "Direction")}
    store.ensure_listed(sid, summary, created, expires_at)
    if status not in STATUS_RANK:
        return "unknown status"
    store.apply_status(sid, status, sequence, at, expires_at)
    if status in TERMINAL:
        store.end_session(sid, now)
    return status


def _list_from_session(store: Store, sid: str, at: float, now: float, expires_at: int) -> None:
    """The calls list's entry for a call that has started streaming: who, which assistant and
    when, from its session (the webhook wrote them); the stream's start if there is none."""
    session = store.get_session(sid, now) or {}
    fields = {k: session.get(k) for k in ("from", "to", "assistant_id", "direction")}
    store.ensure_listed(sid, fields, float(session.get("created_at") or at), expires_at)


def _apply_vapi(store: Store, env: Envelope, now: float, expires_at: int) -> str:
    message = env.payload
    call = _dict(message.get("call"))
    record_id = env.call_sid or call.get("id")
    if env.type not in TIMELINE_VAPI or not record_id:
        return "ignored"
    at = _vapi_time(message.get("timestamp")) or env.received_at
    detail = {
        k: message[k]
        for k in ("status", "endedReason", "request")  # request: phone-call-control's
        if isinstance(message.get(k), str)
    }
    store.put_event(record_id, env.key, at, f"vapi.{env.type}", detail, expires_at)
    if env.type == "end-of-call-report":
        store.apply_report(record_id, report_fields(message), expires_at)
        store.end_session(record_id, now)
    return env.type


def apply_event(event: dict[str, Any]) -> dict[str, str]:
    """Apply one envelope to the call record (wrapped by Powertools idempotency)."""
    env = Envelope.from_dict(event)
    config = get_settings("worker")
    store = get_store(config.sessions_table or "", config.aws_endpoint_url, aws.WORKER)
    now = time.time()
    expires_at = int(now) + config.call_record_retention_days * 86_400
    if env.source == "twilio":
        if not env.call_sid:
            return {"outcome": "no CallSid"}
        outcome = _apply_twilio(store, env, now, expires_at)
        if outbound_status.dial_id_of(env):  # a call we placed: its campaign side
            outcome += f"; outbound: {outbound_status.apply(env, store, config, now)}"
    else:
        outcome = _apply_vapi(store, env, now, expires_at)
    logger.info("event applied", extra={"key": env.key, "outcome": outcome})
    return {"outcome": outcome}


@cache
def _idempotent_apply(table: str, endpoint_url: str | None) -> Any:
    client = aws.client("dynamodb", endpoint_url, aws.WORKER)
    persistence = DynamoDBPersistenceLayer(table_name=table, boto3_client=client)
    return idempotent_function(
        apply_event,
        data_keyword_argument="event",
        persistence_store=persistence,
        config=IDEMPOTENCY,
    )


def _envelope_data(data: Any) -> Any:
    """An envelope as queued, as deferred by the API, or inside Lambda's destination record
    (a deferred one that failed every retry, redriven from the DLQ)."""
    data = _dict(data).get("requestPayload", data)
    return _dict(data).get("deferred", data)


def _apply(event: dict[str, Any], envelope: Envelope) -> None:
    config: Settings = get_settings("worker")
    with call_context(envelope.call_sid):
        try:
            _idempotent_apply(config.idempotency_table or "", config.aws_endpoint_url)(event=event)
        except Exception:
            metrics.add_metric(name=telemetry.EVENTS_FAILED, unit=MetricUnit.Count, value=1)
            logger.exception("event failed", extra={"key": envelope.key})
            raise
    metrics.add_metric(name=telemetry.EVENTS_PROCESSED, unit=MetricUnit.Count, value=1)


def record_handler(record: SQSRecord) -> None:
    try:
        event = _envelope_data(json.loads(record.body))
        envelope = Envelope.from_dict(event)
    except ValueError:
        metrics.add_metric(name=telemetry.EVENTS_FAILED, unit=MetricUnit.Count, value=1)
        logger.error("malformed queue message", extra={"messageId": record.message_id})
        raise
    _apply(event, envelope)


def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse | dict[str, Any]:
    """Lambda entry point: the SQS event source (partial batch responses), or one deferred
    envelope by asynchronous invoke (raises on failure, so Lambda retries it)."""
    if context is not None:
        IDEMPOTENCY.register_lambda_context(context)
    try:
        if "deferred" in event:
            envelope = Envelope.from_dict(event["deferred"])
            _apply(event["deferred"], envelope)
            return {"outcome": "applied"}
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        metrics.flush_metrics()


if running_in_lambda():
    # Fail the Lambda init with one line naming the variable, not every record of a batch.
    get_settings("worker")
