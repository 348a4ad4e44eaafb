"""What Lambda's SQS event source does, for the local stack: ``python -m infra.worker_loop``.

Long-poll the events queue, hand each batch to the real ``functions.worker.handler`` as an
SQS-shaped event, delete what succeeded and leave the ``batchItemFailures`` in the queue, where
the visibility timeout and the redrive policy (maxReceiveCount -> DLQ) take over exactly as in
AWS. Runs as its own process, like a Lambda function, so it shares no in-process state (e.g.
Powertools metrics) with the API.

It also plays the part the Lambda service's async-invoke queue plays in AWS for events the API
could not queue (``functions.outbox``): whenever SQS answers, it moves the API's spooled events
into the queue. When the embedded AWS stops answering, the loop waits and tries again rather
than dying, as Lambda's poller would.
"""

from __future__ import annotations

import importlib
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import boto3

from functions import aws, outbox
from functions.events import EventQueue
from infra.local_aws import REGION
from voicebridge.config import ConfigError, load_settings

Handler = Callable[[dict[str, Any], Any], Mapping[str, Any]]
BATCH_SIZE = 10
TIMEOUT_MS = 30_000  # the worker function's timeout in template.yaml
RETRY_SECONDS = 1.0  # after the endpoint failed to answer


@dataclass
class LambdaContext:
    """The attributes Powertools reads from a Lambda context."""

    function_name: str = "voicebridge-worker-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = (
        f"arn:aws:lambda:{REGION}:000000000000:function:voicebridge-worker-local"
    )
    log_group_name: str = "/aws/lambda/voicebridge-worker-local"
    log_stream_name: str = "local"
    deadline: float = field(default_factory=lambda: time.monotonic() + TIMEOUT_MS / 1000)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def _attribute(value: dict[str, Any]) -> dict[str, Any]:
    """SQS API attribute shape -> Lambda event shape (camelCase keys)."""
    return {
        "stringValue": value.get("StringValue"),
        "binaryValue": value.get("BinaryValue"),
        "stringListValues": value.get("StringListValues", []),
        "binaryListValues": value.get("BinaryListValues", []),
        "dataType": value.get("DataType", "String"),
    }


def to_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """ReceiveMessage output -> the event Lambda's SQS integration delivers."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": dict(message.get("Attributes", {})),
                "messageAttributes": {
                    name: _attribute(value)
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for message in messages
        ]
    }


class WorkerLoop:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: Handler,
        wait_seconds: int = 1,
        spool: outbox.Spool | None = None,
        context: Callable[..., LambdaContext] = LambdaContext,
        timeout_ms: int = TIMEOUT_MS,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.wait_seconds = wait_seconds
        self.spool = spool
        self._queue = EventQueue(queue_url, client=sqs)
        self._queue_arn: str | None = None
        self.context = context
        self.timeout_ms = timeout_ms
        self.stopping = False

    @property
    def queue_arn(self) -> str:
        if self._queue_arn is None:
            self._queue_arn = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
        return self._queue_arn

    def drain_spool(self) -> int:
        """Move the API's spooled events into the queue; returns how many went."""
        if self.spool is None:
            return 0
        return outbox.drain(self.spool, self._queue, limit=BATCH_SIZE)

    def poll_once(self) -> tuple[int, int]:
        """Spool drain, then one receive + invoke + delete; returns (succeeded, failed)."""
        self.drain_spool()
        received = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=BATCH_SIZE,
            WaitTimeSeconds=self.wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            return 0, 0
        try:
            deadline = time.monotonic() + self.timeout_ms / 1000
            context = self.context(deadline=deadline)
            result = self.handler(to_event(received, self.queue_arn), context) or {}
            failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        except Exception:  # a crashed invocation: the whole batch is retried, as in Lambda
            failed = {message["MessageId"] for message in received}
        done = [m for m in received if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        return len(done), len(failed)

    def run(self) -> None:
        while not self.stopping:
            try:
                self.poll_once()
            except Exception as exc:  # the endpoint is down or slow: Lambda's poller waits too
                print(f"worker: {type(exc).__name__}: {exc}; retrying", file=sys.stderr)
                time.sleep(RETRY_SECONDS)


# Which function the loop plays: its settings role, queue and handler, and its Lambda timeout
# (template.yaml).
FUNCTIONS = {
    "worker": ("events_queue_url", "functions.worker", 30_000),
    "dialer": ("dialer_queue_url", "functions.dialer", 60_000),
}


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.worker_loop [worker|dialer]`` (default: the worker)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        print("usage: python -m infra.worker_loop [worker|dialer]\n\n" + (__doc__ or ""), end="")
        return 0
    name = args[0] if args else "worker"
    if name not in FUNCTIONS:
        print(f"usage: python -m infra.worker_loop [{'|'.join(FUNCTIONS)}]", file=sys.stderr)
        return 2
    queue_field, module, timeout_ms = FUNCTIONS[name]
    try:
        settings = load_settings(name)  # type: ignore[arg-type]
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    queue_url = getattr(settings, queue_field)
    if not queue_url:
        print(f"{name}: {queue_field.upper()} is required for the local loop", file=sys.stderr)
        return 2
    handler = importlib.import_module(module).handler

    sqs = boto3.session.Session().client(
        "sqs",
        endpoint_url=settings.aws_endpoint_url,
        region_name=REGION,
        config=aws.WORKER.config(),  # bounded: a paused endpoint must not hang the loop
    )
    context = partial(LambdaContext, function_name=f"voicebridge-{name}-local")
    # The API spools the events SQS refused (functions/outbox.py): the worker's loop drains them.
    spool = outbox.spool_for(settings) if name == "worker" else None
    loop = WorkerLoop(sqs, queue_url, handler, spool=spool, context=context, timeout_ms=timeout_ms)

    def stop(*_: object) -> None:
        loop.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    loop.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
