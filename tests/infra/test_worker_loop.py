"""The local SQS -> worker loop behaves like Lambda's event source mapping."""

import json

import boto3
import pytest

from infra.local_aws import embedded_aws
from infra.worker_loop import WorkerLoop


@pytest.fixture(scope="module")
def aws():
    with embedded_aws(prefix="wl") as env:
        yield env


def test_batch_shape_partial_failures_and_redelivery(aws):
    sqs = boto3.client("sqs", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1")
    queue = aws["EVENTS_QUEUE_URL"]
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "0"})
    for n in range(3):
        sqs.send_message(
            QueueUrl=queue,
            MessageBody=json.dumps({"n": n}),
            MessageAttributes={"source": {"DataType": "String", "StringValue": "test"}},
        )
    seen = []

    def handler(event, context):
        assert context.get_remaining_time_in_millis() > 0
        seen.extend(event["Records"])
        failed = [r for r in event["Records"] if json.loads(r["body"])["n"] == 1]
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in failed]}

    loop = WorkerLoop(sqs, queue, handler, wait_seconds=0)
    total_ok, total_failed = 0, 0
    while total_ok + total_failed < 3:
        ok, failed = loop.poll_once()
        total_ok, total_failed = total_ok + ok, total_failed + failed
    assert (total_ok, total_failed) == (2, 1)
    record = seen[0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith("wl-EventsQueue")
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"]["source"]["stringValue"] == "test"
    assert record["md5OfBody"]
    # The failed message was not deleted: it comes back with a higher receive count.
    seen.clear()
    while not seen:
        loop.poll_once()
    assert json.loads(seen[0]["body"]) == {"n": 1}
    assert int(seen[0]["attributes"]["ApproximateReceiveCount"]) >= 2


def test_a_crashing_handler_fails_the_whole_batch(aws):
    sqs = boto3.client("sqs", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1")
    queue = aws["EVENTS_QUEUE_URL"]
    sqs.purge_queue(QueueUrl=queue)
    sqs.send_message(QueueUrl=queue, MessageBody="{}")

    def handler(event, context):
        raise RuntimeError("boom")

    loop = WorkerLoop(sqs, queue, handler, wait_seconds=1)
    assert loop.poll_once() == (0, 1)


def test_the_loop_plays_the_worker_or_the_dialer_and_says_what_it_lacks(capsys, monkeypatch):
    from infra.worker_loop import main

    assert main(["mailer"]) == 2
    assert "usage: python -m infra.worker_loop [worker|dialer]" in capsys.readouterr().err
    for name in ("TWILIO_AUTH_TOKEN", "SESSIONS_TABLE", "OUTBOUND_TABLE", "DIALER_QUEUE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["dialer"]) == 2
    assert "dialer: TWILIO_AUTH_TOKEN is required for the dialer" in capsys.readouterr().err
