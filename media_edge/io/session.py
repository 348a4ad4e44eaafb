"""The asyncio shell around one Call: reads both sockets, runs the actions, keeps one timer.

Three producers feed the machine: the Twilio reader (the connection handler itself), the Vapi
reader task and the timer. A per-call lock makes every feed-and-execute atomic, so actions leave
in the order the machine decided even when a send waits on a slow peer. The timer is a single
``loop.call_at`` handle moved only when the machine's deadline gets earlier; a call with no
assistant audio queued wakes only for its idle/max-duration deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
from aws_lambda_powertools import Logger
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from media_edge.core import Call, CallConfig, State
from media_edge.core.actions import (
    Action,
    CloseTwilio,
    CloseVapi,
    CreateVapiCall,
    EndCallViaTwilio,
    Latency,
    Log,
    Metric,
    SendAudioToVapi,
    SendJsonToVapi,
    SendToTwilio,
)
from media_edge.core.events import (
    Event,
    ProtocolViolation,
    Shutdown,
    SocketClosed,
    Tick,
    VapiAudio,
    VapiConnected,
    VapiConnectFailed,
)
from media_edge.io.telemetry import EdgeMetrics, log_call
from media_edge.protocol import twilio as twilio_protocol
from media_edge.protocol import vapi as vapi_protocol
from media_edge.protocol.twilio import TwilioMedia
from voicebridge import telemetry
from voicebridge.twilio_rest import TwilioRestError, update_call
from voicebridge.vapi_api import VapiApiError, create_call

PING_INTERVAL_S = 15.0  # both sockets; <= 20 s keeps ALB/NAT idle timers and dead peers in check
PING_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 2.0
REST_TIMEOUT_S = 5.0
_CLOSE_MESSAGE_TOO_BIG = 1009


@dataclass(frozen=True, slots=True)
class EdgeContext:
    """What every call shares: policy, vendor endpoints/credentials, one HTTP client, sinks."""

    call_config: CallConfig
    vapi_base_url: str
    vapi_api_key: str
    twilio_api_base: str
    twilio_account_sid: str
    twilio_auth_token: str
    http: httpx.AsyncClient
    metrics: EdgeMetrics
    logger: Logger


class CallSession:
    def __init__(self, twilio: ServerConnection, ctx: EdgeContext) -> None:
        self._twilio = twilio
        self._ctx = ctx
        self._loop = asyncio.get_running_loop()
        self.call = Call(
            ctx.call_config,
            now=self._now(),
            epoch_offset_s=time.time() - self._loop.time(),
        )
        self._lock = asyncio.Lock()
        self._failed = False
        self._vapi: ClientConnection | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connect_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def _now(self) -> float:
        return self._loop.time() * 1000.0

    # -- entry points -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the Twilio socket until the call is over; always leaves nothing behind."""
        twilio = self._twilio
        bridge = self._ctx.metrics
        try:
            self._arm()
            async for raw in twilio:
                now = self._now()
                try:
                    event: Event = twilio_protocol.parse(raw)
                except twilio_protocol.ProtocolError as exc:
                    event = ProtocolViolation("twilio", exc.reason, str(exc)[:200])
                await self.feed(event, now)
                if type(event) is TwilioMedia and self.call.state is State.BRIDGING:
                    bridge.bridge.add(self._now() - now)  # frames forwarded, not dropped ones
                if self.call.closed:
                    break
            await self.feed(SocketClosed("twilio", twilio.close_code), self._now())
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == _CLOSE_MESSAGE_TOO_BIG:
                event = ProtocolViolation("twilio", "oversize", "message over max_size")
            else:
                event = SocketClosed("twilio", exc.rcvd.code if exc.rcvd else None)
            await self.feed(event, self._now())
        except Exception:  # one call's failure must never reach the server or other calls
            self._ctx.logger.exception("call failed", extra=self._keys())
            self._ctx.metrics.count(telemetry.CALL_ERRORS, 1, reason="internal_error")
            await self._abort()
        finally:
            await self._cleanup()

    async def shutdown(self, reason: str) -> None:
        """Drain period over: end this call now."""
        await self.feed(Shutdown(reason), self._now())

    async def feed(self, event: Event, now: float) -> None:
        async with self._lock:
            if self._failed:
                return
            try:
                actions = self.call.feed(event, now)
                if actions:
                    await self._execute(actions)
            except Exception:  # a bug in one call must not reach the server or other calls
                self._ctx.logger.exception("call failed", extra=self._keys())
                self._ctx.metrics.count(telemetry.CALL_ERRORS, 1, reason="internal_error")
                await self._abort()
                return
            deadline = self.call.next_deadline
            if deadline is not None and deadline < self._timer_at:
                self._arm()

    # -- actions --------------------------------------------------------------------------------

    async def _execute(self, actions: list[Action]) -> None:
        ctx = self._ctx
        for action in actions:
            match action:
                case SendToTwilio(text=text):
                    with contextlib.suppress(ConnectionClosed):
                        await self._twilio.send(text)
                case SendAudioToVapi(data=data):
                    if self._vapi is not None:
                        with contextlib.suppress(ConnectionClosed):
                            await self._vapi.send(data)
                case Latency(name=name, since_ms=since):
                    ctx.metrics.latency(name, self._now() - since)
                case Metric(name=name, value=value, unit=unit, reason=reason):
                    if unit == "Milliseconds":
                        ctx.metrics.latency(name, value)
                    else:
                        ctx.metrics.count(name, value, reason)
                case Log(level=level, message=message, fields=fields):
                    log_call(ctx.logger, level, message, self._keys(), **fields)
                case SendJsonToVapi(message=message):
                    if self._vapi is not None:
                        with contextlib.suppress(ConnectionClosed):
                            await self._vapi.send(json.dumps(message, separators=(",", ":")))
                case CreateVapiCall(body=body):
                    self._connect_task = self._spawn(self._connect_vapi(body))
                case CloseVapi():
                    self._close_vapi()
                case CloseTwilio(code=code, reason=reason):
                    self._spawn(self._twilio.close(code, reason))
                case EndCallViaTwilio():
                    await self._end_via_rest(action)

    def _close_vapi(self) -> None:
        task = self._connect_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        vapi, self._vapi = self._vapi, None
        if vapi is not None:
            self._spawn(vapi.close())

    async def _end_via_rest(self, action: EndCallViaTwilio) -> None:
        ctx = self._ctx
        try:
            async with asyncio.timeout(REST_TIMEOUT_S):
                await update_call(
                    ctx.http,
                    ctx.twilio_api_base,
                    ctx.twilio_account_sid,
                    ctx.twilio_auth_token,
                    action.call_sid,
                    twiml=action.twiml,
                )
        except (TwilioRestError, TimeoutError, ValueError) as exc:
            log_call(ctx.logger, "error", "twilio fallback failed", self._keys(), detail=str(exc))
            ctx.metrics.count(telemetry.CALL_ERRORS, 1, reason="twilio_fallback_failed")

    # -- Vapi -----------------------------------------------------------------------------------

    async def _connect_vapi(self, body: dict[str, Any]) -> None:
        ctx = self._ctx
        budget_s = ctx.call_config.connect_timeout_ms / 1000.0
        event: Event
        try:
            async with asyncio.timeout(budget_s):
                answer = await create_call(
                    ctx.http, ctx.vapi_base_url, ctx.vapi_api_key, body, budget_s=budget_s * 0.7
                )
                vapi = await connect(
                    vapi_protocol.websocket_url(answer),
                    additional_headers={"Authorization": f"Bearer {ctx.vapi_api_key}"},
                    max_size=vapi_protocol.MAX_MESSAGE_BYTES,
                    compression=None,
                    ping_interval=PING_INTERVAL_S,
                    ping_timeout=PING_TIMEOUT_S,
                    close_timeout=CLOSE_TIMEOUT_S,
                )
        except VapiApiError as exc:
            reason = f"http_{exc.status}" if exc.status else "unreachable"
            event = VapiConnectFailed(reason, exc.detail)
        except TimeoutError:
            event = VapiConnectFailed("timeout", "no vapi connection within the budget")
        except (OSError, InvalidHandshake, InvalidURI, ValueError) as exc:
            event = VapiConnectFailed("websocket", f"{type(exc).__name__}: {exc}"[:200])
        else:
            self._vapi = vapi
            event = VapiConnected(str(answer.get("id", "")))
            self._spawn(self._read_vapi(vapi))
        await self.feed(event, self._now())

    async def _read_vapi(self, vapi: ClientConnection) -> None:
        bridge = self._ctx.metrics
        code: int | None = None
        try:
            async for raw in vapi:
                now = self._now()
                if isinstance(raw, bytes):
                    await self.feed(VapiAudio(raw), now)
                    if self.call.state is State.BRIDGING:
                        bridge.bridge.add(self._now() - now)
                else:
                    await self.feed(vapi_protocol.parse(raw), now)
            code = vapi.close_code
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
        if vapi is self._vapi:  # not when we closed it ourselves
            self._vapi = None
            await self.feed(SocketClosed("vapi", code), self._now())

    # -- timer and lifetime ---------------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.call.next_deadline
        self._timer_at = float("inf") if deadline is None else deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline / 1000.0, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        deadline = self.call.next_deadline
        if deadline is None:
            return
        if deadline > self._now():
            self._arm()  # the deadline moved later since we armed: just re-arm
            return
        self._spawn(self.feed(Tick(), self._now()))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _abort(self) -> None:
        """After an unexpected error: close both sides without trusting the machine."""
        self._failed = True
        self._timer_at = float("-inf")
        self._close_vapi()
        self._spawn(self._twilio.close(1011, "internal error"))

    async def _cleanup(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = float("-inf")  # never re-arm
        self._close_vapi()
        if self._tasks:
            # Let closes finish (bounded by close_timeout), cancel whatever still waits.
            _, pending = await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT_S + 1.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def _keys(self) -> dict[str, str]:
        return self.call.log_keys
