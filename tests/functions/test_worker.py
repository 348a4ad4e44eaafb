import itertools
import json
import time

import pytest

from functions import worker
from functions.events import Envelope, twilio_event, vapi_event
from functions.storage import Store
from tests.functions.conftest import (
    ADMIN_KEY,
    CALL_SID,
    FakeContext,
    apigw_event,
    invoke,
    response_body,
)

TS = "Sat, 21 Nov 2026 21:00:{:02d} +0000"


def _record(body: str, message_id: str) -> dict:
    return {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:test-EventsQueue",
        "awsRegion": "us-east-1",
    }


def _batch(*envelopes: Envelope | str) -> dict:
    bodies = [e if isinstance(e, str) else e.to_json() for e in envelopes]
    return {"Records": [_record(b, f"m{i}") for i, b in enumerate(bodies)]}


def _run(event: dict) -> dict:
    return worker.handler(event, FakeContext())


def _status(status: str, seq: int, call_sid: str = CALL_SID) -> Envelope:
    params = {
        "CallSid": call_sid,
        "CallStatus": status,
        "SequenceNumber": str(seq),
        "Timestamp": TS.format(seq),
    }
    return twilio_event(params, received_at=1_000.0 + seq)


def _call(aws, call_sid: str = CALL_SID) -> dict | None:
    return Store(aws.env["SESSIONS_TABLE"]).get_call(call_sid, time.time())


def test_status_timeline_and_final_state(aws):
    result = _run(_batch(_status("initiated", 0), _status("ringing", 1), _status("in-progress", 2)))
    assert result == {"batchItemFailures": []}
    _run(_batch(_status("completed", 3)))
    call = _call(aws)
    assert call["call_status"] == "completed"
    assert [e["status"] for e in call["timeline"]] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]


@pytest.mark.parametrize("order", list(itertools.permutations(range(4)))[::5])
def test_out_of_order_and_duplicate_callbacks_give_the_same_record(aws, order):
    events = [
        _status("ringing", 1),
        _status("in-progress", 2),
        _status("completed", 4),
        _status("failed", 3),
    ]
    shuffled = [events[i] for i in order]
    _run(_batch(*shuffled))
    _run(_batch(*reversed(shuffled)))  # Twilio retries: all again
    call = _call(aws)
    # completed and failed are both terminal: the higher SequenceNumber wins, not arrival order.
    assert call["call_status"] == "completed"
    assert call["status_seq"] == 4
    assert [e["status"] for e in call["timeline"]] == [
        "ringing",
        "in-progress",
        "failed",
        "completed",
    ]


def test_redelivered_event_has_one_effect(aws):
    envelope = _status("completed", 5)
    first = _run(_batch(envelope))
    second = _run(_batch(envelope, envelope))
    assert first == second == {"batchItemFailures": []}
    call = _call(aws)
    assert len(call["timeline"]) == 1
    idempotency = aws.dynamodb.scan(TableName=aws.env["IDEMPOTENCY_TABLE"])["Items"]
    assert len(idempotency) == 1
    assert idempotency[0]["status"]["S"] == "COMPLETED"


def test_conditional_writes_hold_even_without_the_idempotency_layer(aws):
    """A duplicate that slips past idempotency (e.g. its record expired) changes nothing."""
    for envelope in (_status("completed", 4), _status("in-progress", 2), _status("completed", 4)):
        worker.apply_event(json.loads(envelope.to_json()))
    call = _call(aws)
    assert call["call_status"] == "completed"
    assert len(call["timeline"]) == 2


def test_completed_call_shortens_the_session(aws):
    store = Store(aws.env["SESSIONS_TABLE"])
    now = time.time()
    store.put_session(CALL_SID, "+1", "+2", "asst", now, 14_400)
    _run(_batch(_status("completed", 3)))
    item = aws.dynamodb.get_item(
        TableName=aws.env["SESSIONS_TABLE"],
        Key={"pk": {"S": f"CALL#{CALL_SID}"}, "sk": {"S": "SESSION"}},
    )["Item"]
    assert int(item["expires_at"]["N"]) <= now + 301
    assert "ended_at" in item


def _report(**fields) -> dict:
    return {
        "type": "end-of-call-report",
        "call": {"id": "vapi-1", "phoneCallProviderId": CALL_SID},
        **fields,
    }


def test_end_of_call_report_current_shape(aws):
    message = _report(
        endedReason="customer-ended-call",
        artifact={
            "transcript": "AI: Hi\nUser: Bye",
            # #/components/schemas/Artifact.recording (Recording, Mono)
            "recording": {
                "stereoUrl": "https://rec/stereo.wav",
                "mono": {
                    "combinedUrl": "https://rec/mono.wav",
                    "assistantUrl": "https://rec/assistant.wav",
                    "customerUrl": "https://rec/customer.wav",
                },
            },
            "messages": [],
        },
        analysis={"summary": "Caller said bye.", "successEvaluation": "true"},
        cost=0.0123,
        startedAt="2026-11-21T21:00:00.000Z",
        endedAt="2026-11-21T21:01:30.500Z",
    )
    assert _run(_batch(vapi_event(message, 2_000.0))) == {"batchItemFailures": []}
    call = _call(aws)
    assert call["ended_reason"] == "customer-ended-call"
    assert call["transcript"] == "AI: Hi\nUser: Bye"
    assert call["summary"] == "Caller said bye."
    assert call["recording_url"] == "https://rec/mono.wav"
    assert call["stereo_recording_url"] == "https://rec/stereo.wav"
    assert call["cost"] == 0.0123
    assert call["duration_seconds"] == 90.5
    assert call["vapi_call_id"] == "vapi-1"
    assert call["timeline"][0]["kind"] == "vapi.end-of-call-report"


def test_end_of_call_report_deprecated_artifact_urls(aws):
    # Artifact.recordingUrl / stereoRecordingUrl are deprecated but still sent by some payloads.
    message = _report(
        artifact={
            "recordingUrl": "https://rec/old-mono.wav",
            "stereoRecordingUrl": "https://rec/old-stereo.wav",
            "recording": {"mono": {"assistantUrl": "https://rec/assistant.wav"}},
        }
    )
    _run(_batch(vapi_event(message, 2_000.0)))
    call = _call(aws)
    assert call["recording_url"] == "https://rec/old-mono.wav"
    assert call["stereo_recording_url"] == "https://rec/old-stereo.wav"


def test_end_of_call_report_prefers_the_current_recording_fields(aws):
    message = _report(
        artifact={
            "recordingUrl": "https://rec/old-mono.wav",
            "stereoRecordingUrl": "https://rec/old-stereo.wav",
            "recording": {
                "stereoUrl": "https://rec/stereo.wav",
                "mono": {"combinedUrl": "https://rec/mono.wav"},
            },
        }
    )
    _run(_batch(vapi_event(message, 2_000.0)))
    call = _call(aws)
    assert (call["recording_url"], call["stereo_recording_url"]) == (
        "https://rec/mono.wav",
        "https://rec/stereo.wav",
    )


def test_end_of_call_report_legacy_top_level_shape(aws):
    message = _report(
        endedReason="assistant-ended-call",
        transcript="legacy transcript",
        summary="legacy summary",
        recordingUrl="https://rec/legacy.wav",
        durationSeconds=42,
    )
    _run(_batch(vapi_event(message, 2_000.0)))
    call = _call(aws)
    assert call["transcript"] == "legacy transcript"
    assert call["summary"] == "legacy summary"
    assert call["recording_url"] == "https://rec/legacy.wav"
    assert call["duration_seconds"] == 42


def test_report_delivered_twice_is_one_entry(aws):
    message = _report(endedReason="customer-ended-call", artifact={}, analysis={})
    _run(_batch(vapi_event(message, 1.0)))
    _run(_batch(vapi_event(message, 99.0)))  # Vapi resent it later
    assert len(_call(aws)["timeline"]) == 1


def test_vapi_status_updates_and_stream_events_join_the_timeline(aws):
    status = {
        "type": "status-update",
        "status": "ended",
        "endedReason": "customer-ended-call",
        "timestamp": 1_795_290_000_000,
        "call": {"id": "v1", "metadata": {"callSid": CALL_SID}},
    }
    stream = twilio_event(
        {
            "CallSid": CALL_SID,
            "StreamSid": "MZ1",
            "StreamEvent": "stream-started",
            "Timestamp": TS.format(1),
        },
        5.0,
    )
    chatter = vapi_event({"type": "transcript", "call": {"id": "v1"}, "transcript": "hi"}, 6.0)
    assert _run(_batch(vapi_event(status, 7.0), stream, chatter)) == {"batchItemFailures": []}
    kinds = {e["kind"]: e for e in _call(aws)["timeline"]}
    assert kinds["vapi.status-update"]["endedReason"] == "customer-ended-call"
    assert kinds["twilio.stream"]["event"] == "stream-started"
    assert set(kinds) == {"vapi.status-update", "twilio.stream"}


def test_partial_batch_failure_reports_only_the_bad_records(aws, monkeypatch, capfd):
    real = worker.apply_event

    def flaky(event):
        if event["payload"].get("CallStatus") == "busy":
            raise RuntimeError("transient")
        return real(event)

    monkeypatch.setattr(worker, "apply_event", flaky)
    worker._idempotent_apply.cache_clear()
    try:
        batch = _batch(
            _status("ringing", 1), "not json", _status("busy", 2), _status("in-progress", 3)
        )
        result = _run(batch)
    finally:
        worker._idempotent_apply.cache_clear()
    assert result == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]}
    assert [e["status"] for e in _call(aws)["timeline"]] == ["ringing", "in-progress"]
    out = capfd.readouterr().out
    assert '"EventsFailed":[1.0,1.0]' in out
    assert '"EventsProcessed":[1.0,1.0]' in out


def test_failed_event_can_be_retried_after_the_failure(aws, monkeypatch):
    """Idempotency must not remember a failure as done."""
    real = worker.apply_event
    calls = {"n": 0}

    def fails_once(event):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transient")
        return real(event)

    monkeypatch.setattr(worker, "apply_event", fails_once)
    worker._idempotent_apply.cache_clear()
    try:
        envelope = _status("completed", 3)
        assert _run(_batch(envelope))["batchItemFailures"]
        assert _run(_batch(envelope)) == {"batchItemFailures": []}
    finally:
        worker._idempotent_apply.cache_clear()
    assert _call(aws)["call_status"] == "completed"


def test_poison_message_lands_in_the_dlq_after_max_receive_count(aws):
    """Real SQS semantics (moto): receive without delete > maxReceiveCount times -> DLQ."""
    sqs, queue, dlq = aws.sqs, aws.env["EVENTS_QUEUE_URL"], aws.env["EVENTS_DLQ_URL"]
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "0"})
    sqs.send_message(QueueUrl=queue, MessageBody='{"v": 1, "source": "fax"}')
    sqs.send_message(QueueUrl=queue, MessageBody=_status("completed", 3).to_json())
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["RedrivePolicy"])["Attributes"][
            "RedrivePolicy"
        ]
    )
    receives = 0
    for _ in range(redrive["maxReceiveCount"] + 2):
        messages = sqs.receive_message(
            QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            continue
        receives += 1
        event = {
            "Records": [
                _record(m["Body"], m["MessageId"]) | {"receiptHandle": m["ReceiptHandle"]}
                for m in messages
            ]
        }
        failed = {f["itemIdentifier"] for f in _run(event)["batchItemFailures"]}
        for m in messages:  # what Lambda's event source mapping does with a partial response
            if m["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    assert receives == redrive["maxReceiveCount"]
    dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert [m["Body"] for m in dead] == ['{"v": 1, "source": "fax"}']
    assert sqs.receive_message(QueueUrl=queue).get("Messages", []) == []
    assert _call(aws)["call_status"] == "completed"


def test_call_record_is_served_by_the_admin_api(aws):
    Store(aws.env["SESSIONS_TABLE"]).put_session(CALL_SID, "+1", "+2", "asst", time.time(), 600)
    _run(_batch(_status("in-progress", 2), _status("completed", 3)))
    message = _report(endedReason="customer-ended-call", artifact={"transcript": "t"}, analysis={})
    _run(_batch(vapi_event(message, 9.0)))
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    result = invoke(apigw_event("GET", f"/calls/{CALL_SID}", headers=headers))
    assert result["statusCode"] == 200
    record = json.loads(response_body(result))
    assert record["callSid"] == CALL_SID
    assert record["call_status"] == "completed"
    assert record["ended_reason"] == "customer-ended-call"
    assert record["session"]["assistant_id"] == "asst"
    assert len(record["timeline"]) == 3
    missing = invoke(apigw_event("GET", "/calls/CA404", headers=headers))
    assert missing["statusCode"] == 404


def _comparable(call: dict) -> dict:
    """A call record without what legitimately differs between two calls (ids, retention)."""
    return {k: v for k, v in call.items() if k not in {"callSid", "call_sid", "expires_at"}}


def test_every_arrival_order_builds_the_identical_record(aws):
    statuses = [("initiated", 0), ("ringing", 1), ("in-progress", 2), ("completed", 3)]
    records = []
    orders = list(itertools.permutations(statuses))[::4]  # 6 of 24, first and last included
    orders.append(orders[0][::-1])
    for n, order in enumerate(orders):
        sid = f"CA{n:032d}"
        deliveries = [_status(s, q, sid) for s, q in order]
        _run(_batch(*deliveries, deliveries[0]))  # plus one duplicate in the same batch
        records.append(_comparable(_call(aws, sid)))
    assert len(records) == 7
    assert all(record == records[0] for record in records)
    assert records[0]["call_status"] == "completed"


def _stream(event: str, seq: int, call_sid: str = CALL_SID) -> Envelope:
    params = {
        "AccountSid": "AC" + "1" * 32,
        "CallSid": call_sid,
        "StreamSid": "MZ" + "2" * 32,
        "StreamName": "MZ" + "2" * 32,
        "StreamEvent": event,
        "Timestamp": f"2026-11-21T21:00:{seq:02d}.000Z",  # <Stream> callbacks: ISO 8601
    }
    return twilio_event(params, received_at=1_000.0 + seq)


def test_stream_started_marks_the_call_in_progress(aws):
    """Twilio posts no in-progress callback for an inbound call: stream-started says it."""
    _run(_batch(_stream("stream-started", 1)))
    call = _call(aws)
    assert call["call_status"] == "in-progress"
    assert [e["kind"] for e in call["timeline"]] == ["twilio.stream"]


def test_what_a_real_inbound_call_sends_builds_one_record_in_any_order(aws):
    """stream-started, stream-stopped, then the one final callback (SequenceNumber 0)."""
    deliveries = [
        _stream("stream-started", 1),
        _stream("stream-stopped", 9),
        _status("completed", 0),
    ]
    records = []
    for n, order in enumerate(itertools.permutations(deliveries)):
        sid = f"CA{n:032d}"
        rebound = [twilio_event({**e.payload, "CallSid": sid}, e.received_at) for e in order]
        _run(_batch(*rebound, rebound[0]))  # plus one retry in the same batch
        records.append(_comparable(_call(aws, sid)))
    assert all(record == records[0] for record in records)
    assert records[0]["call_status"] == "completed"
    assert records[0]["status_seq"] == 0
    assert [e["kind"] for e in records[0]["timeline"]] == [
        "twilio.call-status",  # its Timestamp (second 0) sorts first
        "twilio.stream",
        "twilio.stream",
    ]


def test_worker_log_lines_carry_the_call_sid(aws, log_lines):
    _run(_batch(_status("ringing", 1), _status("completed", 2, "CA" + "7" * 32)))
    applied = [line for line in log_lines() if line["message"] == "event applied"]
    assert [line["callSid"] for line in applied] == [CALL_SID, "CA" + "7" * 32]


def test_expired_items_are_ignored_on_read(aws):
    store = Store(aws.env["SESSIONS_TABLE"])
    store.put_session(CALL_SID, "+1", "+2", "asst", time.time() - 1000, 60)  # expired, not deleted
    assert store.get_session(CALL_SID, time.time()) is None
    assert store.get_call(CALL_SID, time.time()) is None
    store.put_session(CALL_SID, "+1", "+2", "asst", time.time(), 60)
    assert store.get_session(CALL_SID, time.time())["assistant_id"] == "asst"


def test_phone_call_control_is_on_the_timeline(aws):
    message = {
        "type": "phone-call-control",
        "request": "forward",
        "destination": {"type": "number", "number": "+14155550100"},
        "call": {"id": "vapi-1", "phoneCallProviderId": CALL_SID},
        "timestamp": 1_795_000_000_000,
    }
    assert _run(_batch(vapi_event(message, 2_000.0))) == {"batchItemFailures": []}
    (entry,) = _call(aws)["timeline"]
    assert entry["kind"] == "vapi.phone-call-control"
    assert entry["request"] == "forward"
