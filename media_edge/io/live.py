"""The edge's live feed: each call's console events, stored and fanned out (PUBLISH_API.md).

Whichever edge task holds a call publishes its events; consoles anywhere receive them through
the console's WebSocket API (API Gateway in AWS, ``infra/ws_gateway.py`` locally):

- every event gets the call's next ``seq`` and is **stored** (events table, TTL) in batches
  every ``FLUSH_S``, so a console that opens later replays what it missed;
- it is **posted at once** to every socket subscribed to the call (and, for ``call`` and
  ``speech`` events, to those watching the calls list) through the gateway's management API
  (what queued for a socket during its last post goes in one ``batch`` message),
  ``POST /@connections/{id}`` signed with the task role's credentials (SigV4). Subscribers are
  read from the connections table and cached for ``SUBSCRIBERS_S``; a socket the gateway says
  is gone (410) is dropped at once. A console that subscribed between two reads sees a gap in
  ``seq`` and fetches it from the store.

Nothing here runs per audio frame: a call publishes a few events a second at most. DynamoDB is
reached with boto3 in the loop's executor (batched, off the loop); the posts are async httpx.
Each socket has its own queue, so one slow console delays only itself; a full queue drops its
oldest event (counted: ``LiveEventsDropped``), which that console then fetches as a gap.
"""

from __future__ import annotations

import asyncio
import collections
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from aws_lambda_powertools import Logger

from media_edge.io.telemetry import EdgeMetrics, log_call
from voicebridge import aws, live, telemetry
from voicebridge.config import Settings

LIVE_BUDGET = aws.Budget(connect_timeout=1.0, read_timeout=2.0, max_attempts=2)
FLUSH_S = 0.1  # stored events are written this often (25 per request)
SUBSCRIBERS_S = 1.0  # how stale a topic's subscriber list may get while events flow
CREDENTIALS_S = 60.0  # re-read the task role's credentials (botocore refreshes them)
POST_TIMEOUT_S = 2.0
MAX_QUEUED_PER_SOCKET = 500
# Events that queued up for a socket while its last post was in flight go in one post (a
# ``batch`` message), under API Gateway's 128 KB: one round trip per post, so a busy socket
# catches up in one instead of falling behind by one round trip per event.
BATCH_BYTES = 64 * 1024
CONTROL_URL_TTL_S = 4 * 3600  # the session item's TTL if the webhook did not write one


@dataclass(slots=True)
class _Topic:
    sockets: list[str] = field(default_factory=list)
    fetched: float = float("-inf")
    refreshing: bool = False
    # Until the first read of a topic's subscribers, its events wait here (then go to them):
    # a call's first events, and the calls list's "started", reach consoles already watching.
    waiting: list[str] | None = field(default_factory=list)
    # While a later read runs, events still go to the sockets known so far and are kept here:
    # a console that subscribed since the last read gets them once the read finds it (the
    # calls list has no seq gaps to fetch: its "started" must not fall in that window).
    replay: list[str] = field(default_factory=list)


class LiveHub:
    """One per edge process: the store writer, the subscriber cache, the socket senders."""

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        logger: Logger,
        metrics: EdgeMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.console_events_table
        assert settings.console_connections_table
        assert settings.console_ws_management_url
        self._settings = settings
        self._events_table = settings.console_events_table
        self._connections_table = settings.console_connections_table
        self._management = settings.console_ws_management_url.rstrip("/")
        self._http = http
        self._logger = logger
        self._metrics = metrics
        self._clock = clock
        self._ttl = settings.console_events_ttl_seconds
        self._dynamodb: Any = None
        self._signer: Any = None
        self._credentials: Any = None
        self._credentials_at = float("-inf")
        self._pending: list[dict[str, Any]] = []
        self._topics: dict[str, _Topic] = {}
        self._queues: dict[str, collections.deque[str]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._gone: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self.enabled = False  # start() succeeded

    @staticmethod
    def configured(settings: Settings) -> bool:
        return bool(
            settings.console_events_table
            and settings.console_connections_table
            and settings.console_ws_management_url
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def build() -> Any:
            session = aws.shared_session()  # also signs the management API's posts (SigV4)
            client = aws.client("dynamodb", LIVE_BUDGET, self._settings.aws_endpoint_url)
            return session, client

        try:
            session, self._dynamodb = await loop.run_in_executor(None, build)
        except Exception as exc:  # calls must go on without the console (no region, ...)
            self._logger.error("live console feed off", extra={"error": f"{exc}"[:200]})
            self.enabled = False
            return
        self._session = session
        self.enabled = True
        self._flusher = asyncio.create_task(self._flush_every())

    async def stop(self) -> None:
        """Write what is pending; end the senders."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self._flush()
        for task in [*self._senders.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._senders.values(), *self._tasks, return_exceptions=True)

    def feed(self, call_sid: str) -> CallFeed:
        return CallFeed(self if self.enabled else None, call_sid)

    def forget(self, call_sid: str) -> None:
        """The call ended: its subscriber list is not needed any more."""
        self._topics.pop(live.call_topic(call_sid), None)

    # -- publishing ---------------------------------------------------------------------------

    def _publish(self, call_sid: str, seq: int, kind: str, body: str) -> None:
        now = self._clock()
        self._pending.append(
            {
                "call_sid": {"S": call_sid},
                "seq": {"N": str(seq)},
                "body": {"S": body},
                "expires_at": {"N": str(int(now) + self._ttl)},
            }
        )
        self._fan_out(live.call_topic(call_sid), body, now)
        if kind in live.CALLS_TOPIC_KINDS:
            self._fan_out(live.TOPIC_CALLS, body, now)

    def _fan_out(self, topic: str, body: str, now: float) -> None:
        known = self._topics.get(topic)
        if known is None:
            known = self._topics[topic] = _Topic()
        if now - known.fetched >= SUBSCRIBERS_S and not known.refreshing:
            known.refreshing = True
            self._spawn(self._refresh(topic, known))
        if known.waiting is not None:
            known.waiting.append(body)
            return
        if known.refreshing:
            known.replay.append(body)
        for connection_id in known.sockets:
            self._post(connection_id, body)

    async def _refresh(self, topic: str, known: _Topic) -> None:
        loop = asyncio.get_running_loop()
        try:
            sockets = await loop.run_in_executor(None, self._subscribers, topic)
        except Exception as exc:
            self._logger.warning(
                "live subscribers not read", extra={"topic": topic[:5], "error": type(exc).__name__}
            )
            sockets = known.sockets
        before = set(known.sockets)
        known.sockets = [s for s in sockets if s not in self._gone]
        known.fetched = self._clock()
        known.refreshing = False
        waiting, known.waiting = known.waiting, None
        replay, known.replay = known.replay, []
        for body in waiting or ():
            for connection_id in known.sockets:
                self._post(connection_id, body)
        newcomers = [s for s in known.sockets if s not in before]
        for body in replay if waiting is None else ():
            for connection_id in newcomers:
                self._post(connection_id, body)

    def _subscribers(self, topic: str) -> list[str]:
        """Sockets subscribed to ``topic`` whose console session has not ended (blocking)."""
        now = str(int(self._clock()))
        found: list[str] = []
        kwargs: dict[str, Any] = {
            "TableName": self._connections_table,
            "KeyConditionExpression": "pk = :pk",
            "FilterExpression": "valid_until > :now",
            "ExpressionAttributeValues": {":pk": {"S": f"TOPIC#{topic}"}, ":now": {"N": now}},
            "ProjectionExpression": "sk",
        }
        while True:
            answer = self._dynamodb.query(**kwargs)
            found += [item["sk"]["S"].removeprefix("CONN#") for item in answer.get("Items", [])]
            if "LastEvaluatedKey" not in answer:
                return found
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    # -- sockets --------------------------------------------------------------------------------

    def _post(self, connection_id: str, body: str) -> None:
        queue = self._queues.get(connection_id)
        if queue is None:
            queue = self._queues[connection_id] = collections.deque()
        if len(queue) >= MAX_QUEUED_PER_SOCKET:
            queue.popleft()
            self._metrics.count(telemetry.LIVE_EVENTS_DROPPED, 1)
        queue.append(body)
        if connection_id not in self._senders:
            self._senders[connection_id] = asyncio.create_task(self._send(connection_id))

    async def _send(self, connection_id: str) -> None:
        """Drain one socket's queue in order; end when it is empty (or the socket is gone)."""
        queue = self._queues[connection_id]
        url = f"{self._management}/@connections/{urllib.parse.quote(connection_id, safe='')}"
        try:
            while queue:
                bodies = [queue.popleft()]
                size = len(bodies[0])
                while queue and size + len(queue[0]) < BATCH_BYTES:
                    size += len(queue[0]) + 1
                    bodies.append(queue.popleft())
                text = bodies[0] if len(bodies) == 1 else live.batch(bodies)
                status = await self._post_once(url, text)
                if status == 410:
                    self._drop(connection_id)
                    return
                if status is None or status >= 300:
                    self._metrics.count(telemetry.LIVE_EVENTS_DROPPED, len(bodies))
        finally:
            self._senders.pop(connection_id, None)
            if not queue:
                self._queues.pop(connection_id, None)

    async def _post_once(self, url: str, body: str) -> int | None:
        data = body.encode()
        try:
            headers = await self._signed_headers("POST", url, data)
            answer = await self._http.post(
                url, content=data, headers=headers, timeout=POST_TIMEOUT_S
            )
        except (httpx.HTTPError, OSError) as exc:
            self._logger.warning("live post failed", extra={"error": type(exc).__name__})
            return None
        return answer.status_code

    def _drop(self, connection_id: str) -> None:
        self._gone.add(connection_id)
        self._queues.pop(connection_id, None)
        for known in self._topics.values():
            if connection_id in known.sockets:
                known.sockets = [s for s in known.sockets if s != connection_id]

    async def _signed_headers(self, method: str, url: str, data: bytes) -> dict[str, str]:
        """SigV4 for ``execute-api`` (the management API accepts nothing else)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        now = time.monotonic()
        if self._credentials is None or now - self._credentials_at >= CREDENTIALS_S:
            loop = asyncio.get_running_loop()
            self._credentials = await loop.run_in_executor(None, self._frozen_credentials)
            self._credentials_at = now
        request = AWSRequest(method=method, url=url, data=data)
        request.headers["Content-Type"] = "application/json"
        region = self._session.region_name or "us-east-1"
        SigV4Auth(self._credentials, "execute-api", region).add_auth(request)
        return dict(request.headers.items())

    def _frozen_credentials(self) -> Any:
        credentials = self._session.get_credentials()
        if credentials is None:
            raise OSError("no AWS credentials for the console's management API")
        return credentials.get_frozen_credentials()

    # -- the store ------------------------------------------------------------------------------

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        try:
            lost = await loop.run_in_executor(None, self._write, batch)
        except Exception as exc:
            lost = len(batch)
            self._logger.warning("live events not stored", extra={"error": type(exc).__name__})
        if lost:
            self._metrics.count(telemetry.LIVE_EVENTS_DROPPED, lost)

    def _write(self, items: list[dict[str, Any]]) -> int:
        """BatchWriteItem, 25 at a time, unprocessed items retried once; returns how many were
        not written (blocking)."""
        lost = 0
        for start in range(0, len(items), 25):
            requests = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
            for _attempt in range(2):
                answer = self._dynamodb.batch_write_item(
                    RequestItems={self._events_table: requests}
                )
                requests = answer.get("UnprocessedItems", {}).get(self._events_table, [])
                if not requests:
                    break
            lost += len(requests)
        return lost

    # -- the call's control URL -----------------------------------------------------------------

    def store_control_url(self, call_sid: str, url: str) -> None:
        """Keep Vapi's ``monitor.controlUrl`` on the call's session item, where the API's
        step-in reads it (never logged: it is a capability)."""
        table = self._settings.sessions_table
        if not table or not self.enabled:
            return
        self._spawn(self._store_control_url(table, call_sid, url))

    async def _store_control_url(self, table: str, call_sid: str, url: str) -> None:
        expires = str(int(self._clock()) + CONTROL_URL_TTL_S)

        def write() -> None:
            self._dynamodb.update_item(
                TableName=table,
                Key={"pk": {"S": f"CALL#{call_sid}"}, "sk": {"S": "SESSION"}},
                UpdateExpression=(
                    "SET control_url = :u, call_sid = :sid, "
                    "expires_at = if_not_exists(expires_at, :exp)"
                ),
                ExpressionAttributeValues={
                    ":u": {"S": url},
                    ":sid": {"S": call_sid},
                    ":exp": {"N": expires},
                },
            )

        try:
            await asyncio.get_running_loop().run_in_executor(None, write)
        except Exception as exc:
            log_call(
                self._logger,
                "warning",
                "control URL not stored: step-in unavailable for this call",
                {"callSid": call_sid},
                error=type(exc).__name__,
            )

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class CallFeed:
    """One call's publisher: ``publish(kind, data)`` (PUBLISH_API.md), never blocking."""

    __slots__ = ("_call_sid", "_hub", "_seq")

    def __init__(self, hub: LiveHub | None, call_sid: str) -> None:
        self._hub = hub
        self._call_sid = call_sid
        self._seq = 0

    @property
    def call_sid(self) -> str:
        return self._call_sid

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        hub = self._hub
        if hub is None or not self._call_sid:
            return
        ts = int(hub._clock() * 1000)
        body = live.envelope(self._call_sid, self._seq + 1, ts, kind, data)
        if len(body) > live.MAX_EVENT_BYTES:
            hub._logger.warning(
                "live event too large", extra={"kind": kind[:40], "bytes": len(body)}
            )
            return
        self._seq += 1
        hub._publish(self._call_sid, self._seq, kind, body)
