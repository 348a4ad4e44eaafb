"""ECS task scale-in protection while calls are live (the ECS agent's task-protection endpoint).

Fargate gives a stopping task at most 120 s; a call can last an hour. While this process holds
calls it asks ECS not to pick it for scale-in, renewing before the protection expires, and
releases it when the last call ends. Protection that cannot be set is logged, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from aws_lambda_powertools import Logger

EXPIRES_MINUTES = 10  # short, so a crashed task does not stay protected for long
RENEW_SECONDS = 240.0


class TaskProtection:
    def __init__(self, http: httpx.AsyncClient, agent_uri: str, logger: Logger) -> None:
        self._http = http
        self._url = f"{agent_uri.rstrip('/')}/task-protection/v1/state"
        self._logger = logger
        self._wanted = False
        self._state = False  # what the agent last accepted (a new task starts unprotected)
        self._wake = asyncio.Event()

    def want(self, protected: bool) -> None:
        """Cheap; called on every call start/end. The loop does the HTTP."""
        if protected != self._wanted:
            self._wanted = protected
            self._wake.set()

    async def run(self) -> None:
        """Reconcile until cancelled: apply changes at once, renew while protected."""
        while True:
            self._wake.clear()  # before acting: a want() during the PUT wakes the next round
            if self._wanted != self._state or self._wanted:
                await self._put(self._wanted)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RENEW_SECONDS if self._wanted else None):
                    await self._wake.wait()

    async def release(self) -> None:
        if self._state:
            await self._put(False)

    async def _put(self, enabled: bool) -> None:
        body: dict[str, object] = {"ProtectionEnabled": enabled}
        if enabled:
            body["ExpiresInMinutes"] = EXPIRES_MINUTES
        try:
            response = await self._http.put(self._url, json=body, timeout=5.0)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self._logger.warning("task protection update failed", extra={"detail": str(exc)})
            return
        self._state = enabled
