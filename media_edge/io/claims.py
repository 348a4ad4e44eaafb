"""The stream claim: one Media Stream per CallSid, across every edge task.

A stream token is a bearer grant valid for minutes, and a replayed ``/twilio/voice`` mints a fresh
one for the same CallSid; what makes a stream single-use is a claim on the CallSid, taken before
the Vapi call is created, in two places:

1. this process's own claims (bounded, in memory): a second stream of a CallSid on this task is
   refused without a round trip;
2. the sessions table: one conditional ``UpdateItem`` on ``pk = CALL#{callSid}``, ``sk = STREAM``
   (``attribute_not_exists(pk)``, or the same streamSid: botocore may resend a write whose answer
   it lost). An update creates the item, so the claim holds even if /twilio/voice never wrote the
   session. It is an item of its own rather than an attribute of ``SESSION`` because a replayed
   /twilio/voice *puts* the session item whole, which would erase the attribute and re-open the
   claim. It expires with the call record (``CALL_RECORD_RETENTION_DAYS``): as long as we
   remember a call, it cannot be bridged twice.

When the table does not answer within ``CLAIM_TIMEOUT_S`` the stream is admitted on this
process's claim alone (fail open), with an error log and ``ClaimStoreErrors``. Failing closed
would turn every call during a DynamoDB outage into an apology (the API already answers calls
without DynamoDB); failing open re-opens, for that window only and only across tasks, a replay
that needs a captured signed webhook. A live caller outweighs that.

The table is reached from a small thread pool (boto3 blocks), never from the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from media_edge.core.events import ClaimOutcome
from voicebridge import aws
from voicebridge.config import ConfigError, Settings

# The caller hears nothing while we claim (their audio is held for Vapi): the table gets one
# retry and well under two seconds, then we fail open.
CLAIM_BUDGET = aws.Budget(connect_timeout=0.5, read_timeout=0.6, max_attempts=2)
CLAIM_TIMEOUT_S = 1.5  # the loop stops waiting then, whatever botocore is still doing
CLAIM_THREADS = 4  # ~5 ms per claim in-region: hundreds of call starts a second
MAX_LOCAL_CLAIMS = 10_000  # ~2 MB; the oldest go first (the table still holds them)


class ClaimStore(Protocol):
    def claim(self, call_sid: str, stream_sid: str, now: float) -> bool:
        """True if ``stream_sid`` holds ``call_sid``'s claim now; raises if the store failed."""
        ...


class DynamoClaimStore:
    """The claim as a conditional write in the sessions table (see the module docstring)."""

    def __init__(
        self,
        table: str,
        endpoint_url: str | None = None,
        *,
        retention_s: int,
        session: Any = None,
    ) -> None:
        self.table = table
        self._retention_s = retention_s
        self._client = aws.client("dynamodb", CLAIM_BUDGET, endpoint_url, session)

    @classmethod
    def from_settings(cls, settings: Settings, session: Any = None) -> DynamoClaimStore:
        """The sessions table (SESSIONS_TABLE, AWS_ENDPOINT_URL), claims kept as long as call
        records (CALL_RECORD_RETENTION_DAYS). No region (ECS sets AWS_REGION in every task) is
        a ConfigError, one line."""
        from botocore.exceptions import BotoCoreError

        assert settings.sessions_table  # required for the edge role
        try:
            return cls(
                settings.sessions_table,
                settings.aws_endpoint_url,
                retention_s=settings.call_record_retention_days * 86_400,
                session=session,
            )
        except BotoCoreError as exc:
            raise ConfigError(f"SESSIONS_TABLE: no DynamoDB client: {exc}") from None

    def claim(self, call_sid: str, stream_sid: str, now: float) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.update_item(
                TableName=self.table,
                Key={"pk": {"S": f"CALL#{call_sid}"}, "sk": {"S": "STREAM"}},
                UpdateExpression=(
                    "SET call_sid = :call, stream_sid = :stream, claimed_at = :now,"
                    " expires_at = :exp"
                ),
                ConditionExpression="attribute_not_exists(pk) OR stream_sid = :stream",
                ExpressionAttributeValues={
                    ":call": {"S": call_sid},
                    ":stream": {"S": stream_sid},
                    ":now": {"N": str(int(now))},
                    ":exp": {"N": str(int(now) + self._retention_s)},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True


class StreamClaims:
    """This process's claims in front of the fleet-wide store; ``claim`` never raises."""

    def __init__(
        self,
        store: ClaimStore,
        *,
        local_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._local_ttl_s = local_ttl_s
        self._clock = clock
        self._local: dict[str, tuple[str, float]] = {}  # callSid -> (streamSid, expiry)
        self._executor = ThreadPoolExecutor(CLAIM_THREADS, thread_name_prefix="stream-claim")

    async def claim(self, call_sid: str, stream_sid: str) -> tuple[ClaimOutcome, str]:
        """The outcome for this stream, and why the store did not answer (if it did not)."""
        if not self._claim_locally(call_sid, stream_sid):
            return ClaimOutcome.ALREADY_CLAIMED, ""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CLAIM_TIMEOUT_S):
                ours = await loop.run_in_executor(
                    self._executor, self._store.claim, call_sid, stream_sid, time.time()
                )
        except TimeoutError:
            return ClaimOutcome.CLAIMED_LOCALLY, f"no answer within {CLAIM_TIMEOUT_S} s"
        except Exception as exc:  # any store failure: fail open (module docstring)
            return ClaimOutcome.CLAIMED_LOCALLY, f"{type(exc).__name__}: {exc}"[:200]
        return (ClaimOutcome.CLAIMED if ours else ClaimOutcome.ALREADY_CLAIMED), ""

    def _claim_locally(self, call_sid: str, stream_sid: str) -> bool:
        local = self._local
        now = self._clock()
        for _ in range(2):  # insertion order is expiry order: prune from the front, amortised
            oldest = next(iter(local), None)
            if oldest is None or local[oldest][1] > now:
                break
            del local[oldest]
        held = local.get(call_sid)
        if held is not None:
            if held[1] > now:
                return held[0] == stream_sid
            del local[call_sid]  # expired: re-inserted at the end below
        if len(local) >= MAX_LOCAL_CLAIMS:
            del local[next(iter(local))]
        local[call_sid] = (stream_sid, now + self._local_ttl_s)
        return True

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
