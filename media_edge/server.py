"""The edge server: one asyncio listener for ``<prefix>/media``, /health and /ready.

Each TCP connection is a ``WsConnection`` driving websockets' sans-I/O ``ServerProtocol``. The
upgrade is checked before anything else: the path is ``EDGE_PUBLIC_URL``'s path + ``/media``
with no query string (HTTP 400: Twilio's stream URL never has one, and the signature covers the
URL exactly), ``X-Twilio-Signature`` over ``EDGE_PUBLIC_URL + /media`` (HTTP 403), draining or
full (HTTP 503). Each accepted stream runs a CallSession; a failing call never reaches the server.

Calls and pending connections are counted apart. A connection is *pending* from its TCP accept
until its stream's ``start`` carried a valid token (the CallSession's claim admits it), or at
most ``start_timeout_ms`` after the upgrade; only admitted streams are calls: ``EDGE_MAX_CALLS``,
``/ready``, ActiveCalls (autoscaling) and task protection count those alone. Pending connections
have their own cap, ``EDGE_MAX_PENDING``; a new connection that finds it full evicts the oldest
pending one. So a signature captured once (it covers only the URL, never expires) buys an
attacker sockets that hold no call slot, each for seconds, and that each newer connection
pushes out: to keep a real caller from reaching ``start`` they must open EDGE_MAX_PENDING
connections per task within that caller's own connect-to-start time (tens of milliseconds), a
flood for the load balancer to shed, not a quiet squat.

``EdgeServer`` is the in-process entry point (tests, the local stack, the load benchmark):
``port = await server.start()``, ``await server.drain()``, ``await server.stop()``. Under
``media_edge.supervisor`` (EDGE_WORKERS > 1) it runs as one of several workers
(``worker=WorkerRole(...)``): it serves the connections the supervisor hands it, reports its
live-call count (and ``call_sids``) instead of emitting ActiveCalls or touching ECS task
protection, and names itself in an ``X-Edge-Worker`` header on its HTTP answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from media_edge.core import CallConfig
from media_edge.io.artifacts import CallRecordWriter, dynamodb_client
from media_edge.io.claims import ClaimStore, DynamoClaimStore, StreamClaims
from media_edge.io.live import LiveHub
from media_edge.io.protection import TaskProtection
from media_edge.io.recording import RecordingStore, s3_client
from media_edge.io.session import REST_TIMEOUT_S, CallSession, EdgeContext
from media_edge.io.telemetry import EdgeMetrics, edge_logger, flush_every
from media_edge.io.ws import CLOSE_TIMEOUT_S, WsConnection
from voicebridge import stream_token, telemetry
from voicebridge.config import Settings
from voicebridge.twilio_signature import SIGNATURE_HEADER, is_valid_upgrade

MEDIA_PATH = "/media"
MAX_TWILIO_FRAME_BYTES = 32_768  # websockets closes MESSAGE_TOO_BIG above; the parser caps at 16 KB
OPEN_TIMEOUT_S = 10.0  # a connection that has not sent its request by then is dropped
WORKER_HEADER = "X-Edge-Worker"


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This server is worker ``index`` of a supervised task; ``report_calls(n)`` on each change."""

    index: int
    report_calls: Callable[[int], None]


def call_config(settings: Settings) -> CallConfig:
    assert settings.stream_token_secret  # required for the edge role
    assert settings.twilio_account_sid
    return CallConfig(
        token_secret=settings.stream_token_secret,
        account_sid=settings.twilio_account_sid,
        audio_format=settings.edge_audio_format,
        lead_ms=settings.edge_playout_lead_ms,
        idle_timeout_ms=settings.edge_idle_timeout_seconds * 1000,
        max_call_ms=settings.edge_max_call_seconds * 1000,
        local_barge_in=settings.edge_local_barge_in,
        dtmf_to_vapi=settings.edge_dtmf_to_vapi,
        fallback_number=settings.edge_fallback_number or None,
        live_control=LiveHub.configured(settings),
        record=bool(settings.recordings_bucket),
    )


class EdgeServer:
    def __init__(
        self,
        settings: Settings,
        *,
        call_config_override: CallConfig | None = None,
        worker: WorkerRole | None = None,
        claim_store: ClaimStore | None = None,
    ):
        self.settings = settings
        self._worker = worker
        self._config = call_config_override or call_config(settings)
        self._logger = edge_logger()
        self._claim_store = claim_store  # None: the sessions table (SESSIONS_TABLE)
        self._sessions: set[CallSession] = set()  # every upgraded stream, admitted or not
        self._calls: set[CallSession] = set()  # admitted: a valid token and a call slot
        self._pending: dict[TwilioSocket, None] = {}  # not admitted yet, oldest first
        self._idle = asyncio.Event()
        self._idle.set()
        self.metrics = EdgeMetrics(None if worker else lambda: len(self._calls))
        self.draining = False
        self._server: asyncio.Server | None = None
        self._connections: set[TwilioSocket] = set()
        self._http: httpx.AsyncClient | None = None
        self._protection: TaskProtection | None = None
        self._live: LiveHub | None = None
        self._background: list[asyncio.Task[Any]] = []
        self._media_url = f"{settings.edge_public_url}{MEDIA_PATH}"
        self._media_path = urlsplit(self._media_url).path  # EDGE_PUBLIC_URL's prefix + /media
        self._recordings: RecordingStore | None = None
        self._call_records: CallRecordWriter | None = None

    @property
    def active_calls(self) -> int:
        """Admitted calls (what EDGE_MAX_CALLS, /ready and ActiveCalls count)."""
        return len(self._calls)

    @property
    def pending(self) -> int:
        """Connections not admitted as calls (yet): before the upgrade or before a valid start."""
        return len(self._pending)

    @property
    def open_streams(self) -> int:
        """Every upgraded stream still running, admitted or not."""
        return len(self._sessions)

    @property
    def call_sids(self) -> set[str]:
        """CallSids of the live calls that have started (a supervisor redirects them if this
        worker dies)."""
        return {session.call.call_sid for session in self._sessions if session.call.call_sid}

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> int:
        """Listen (EDGE_PORT 0 picks a free port); returns the bound port."""
        settings = self.settings
        store = self._claim_store or DynamoClaimStore.from_settings(settings)
        self._claims = StreamClaims(
            store,
            local_ttl_s=settings.edge_max_call_seconds + stream_token.MAX_TTL_SECONDS,
        )
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),  # call bursts
        )
        if LiveHub.configured(settings):
            self._live = LiveHub(settings, self._http, self._logger, self.metrics)
            await self._live.start()
        self._ctx = EdgeContext(
            call_config=self._config,
            vapi_base_url=settings.vapi_base_url,
            vapi_api_key=settings.vapi_api_key or "",
            twilio_api_base=settings.twilio_api_base,
            twilio_account_sid=settings.twilio_account_sid or "",
            twilio_auth_token=settings.twilio_auth_token or "",
            http=self._http,
            metrics=self.metrics,
            logger=self._logger,
            claims=self._claims,
            live=self._live,
            recordings=await self._start_recordings(),
            call_records=await self._start_call_records(),
        )
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: TwilioSocket(self),
                settings.edge_host,
                settings.edge_port,
                reuse_port=self._worker is not None,
            )
        except OSError:
            await self._http.aclose()
            self._http = None
            self._claims.close()
            raise
        self._background.append(
            asyncio.create_task(
                flush_every(self.metrics, self.settings.metrics_flush_seconds, self._logger)
            )
        )
        if settings.ecs_agent_uri and self._worker is None:  # else the supervisor's job
            self._protection = TaskProtection(self._http, settings.ecs_agent_uri, self._logger)
            self._background.append(asyncio.create_task(self._protection.run()))
        kind = type(loop)
        self._logger.info(
            "edge listening",
            extra={
                "port": self.port,
                "audioFormat": self._config.audio_format,
                "eventLoop": f"{kind.__module__}.{kind.__name__}",
                **({"worker": self._worker.index} if self._worker else {}),
            },
        )
        return self.port

    async def _start_recordings(self) -> RecordingStore | None:
        """RECORDINGS_BUCKET set: every call is recorded. A spool that cannot be created is
        logged as an error and the edge serves calls without recordings: calls come first."""
        settings = self.settings
        if not settings.recordings_bucket:
            return None
        endpoint = settings.aws_endpoint_url
        store = RecordingStore(
            settings.recordings_bucket,
            settings.recordings_spool_dir,
            lambda: s3_client(endpoint),
            self._logger,
            self.metrics,
        )
        try:
            await store.start()
        except Exception as exc:
            self._logger.error("recordings disabled: spool unusable", extra={"error": str(exc)})
            store.close()
            return None
        self._recordings = store
        return store

    async def _start_call_records(self) -> CallRecordWriter | None:
        """SESSIONS_TABLE set: each call's picture and recording link go to its record. The
        client is built now, off the loop: boto3's ~60k objects then exist before the process
        freezes its start-up heap, so full collections do not walk them during calls."""
        settings = self.settings
        if not settings.sessions_table:
            return None
        endpoint = settings.aws_endpoint_url
        writer = CallRecordWriter(
            settings.sessions_table,
            lambda: dynamodb_client(endpoint),
            settings.call_record_retention_days,
        )
        try:
            await asyncio.get_running_loop().run_in_executor(writer.pool, writer.client)
        except Exception as exc:  # the calls go on; their records will lack the picture
            self._logger.error("call records unavailable", extra={"error": str(exc)})
        self._call_records = writer
        return writer

    async def drain(self, grace_s: float | None = None) -> None:
        """SIGTERM: refuse new streams, let live calls finish up to DRAIN_SECONDS (or
        ``grace_s``), then end the rest."""
        self.draining = True
        self._logger.info("draining", extra={"activeCalls": self.active_calls})
        grace = self.settings.drain_seconds if grace_s is None else grace_s
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        for session in list(self._sessions):
            session.shutdown("drain_timeout")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S + 2.0):
                await self._idle.wait()

    async def stop(self) -> None:
        """Close everything this server opened (idempotent)."""
        self.draining = True
        if self._server is not None:
            self._server.close()
            # Like any server going away (GOING_AWAY): each call ends as on a hang-up.
            for connection in list(self._connections):
                connection.close(CloseCode.GOING_AWAY, "server shutdown")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S + REST_TIMEOUT_S + 1.0):
                    await self._idle.wait()
            for session in list(self._sessions):
                session.kill()
            for connection in list(self._connections):
                connection.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._idle.wait()
            await self._server.wait_closed()
            self._server = None
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        if self._live is not None:
            await self._live.stop()
            self._live = None
        if self._protection is not None and self._http is not None:
            await self._protection.release()
        self.metrics.flush()
        for pool in (self._recordings, self._call_records):
            if pool is not None:
                pool.close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
            self._claims.close()

    # -- HTTP before the upgrade ----------------------------------------------------------------

    def process_request(self, protocol: ServerProtocol, request: Request) -> Response | None:
        """An HTTP answer instead of the upgrade, or None to go on with the handshake."""
        response = self._answer(protocol, request)
        if response is not None and self._worker is not None:
            response.headers[WORKER_HEADER] = str(self._worker.index)
        return response

    def _answer(self, protocol: ServerProtocol, request: Request) -> Response | None:
        path, query, _ = request.path.partition("?")
        if path == "/health":
            return protocol.reject(http.HTTPStatus.OK, "ok\n")
        if path == "/ready":
            if self.draining or self.active_calls >= self.settings.edge_max_calls:
                return protocol.reject(http.HTTPStatus.SERVICE_UNAVAILABLE, "not ready\n")
            return protocol.reject(http.HTTPStatus.OK, "ready\n")
        if path != self._media_path:
            return protocol.reject(http.HTTPStatus.NOT_FOUND, "not found\n")
        if query:  # even "?": the signature covers the configured URL, which has none
            return protocol.reject(http.HTTPStatus.BAD_REQUEST, "no query string\n")
        signature = request.headers.get(SIGNATURE_HEADER)
        if not is_valid_upgrade(self.settings.twilio_auth_token or "", self._media_url, signature):
            self._logger.warning("upgrade rejected: bad signature")
            self.metrics.count(telemetry.AUTH_FAILURES, 1)
            return protocol.reject(http.HTTPStatus.FORBIDDEN, "forbidden\n")
        if self.draining or self.active_calls >= self.settings.edge_max_calls:
            return protocol.reject(http.HTTPStatus.SERVICE_UNAVAILABLE, "unavailable\n")
        return None

    # -- streams --------------------------------------------------------------------------------

    def start_session(self, connection: TwilioSocket) -> None:
        session = CallSession(
            connection, self._ctx, self._session_done, lambda s: self._admit(connection, s)
        )
        self._sessions.add(session)
        self._idle.clear()

    def _admit(self, connection: TwilioSocket, session: CallSession) -> bool:
        """The stream's token is valid: make it a call, if this task has a slot for it."""
        if self.draining or len(self._calls) >= self.settings.edge_max_calls:
            return False
        self._pending.pop(connection, None)
        self._calls.add(session)
        if self._protection is not None:
            self._protection.want(True)
        if self._worker is not None:
            self._worker.report_calls(len(self._calls))
        return True

    def _session_done(self, session: CallSession) -> None:
        self._sessions.discard(session)
        if session in self._calls:
            self._calls.discard(session)
            if not self._calls and self._protection is not None:
                self._protection.want(False)
            if self._worker is not None:
                self._worker.report_calls(len(self._calls))
        if not self._sessions:
            self._idle.set()

    def connection_opened(self, connection: TwilioSocket) -> None:
        """Every new connection is pending; at the cap, the oldest pending one makes room."""
        self._connections.add(connection)
        pending = self._pending
        while len(pending) >= self.settings.edge_max_pending:
            oldest = next(iter(pending))
            del pending[oldest]
            oldest.abort()  # its session, if any, ends as on a dropped socket
            self.metrics.count(telemetry.STREAMS_EVICTED, 1)
        pending[connection] = None

    def connection_closed(self, connection: TwilioSocket) -> None:
        self._connections.discard(connection)
        self._pending.pop(connection, None)


class TwilioSocket(WsConnection):
    """One accepted TCP connection: HTTP request -> /health, /ready, a refusal, or the upgrade
    to a media stream (then its CallSession takes the messages)."""

    def __init__(self, server: EdgeServer) -> None:
        super().__init__(
            ServerProtocol(max_size=MAX_TWILIO_FRAME_BYTES)  # no extensions: no compression
        )
        self._server = server
        self._open_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server.connection_opened(self)
        self._open_timer = asyncio.get_running_loop().call_later(OPEN_TIMEOUT_S, self.abort)

    def handshake(self, event: Request | Response) -> None:
        if type(event) is not Request or self._open_timer is None:
            return
        self._open_timer.cancel()
        self._open_timer = None
        protocol = self.ws
        assert isinstance(protocol, ServerProtocol)
        response = self._server.process_request(protocol, event) or protocol.accept(event)
        protocol.send_response(response)
        self._flush()
        if response.status_code == 101:
            self.start_keepalive()
            self._server.start_session(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None
        self._server.connection_closed(self)
        super().connection_lost(exc)
