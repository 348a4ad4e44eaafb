"""The event fallbacks: the worker's async invoke, the spool, the replay, and the worker's side."""

import asyncio
import json
import time

import pytest

from functions import aws, outbox, worker
from functions.events import EventQueue, twilio_event
from functions.storage import Store
from tests.functions.conftest import CALL_SID, FakeContext, twilio_post, voice_params


def _envelope(status: str = "completed", sequence: str = "5"):
    params = voice_params(CallStatus=status, SequenceNumber=sequence)
    return twilio_event(params, time.time())


class FailingQueue(EventQueue):
    def __init__(self) -> None:
        super().__init__("https://sqs.example/q", "http://127.0.0.1:9")
        self.fail = True
        self.sent: list[str] = []

    def send(self, body: str) -> None:
        if self.fail:
            raise ConnectionError("SQS unreachable")
        self.sent.append(body)


class FakeLambda:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.invokes: list[dict] = []

    def invoke(self, **kwargs):
        if self.fail:
            raise ConnectionError("Lambda unreachable")
        self.invokes.append(kwargs)
        return {"StatusCode": 202}


@pytest.fixture
def fake_lambda(monkeypatch):
    fake = FakeLambda()
    real = aws.client

    def client(service, endpoint_url, budget=aws.WEBHOOK):
        return fake if service == "lambda" else real(service, endpoint_url, budget)

    monkeypatch.setattr(aws, "client", client)
    return fake


def _put(box: outbox.Outbox, envelope) -> outbox.Route:
    return asyncio.run(box.put(envelope, aws.Deadline.after(2.0)))


def test_clients_carry_their_budget():
    config = aws.client("dynamodb", "http://127.0.0.1:9", aws.WEBHOOK).meta.config
    assert (config.connect_timeout, config.read_timeout) == (0.5, 1.0)
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    worker_config = aws.client("dynamodb", "http://127.0.0.1:9", aws.WORKER).meta.config
    assert worker_config.retries["total_max_attempts"] == 3


def test_a_step_takes_only_its_share_of_the_deadline():
    deadline = aws.Deadline.after(3.0)
    assert 0.9 < deadline.within(1.0).remaining() <= 1.0
    assert deadline.within(10.0) == deadline


def test_sqs_refused_goes_to_the_worker_invoke(tmp_path, fake_lambda):
    queue = FailingQueue()
    box = outbox.Outbox(queue, outbox.Spool(tmp_path), "voicebridge-worker")
    envelope = _envelope()
    assert _put(box, envelope) is outbox.Route.WORKER
    (call,) = fake_lambda.invokes
    assert call["FunctionName"] == "voicebridge-worker"
    assert call["InvocationType"] == "Event"  # Lambda's own durable queue, not a wait
    assert json.loads(call["Payload"]) == {"deferred": json.loads(envelope.to_json())}
    assert outbox.Spool(tmp_path).count() == 0


def test_invoke_refused_too_goes_to_the_spool_then_replays_in_order(tmp_path, fake_lambda):
    fake_lambda.fail = True
    queue = FailingQueue()
    spool = outbox.Spool(tmp_path)
    box = outbox.Outbox(queue, spool, "voicebridge-worker")
    first, second = _envelope("ringing", "1"), _envelope("completed", "2")
    assert _put(box, first) is outbox.Route.SPOOLED
    assert _put(box, second) is outbox.Route.SPOOLED
    assert [p.name.startswith(".") for p in tmp_path.iterdir()] == [False, False]  # no partials
    queue.fail = False
    third = _envelope("completed", "3")
    assert _put(box, third) is outbox.Route.QUEUED
    assert [json.loads(b)["key"] for b in queue.sent] == [third.key, first.key, second.key]
    assert spool.count() == 0


def test_a_full_spool_is_not_accepted_and_the_route_says_503(aws, monkeypatch):
    def refused(self, body):
        raise ConnectionError("SQS unreachable")

    def full(self, body):
        raise outbox.NotAccepted("spool full")

    monkeypatch.setattr(EventQueue, "send", refused)
    monkeypatch.setattr(outbox.Spool, "put", full)
    params = voice_params(CallStatus="completed", SequenceNumber="9")
    assert twilio_post("/twilio/status", params)["statusCode"] == 503


def test_the_worker_applies_a_deferred_envelope_once(aws):
    envelope = json.loads(_envelope("completed", "6").to_json())
    assert worker.handler({"deferred": envelope}, FakeContext()) == {"outcome": "applied"}
    assert worker.handler({"deferred": envelope}, FakeContext()) == {"outcome": "applied"}
    call = Store(aws.env["SESSIONS_TABLE"]).get_call(CALL_SID, time.time())
    assert call["call_status"] == "completed"
    assert len(call["timeline"]) == 1


def test_the_worker_reads_a_deferred_envelope_redriven_from_the_dlq(aws):
    """After its retries Lambda puts the invoke in the DLQ wrapped in a destination record."""
    envelope = json.loads(_envelope("busy", "7").to_json())
    record = {
        "version": "1.0",
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": {"deferred": envelope},
        "responsePayload": {"errorMessage": "DynamoDB unreachable"},
    }
    event = {
        "Records": [
            {"messageId": "m1", "receiptHandle": "r", "body": json.dumps(record), "attributes": {}}
        ]
    }
    assert worker.handler(event, FakeContext()) == {"batchItemFailures": []}
    call = Store(aws.env["SESSIONS_TABLE"]).get_call(CALL_SID, time.time())
    assert call["call_status"] == "busy"


def test_a_failing_deferred_envelope_raises_so_lambda_retries(aws, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("DynamoDB unreachable")

    monkeypatch.setattr(Store, "put_event", down)
    envelope = json.loads(_envelope("completed", "8").to_json())
    with pytest.raises(ConnectionError):
        worker.handler({"deferred": envelope}, FakeContext())
