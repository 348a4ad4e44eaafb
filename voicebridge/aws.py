"""botocore clients with a bounded time budget, from one boto3 session per process.

boto3's defaults (60 s connect, 60 s read, several retries) let one slow AWS dependency hold a
request for minutes, far past what any caller of ours waits. Every client made here states its
budget; the worst case of one call is ``max_attempts * (connect_timeout + read_timeout)`` plus
the retry back-off. boto3 is imported on first use (it costs more than the rest of an import).

Clients share one session unless given another: a session loads and keeps its own copy of the
service models, and the edge holds several clients (stream claims, the live feed, call records,
recordings): one session each cost ~46 MB of RSS for four clients, one shared ~19 MB, per
process (measured with boto3 1.35 on Python 3.11).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

_lock = threading.Lock()  # creating a session, or a client from one, is not thread-safe
_shared: Any = None


@dataclass(frozen=True, slots=True)
class Budget:
    """Timeouts (seconds) and total attempts (1 = no retry) for one client."""

    connect_timeout: float
    read_timeout: float
    max_attempts: int

    def config(self, **extra: Any) -> Any:
        """The botocore ``Config`` for this budget (``standard`` retries), plus ``extra``
        settings (e.g. S3's signature version and addressing style)."""
        from botocore.config import Config

        return Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
            **extra,
        )

    @property
    def worst_case_s(self) -> float:
        """Time spent on the wire at most, before botocore's retry back-off (< 1 s per retry
        in ``standard`` mode)."""
        return self.max_attempts * (self.connect_timeout + self.read_timeout)


def forget_shared_session() -> None:
    """The next client starts a new session (after a SnapStart restore: a session keeps the
    credentials it resolved, and the restored environment has new ones)."""
    global _shared
    with _lock:
        _shared = None


def shared_session() -> Any:
    """This process's boto3 session (credentials from the environment or the task role)."""
    global _shared
    with _lock:
        if _shared is None:
            import boto3

            _shared = boto3.session.Session()
        return _shared


def client(
    service: str,
    budget: Budget,
    endpoint_url: str | None = None,
    session: Any = None,
    **config: Any,
) -> Any:
    """A new client for ``service`` bound to ``budget`` (``endpoint_url``: the local stack),
    from ``session`` or else the shared one; ``config``: more botocore ``Config`` settings.

    S3 clients sign with SigV4 (presigned links to SSE-encrypted objects need it) and, on a
    local endpoint, address buckets by path (moto serves no per-bucket host names)."""
    if service == "s3":
        addressing = {"addressing_style": "path"} if endpoint_url else None
        config = {"signature_version": "s3v4", "s3": addressing, **config}
    source: Any = session if session is not None else shared_session()
    with _lock:
        return source.client(service, endpoint_url=endpoint_url, config=budget.config(**config))
