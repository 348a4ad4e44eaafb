"""AWS clients with explicit time budgets, and the deadline a webhook's AWS work runs under.

Built without a ``Config``, a boto3 client waits 60 s to connect and 60 s per read and retries
several times: one unreachable DynamoDB or SQS held a webhook 25-51 s, past Twilio's 15 s and the
API function's own timeout. Here every client has connect/read timeouts and a retry budget
(``voicebridge.aws.Budget``, shared with the edge), and every call a webhook makes runs under the
request's :class:`Deadline` in a worker thread: ``asyncio.wait_for`` ends the wait even where
botocore's own timeouts do not reach (DNS resolution, a retry's backoff). A dependency that has
just failed that way is skipped for ``COOLDOWN_SECONDS`` (:class:`Unavailable` at once, so its
fallback answers in microseconds rather than every request waiting out its budget), then tried
again.

Importing boto3 costs more than the rest of the API's imports together, so it happens on the first
request that needs AWS rather than at module import; the lock keeps concurrent first requests
(uvicorn locally) from building two clients (boto3 sessions are not thread-safe to create).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from voicebridge import aws as budgeted
from voicebridge.aws import Budget

Service = Literal["dynamodb", "sqs", "lambda", "apigatewaymanagementapi", "s3"]
T = TypeVar("T")

COOLDOWN_SECONDS = 5.0


# Webhooks: an in-region DynamoDB/SQS call takes milliseconds; two tries of 0.5 s + 1 s each still
# end inside the route's Deadline (web.WEBHOOK_DEADLINE_S), which caps whatever is left.
WEBHOOK = Budget(connect_timeout=0.5, read_timeout=1.0, max_attempts=2)
# The one-shot fallback (Lambda async invoke) after SQS refused an event: one try, then disk.
FALLBACK = Budget(connect_timeout=0.5, read_timeout=1.0, max_attempts=1)
# The worker has its 30 s function timeout and SQS redelivery behind it: more patience, still
# bounded (3 x (2 + 5) s + backoff stays under that timeout).
WORKER = Budget(connect_timeout=2.0, read_timeout=5.0, max_attempts=3)

_clients: dict[tuple[str, str | None, Budget], Any] = {}
_lock = threading.Lock()


def client(service: Service, endpoint_url: str | None, budget: Budget = WEBHOOK) -> Any:
    """The shared client for ``service`` with ``budget`` (``endpoint_url`` only locally), made
    from the process's one boto3 session (``voicebridge.aws``: one copy of the models)."""
    key = (service, endpoint_url, budget)
    found = _clients.get(key)
    if found is None:
        with _lock:
            found = _clients.get(key)
            if found is None:
                found = _clients[key] = budgeted.client(service, budget, endpoint_url)
    return found


class Unavailable(Exception):
    """An AWS dependency did not answer within the deadline, or is known to be down right now."""


@dataclass(frozen=True, slots=True)
class Deadline:
    """The monotonic instant by which a request's AWS work must be over."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def within(self, seconds: float) -> Deadline:
        """This deadline, or ``seconds`` from now if sooner: one step's share of the budget,
        so a slow optional step leaves time for the one that matters."""
        return Deadline(min(self.at, time.monotonic() + seconds))


@dataclass(frozen=True, slots=True)
class Dependency:
    """One AWS service at one endpoint: what the cooldown after a failure applies to."""

    service: Service
    endpoint_url: str | None


_down_until: dict[Dependency, float] = {}


def is_down(dependency: Dependency) -> bool:
    """True while ``dependency`` is in its cooldown after a connection failure or timeout."""
    return _down_until.get(dependency, 0.0) > time.monotonic()


def forget_failures() -> None:
    """End every cooldown now (a test or a benchmark starting its next scenario)."""
    _down_until.clear()


def _unreachable(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    return isinstance(exc, HTTPClientError | BotoConnectionError)


async def call(deadline: Deadline, dependency: Dependency, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` (blocking boto3 work) in a thread, over by ``deadline`` whatever happens.

    Raises :class:`Unavailable` past the deadline or during the dependency's cooldown, and
    whatever ``fn`` raises otherwise (a network-level failure also starts the cooldown). A call
    abandoned at the deadline finishes in its thread within its client's Budget.
    """
    remaining = deadline.remaining()
    if remaining <= 0:
        raise Unavailable(f"{dependency.service}: no time left in this request's deadline")
    if is_down(dependency):
        raise Unavailable(f"{dependency.service} failed moments ago; not waiting on it again")
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), remaining)
    except TimeoutError:
        _down_until[dependency] = time.monotonic() + COOLDOWN_SECONDS
        raise Unavailable(f"{dependency.service} did not answer within the deadline") from None
    except Exception as exc:
        if _unreachable(exc):
            _down_until[dependency] = time.monotonic() + COOLDOWN_SECONDS
        raise


def reset() -> None:
    """Forget every client and the session (after a SnapStart restore: functions/snapstart.py);
    the next use makes new ones, with the credentials and connections of the restored
    environment."""
    with _lock:
        _clients.clear()
    budgeted.forget_shared_session()
    _down_until.clear()  # a restored snapshot starts with no known outage
