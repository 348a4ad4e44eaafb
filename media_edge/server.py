"""The edge server: one websockets (asyncio) listener for /media, /health and /ready.

The upgrade is checked before anything else: ``X-Twilio-Signature`` over ``EDGE_PUBLIC_URL +
/media`` (HTTP 403), draining or full (HTTP 503). Each accepted stream runs a CallSession; a
failing call never reaches the server. ``EdgeServer`` is the in-process entry point (tests, the
local stack, the load benchmark): ``port = await server.start()``, ``await server.drain()``,
``await server.stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
from typing import Any

import httpx
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from media_edge.core import CallConfig
from media_edge.io.protection import TaskProtection
from media_edge.io.session import (
    CLOSE_TIMEOUT_S,
    PING_INTERVAL_S,
    PING_TIMEOUT_S,
    CallSession,
    EdgeContext,
)
from media_edge.io.telemetry import EdgeMetrics, edge_logger
from voicebridge import telemetry
from voicebridge.config import Settings
from voicebridge.twilio_signature import SIGNATURE_HEADER, is_valid_upgrade

MEDIA_PATH = "/media"
MAX_TWILIO_FRAME_BYTES = 32_768  # websockets closes 1009 above this; the parser caps at 16 KB


def call_config(settings: Settings) -> CallConfig:
    assert settings.stream_token_secret  # required for the edge role
    return CallConfig(
        token_secret=settings.stream_token_secret,
        audio_format=settings.edge_audio_format,
        lead_ms=settings.edge_playout_lead_ms,
        idle_timeout_ms=settings.edge_idle_timeout_seconds * 1000,
        max_call_ms=settings.edge_max_call_seconds * 1000,
        local_barge_in=settings.edge_local_barge_in,
        dtmf_to_vapi=settings.edge_dtmf_to_vapi,
        fallback_number=settings.edge_fallback_number or None,
    )


class EdgeServer:
    def __init__(self, settings: Settings, *, call_config_override: CallConfig | None = None):
        self.settings = settings
        self._config = call_config_override or call_config(settings)
        self._logger = edge_logger()
        self._sessions: set[CallSession] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.metrics = EdgeMetrics(lambda: len(self._sessions))
        self.draining = False
        self._server: Server | None = None
        self._http: httpx.AsyncClient | None = None
        self._protection: TaskProtection | None = None
        self._background: list[asyncio.Task[Any]] = []
        self._media_url = f"{settings.edge_public_url}{MEDIA_PATH}"

    @property
    def active_calls(self) -> int:
        return len(self._sessions)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> int:
        """Listen (EDGE_PORT 0 picks a free port); returns the bound port."""
        settings = self.settings
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),  # call bursts
        )
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
        )
        try:
            self._server = await serve(
                self._handle,
                settings.edge_host,
                settings.edge_port,
                process_request=self._process_request,
                max_size=MAX_TWILIO_FRAME_BYTES,
                compression=None,  # Twilio does not negotiate it; it would only cost CPU
                ping_interval=PING_INTERVAL_S,
                ping_timeout=PING_TIMEOUT_S,
                close_timeout=CLOSE_TIMEOUT_S,
            )
        except OSError:
            await self._http.aclose()
            self._http = None
            raise
        self._background.append(asyncio.create_task(self._flush_metrics()))
        if settings.ecs_agent_uri:
            self._protection = TaskProtection(self._http, settings.ecs_agent_uri, self._logger)
            self._background.append(asyncio.create_task(self._protection.run()))
        loop = type(asyncio.get_running_loop())
        self._logger.info(
            "edge listening",
            extra={
                "port": self.port,
                "audioFormat": self._config.audio_format,
                "eventLoop": f"{loop.__module__}.{loop.__name__}",
            },
        )
        return self.port

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
            await session.shutdown("drain_timeout")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S + 2.0):
                await self._idle.wait()

    async def stop(self) -> None:
        """Close everything this server opened (idempotent)."""
        self.draining = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        if self._protection is not None and self._http is not None:
            await self._protection.release()
        self.metrics.flush()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- HTTP before the upgrade ----------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == "/health":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if path == "/ready":
            if self.draining or self.active_calls >= self.settings.edge_max_calls:
                return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "not ready\n")
            return connection.respond(http.HTTPStatus.OK, "ready\n")
        if path != MEDIA_PATH:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        signature = request.headers.get(SIGNATURE_HEADER)
        if not is_valid_upgrade(self.settings.twilio_auth_token or "", self._media_url, signature):
            self._logger.warning("upgrade rejected: bad signature")
            self.metrics.count(telemetry.AUTH_FAILURES, 1)
            return connection.respond(http.HTTPStatus.FORBIDDEN, "forbidden\n")
        if self.draining or self.active_calls >= self.settings.edge_max_calls:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "unavailable\n")
        return None

    # -- streams --------------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        session = CallSession(connection, self._ctx)
        self._sessions.add(session)
        self._idle.clear()
        if self._protection is not None:
            self._protection.want(True)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            if not self._sessions:
                self._idle.set()
                if self._protection is not None:
                    self._protection.want(False)

    async def _flush_metrics(self) -> None:
        interval = max(1, self.settings.metrics_flush_seconds)
        while True:
            await asyncio.sleep(interval)
            try:
                self.metrics.flush()
            except Exception:  # metrics must never take the edge down
                self._logger.exception("metrics flush failed")
