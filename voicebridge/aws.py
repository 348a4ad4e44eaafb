"""A botocore client with a bounded time budget: explicit connect/read timeouts and attempts.

boto3's defaults (60 s connect, 60 s read, several retries) let one slow AWS dependency hold a
request for minutes, far past what any caller of ours waits. Every client made here states its
budget; the worst case of one call is ``max_attempts * (connect_timeout + read_timeout)`` plus
the retry back-off. boto3 is imported on first use (it costs more than the rest of an import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Budget:
    """Timeouts (seconds) and total attempts (1 = no retry) for one client."""

    connect_timeout: float
    read_timeout: float
    max_attempts: int

    def config(self) -> Any:
        """The botocore ``Config`` for this budget (``standard`` retries)."""
        from botocore.config import Config

        return Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
        )

    @property
    def worst_case_s(self) -> float:
        """Time spent on the wire at most, before botocore's retry back-off (< 1 s per retry
        in ``standard`` mode)."""
        return self.max_attempts * (self.connect_timeout + self.read_timeout)


def client(
    service: str, budget: Budget, endpoint_url: str | None = None, session: Any = None
) -> Any:
    """A new client for ``service`` bound to ``budget`` (``endpoint_url``: the local stack)."""
    import boto3

    source: Any = session if session is not None else boto3.session.Session()
    return source.client(service, endpoint_url=endpoint_url, config=budget.config())
