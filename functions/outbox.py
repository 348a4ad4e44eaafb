"""Where an accepted event goes when SQS will not take it, and how it comes back.

No accepted event is lost: a webhook answers 2xx only once its event is in SQS or in one of
these fallbacks, tried in this order within the request's deadline:

1. **SQS**, the normal path.
2. **The worker function's asynchronous invoke** (in AWS: ``WORKER_FUNCTION_NAME`` is set). The
   Lambda service keeps the event in its own durable queue, which depends on neither SQS nor
   DynamoDB, runs the worker with it, retries twice if the worker fails (DynamoDB still down)
   and then delivers it to the DLQ (``EventInvokeConfig`` in template.yaml). The worker applies
   it exactly like an SQS record: same envelope, same idempotency key.
3. **A spool directory on local disk** (``EVENT_SPOOL_DIR``, by default one per queue under the
   system temp dir): one file per envelope, written atomically. Under ``make run`` this is THE
   fallback: one moto server is every AWS service, so when it stops there is no other store to
   turn to, while the disk outlives the outage. The API replays the spool into SQS after its next
   successful send, and the local worker loop (``infra/worker_loop.py``) drains it whenever SQS
   answers. In Lambda the spool is the last resort, and weaker: /tmp belongs to one execution
   environment, its later requests replay it, and it dies with the instance if Lambda retires
   that instance first.

Not chosen: an outbox in DynamoDB for when only SQS is down. Nothing would drain it without a
scheduler or a table stream, and DynamoDB shares SQS's usual failure causes (the network path to
AWS, the local endpoint) far more than the Lambda service does.

A replay can deliver an event twice (a send abandoned at the deadline may still have landed);
the worker's idempotency key makes that harmless. When every fallback fails (the spool is full or
the disk refuses), :class:`NotAccepted` tells the route to answer 503: not accepted, so not lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

from functions import aws
from functions.events import Envelope, EventQueue
from voicebridge.config import Settings

FALLBACK_DEADLINE_S = 1.5  # the async invoke's own deadline: the SQS attempt may have used all
MAX_SPOOL_FILES = 10_000  # x at most 240 KB each, well inside Lambda's 512 MB of /tmp
REPLAY_BATCH = 10  # spooled envelopes a request replays after its own send succeeded


class Route(StrEnum):
    """Where an accepted event went."""

    QUEUED = "sqs"
    WORKER = "worker-invoke"
    SPOOLED = "spool"


class NotAccepted(Exception):
    """SQS, the worker invoke and the spool all refused the event."""


class Spool:
    """Envelopes on local disk, one file each, replayed oldest first.

    Several processes may share the directory (the API and the local worker loop): a file is
    written under a temporary name and renamed into place, so readers never see half of one, and
    two drainers racing on one file at worst send it twice (harmless, see the module docstring).
    """

    SUFFIX = ".json"

    def __init__(self, directory: Path, max_files: int = MAX_SPOOL_FILES) -> None:
        self.directory = directory
        self.max_files = max_files

    def put(self, body: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.count() >= self.max_files:
            raise NotAccepted(f"event spool {self.directory} is full")
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
        partial = self.directory / f".{name}.tmp"
        with partial.open("w", encoding="utf-8") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        final = self.directory / f"{name}{self.SUFFIX}"
        partial.rename(final)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
        return final

    def _names(self) -> Iterator[str]:
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.endswith(self.SUFFIX) and not entry.name.startswith("."):
                        yield entry.name
        except FileNotFoundError:
            return

    def oldest(self, limit: int) -> list[Path]:
        """Up to ``limit`` spooled files, oldest first (names start with a timestamp)."""
        return [self.directory / name for name in sorted(self._names())[:limit]]

    def count(self) -> int:
        return sum(1 for _ in self._names())

    def has_pending(self) -> bool:
        return next(self._names(), None) is not None


def spool_for(config: Settings) -> Spool:
    """``EVENT_SPOOL_DIR``, else one directory per queue under the system temp dir (/tmp in
    Lambda): the API and the local worker loop find the same one from the same configuration."""
    if config.event_spool_dir:
        return Spool(Path(config.event_spool_dir))
    digest = hashlib.sha256((config.events_queue_url or "").encode()).hexdigest()[:16]
    return Spool(Path(tempfile.gettempdir()) / f"voicebridge-spool-{digest}")


class Outbox:
    """SQS first, then the fallbacks above; replays the spool once SQS answers again."""

    def __init__(
        self,
        queue: EventQueue,
        spool: Spool,
        worker_function: str | None = None,
        lambda_endpoint_url: str | None = None,
    ) -> None:
        self.queue = queue
        self.spool = spool
        self.worker_function = worker_function
        self._lambda = aws.Dependency("lambda", lambda_endpoint_url)

    async def put(self, envelope: Envelope, deadline: aws.Deadline) -> Route:
        """Accept ``envelope`` somewhere durable; :class:`NotAccepted` if nowhere would take it."""
        body = envelope.to_json()
        try:
            await aws.call(deadline, self.queue.dependency, self.queue.send, body)
        except Exception as queue_error:
            return await self._fallback(body, queue_error)
        if self.spool.has_pending():
            await self.replay(deadline)
        return Route.QUEUED

    async def _fallback(self, body: str, queue_error: Exception) -> Route:
        if self.worker_function:
            try:
                await aws.call(
                    aws.Deadline.after(FALLBACK_DEADLINE_S), self._lambda, self._invoke, body
                )
            except Exception:  # noqa: S110 - the spool below is the answer to this failure
                pass
            else:
                return Route.WORKER
        try:
            self.spool.put(body)
        except (OSError, NotAccepted) as exc:
            raise NotAccepted(f"queue: {queue_error!r}; spool: {exc!r}") from exc
        return Route.SPOOLED

    def _invoke(self, body: str) -> None:
        client = aws.client("lambda", self._lambda.endpoint_url, aws.FALLBACK)
        payload = json.dumps({"deferred": json.loads(body)}, separators=(",", ":"))
        client.invoke(FunctionName=self.worker_function, InvocationType="Event", Payload=payload)

    async def replay(self, deadline: aws.Deadline, limit: int = REPLAY_BATCH) -> int:
        """Send up to ``limit`` spooled envelopes to SQS, oldest first; stop at the first
        failure (they stay for the next try). Returns how many left the spool."""
        sent = 0
        for path in self.spool.oldest(limit):
            try:
                body = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue  # another drainer sent it
            try:
                await aws.call(deadline, self.queue.dependency, self.queue.send, body)
            except Exception:
                break
            path.unlink(missing_ok=True)
            sent += 1
        return sent


def drain(spool: Spool, queue: EventQueue, limit: int = REPLAY_BATCH) -> int:
    """Blocking replay for a process with no request to ride on (the local worker loop)."""
    sent = 0
    for path in spool.oldest(limit):
        try:
            queue.send(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        path.unlink(missing_ok=True)
        sent += 1
    return sent
