"""The asyncio shell around one Call: socket callbacks feed the machine, actions run at once.

Three producers feed the machine: the Twilio socket, the Vapi socket (``WsConnection``
callbacks, called from ``data_received``) and one timer. Each feed runs the machine and then its
actions synchronously, so actions leave in the order the machine decided without a lock, a task
or a future per message. No feed can arrive while actions run, so there is no queue and no
re-entrancy guard: an action writes to a transport, closes or aborts one, cancels or starts a
task, or counts and logs; asyncio's and uvloop's transports report what a write, close or abort
caused through ``connection_lost`` scheduled with ``call_soon``, never from inside the call, and
nothing else here calls back (``tests/media_edge/test_server.py`` checks it for every socket
test, on both loops). Only what really waits is a task: the stream claim, the Vapi POST /call +
connect and the Twilio REST fallback. Actions are dispatched by a table of typed handlers; one
that must finish before the next actions run (the REST fallback) returns its coroutine, and the
rest of the list waits for it. The timer is a single ``loop.call_at`` handle moved only when the
machine's deadline gets earlier; a call with no assistant audio queued wakes only for its
deadlines.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from aws_lambda_powertools import Logger
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.frames import CloseCode

from media_edge.core import Call, CallConfig, State
from media_edge.core.actions import (
    Action,
    ClaimStream,
    CloseTwilio,
    CloseVapi,
    CreateVapiCall,
    EndCallViaTwilio,
    FinishRecording,
    Latency,
    Log,
    Metric,
    Publish,
    RecordAudio,
    SendAudioToVapi,
    SendJsonToVapi,
    SendToTwilio,
    StorePicture,
)
from media_edge.core.events import (
    ClaimOutcome,
    Event,
    ProtocolViolation,
    Shutdown,
    SocketClosed,
    StreamClaimed,
    Tick,
    VapiAudio,
    VapiConnected,
    VapiConnectFailed,
)
from media_edge.io import ws
from media_edge.io.artifacts import CallArtifacts, CallRecordWriter
from media_edge.io.claims import StreamClaims
from media_edge.io.live import CallFeed, LiveHub
from media_edge.io.recording import RecordingStore
from media_edge.io.telemetry import EdgeMetrics, log_call
from media_edge.protocol import twilio as twilio_protocol
from media_edge.protocol import vapi as vapi_protocol
from media_edge.protocol.twilio import TwilioMedia
from voicebridge import telemetry
from voicebridge.twilio_rest import TwilioRestError, update_call
from voicebridge.vapi_api import VapiApiError, create_call

REST_TIMEOUT_S = 5.0
_BRIDGING = State.BRIDGING
_CLOSED = State.CLOSED


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
    claims: StreamClaims
    live: LiveHub | None = None  # the live console's feed, when one is configured
    recordings: RecordingStore | None = None  # RECORDINGS_BUCKET set
    call_records: CallRecordWriter | None = None  # SESSIONS_TABLE set: picture, recording link


class CallSession:
    """One call's shell. ``admit(session)`` takes a call slot once the stream's token is valid
    (False: the task is full); ``on_done(session)`` runs once both sockets are gone and no task
    is left: the server's count of live calls (and /ready, drain) follows them."""

    def __init__(
        self,
        twilio: ws.WsConnection,
        ctx: EdgeContext,
        on_done: Callable[[CallSession], None],
        admit: Callable[[CallSession], bool],
    ) -> None:
        self._twilio = twilio
        self._ctx = ctx
        self._on_done = on_done
        self._admit = admit
        self._loop = asyncio.get_running_loop()
        self.call = Call(
            ctx.call_config,
            now=self._now(),
            epoch_offset_s=time.time() - self._loop.time(),
        )
        self._bridge = ctx.metrics.bridge
        self._failed = False
        self._vapi: ws.WsConnection | None = None
        self._links: set[ws.WsConnection] = {twilio}  # transports not yet lost
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connect_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._done = False
        self._live: CallFeed | None = None
        self._artifacts = CallArtifacts(
            ctx.recordings, ctx.call_records, ctx.logger, ctx.metrics, self._keys
        )
        twilio.on_lost = self._lost
        twilio.attach(self._on_twilio_message, self._on_twilio_close)
        self._arm()

    def _now(self) -> float:
        return self._loop.time() * 1000.0

    @property
    def live(self) -> CallFeed:
        """This call's live-console feed (PUBLISH_API.md); a no-op without a console, or
        before Twilio's ``start`` named the call."""
        feed = self._live
        if feed is None or (not feed.call_sid and self.call.call_sid):
            hub = self._ctx.live
            feed = self._live = CallFeed(hub if hub and hub.enabled else None, self.call.call_sid)
        return feed

    # -- entry points -------------------------------------------------------------------------

    def shutdown(self, reason: str) -> None:
        """Drain period over: end this call now."""
        self.feed(Shutdown(reason), self._now())

    def kill(self) -> None:
        """Server stop, after the grace: abort both transports and cancel what still runs."""
        self._failed = True
        for task in self._tasks:
            task.cancel()
        for link in list(self._links):
            link.abort()

    def feed(self, event: Event, now: float) -> None:
        if self._failed:
            return
        try:
            actions = self.call.feed(event, now)
            if actions:
                self._execute(actions)
        except Exception:  # a bug in one call must not reach the server or other calls
            self._ctx.logger.exception("call failed", extra=self._keys())
            self._ctx.metrics.count(telemetry.CALL_ERRORS, 1, reason="internal_error")
            self._abort()
            return
        deadline = self.call.next_deadline
        if deadline is not None and deadline < self._timer_at:
            self._arm()

    # -- Twilio socket ----------------------------------------------------------------------------

    def _on_twilio_message(self, raw: ws.Message) -> None:
        call = self.call
        if call.state is _CLOSED:
            return  # the close handshake is under way: the rest is noise
        now = self._loop.time() * 1000.0
        try:
            event: Event = twilio_protocol.parse(raw)
        except twilio_protocol.ProtocolError as exc:
            event = ProtocolViolation("twilio", exc.reason, str(exc)[:200])
        self.feed(event, now)
        if type(event) is TwilioMedia and call.state is _BRIDGING:
            self._bridge.add(self._loop.time() * 1000.0 - now)  # forwarded, not dropped frames

    def _on_twilio_close(self, conn: ws.WsConnection) -> None:
        if conn.oversize:
            event: Event = ProtocolViolation("twilio", "oversize", "message over max_size")
        else:
            event = SocketClosed("twilio", conn.close_code)
        self.feed(event, self._now())

    # -- actions --------------------------------------------------------------------------------

    def _execute(self, actions: list[Action]) -> None:
        """Run ``actions`` in order; an action that returns a coroutine holds the rest until
        it has finished (see ``_then``)."""
        handlers = _HANDLERS
        for action in actions:
            wait = handlers[type(action)](self, action)
            if wait is not None:
                index = next(i for i, queued in enumerate(actions) if queued is action)
                self._spawn(self._then(wait, actions[index + 1 :]))
                return

    async def _then(self, wait: Coroutine[Any, Any, None], rest: list[Action]) -> None:
        await wait
        if rest and not self._failed:
            try:
                self._execute(rest)
            except Exception:
                self._ctx.logger.exception("call failed", extra=self._keys())
                self._abort()

    # one handler per action type (the table is at the end of the module)

    def _send_audio_to_vapi(self, action: SendAudioToVapi) -> None:
        if self._vapi is not None:
            self._vapi.send_binary(action.data)

    def _send_to_twilio(self, action: SendToTwilio) -> None:
        self._twilio.send_text(action.text)

    def _latency(self, action: Latency) -> None:
        self._ctx.metrics.latency(action.name, self._now() - action.since_ms)

    def _metric(self, action: Metric) -> None:
        if action.unit == "Milliseconds":
            self._ctx.metrics.latency(action.name, action.value)
        else:
            self._ctx.metrics.count(action.name, action.value, action.reason)

    def _log(self, action: Log) -> None:
        log_call(self._ctx.logger, action.level, action.message, self._keys(), **action.fields)

    def _publish(self, action: Publish) -> None:
        self.live.publish(action.kind, action.data)

    def _record_audio(self, action: RecordAudio) -> None:
        self._artifacts.audio(action.data)

    def _finish_recording(self, action: FinishRecording) -> None:
        self._spawn(self._artifacts.finish_recording(action.duration_ms))  # the call goes on

    def _store_picture(self, action: StorePicture) -> None:
        self._spawn(self._artifacts.store_picture(action.picture))

    def _send_json_to_vapi(self, action: SendJsonToVapi) -> None:
        if self._vapi is not None:
            self._vapi.send_text(json.dumps(action.message, separators=(",", ":")))

    def _claim_stream(self, action: ClaimStream) -> None:
        """A call slot here first (synchronously, so call bursts are counted as they come),
        then the fleet-wide claim; the answer is fed back as StreamClaimed."""
        admitted = self._admit(self)
        self._spawn(self._claim(action, admitted))

    def _create_vapi_call(self, action: CreateVapiCall) -> None:
        self._connect_task = self._spawn(self._connect_vapi(action.body))

    def _close_vapi_action(self, action: CloseVapi) -> None:
        self._close_vapi()

    def _close_twilio(self, action: CloseTwilio) -> None:
        self._twilio.close(action.code, action.reason)

    def _end_call_via_twilio(self, action: EndCallViaTwilio) -> Coroutine[Any, Any, None]:
        # The apology must replace the stream's TwiML before the stream closes (a closed stream
        # lets Twilio move on, maybe hang up): the actions after it wait for the REST call.
        return self._end_via_rest(action)

    def _close_vapi(self) -> None:
        task = self._connect_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        vapi, self._vapi = self._vapi, None
        if vapi is not None:
            vapi.close()

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

    async def _claim(self, action: ClaimStream, admitted: bool) -> None:
        if admitted:
            outcome, detail = await self._ctx.claims.claim(action.call_sid, action.stream_sid)
        else:
            outcome, detail = ClaimOutcome.NO_CAPACITY, ""
        self.feed(StreamClaimed(outcome, detail), self._now())

    # -- Vapi -----------------------------------------------------------------------------------

    async def _connect_vapi(self, body: dict[str, Any]) -> None:
        ctx = self._ctx
        budget_s = ctx.call_config.connect_timeout_ms / 1000.0
        event: Event
        vapi: ws.WsConnection | None = None
        try:
            async with asyncio.timeout(budget_s):
                answer = await create_call(
                    ctx.http, ctx.vapi_base_url, ctx.vapi_api_key, body, budget_s=budget_s * 0.7
                )
                vapi = await ws.connect(
                    vapi_protocol.websocket_url(answer),
                    {"Authorization": f"Bearer {ctx.vapi_api_key}"},
                    max_size=vapi_protocol.MAX_MESSAGE_BYTES,
                )
        except VapiApiError as exc:
            reason = f"http_{exc.status}" if exc.status else "unreachable"
            event = VapiConnectFailed(reason, exc.detail)
        except TimeoutError:
            event = VapiConnectFailed("timeout", "no vapi connection within the budget")
        except (OSError, InvalidHandshake, InvalidURI, ValueError) as exc:
            event = VapiConnectFailed("websocket", f"{type(exc).__name__}: {exc}"[:200])
        else:
            control_url = vapi_protocol.control_url(answer)
            if control_url and ctx.live is not None:
                ctx.live.store_control_url(self.call.call_sid, control_url)
            self._vapi = vapi
            self._links.add(vapi)
            vapi.on_lost = self._lost
            event = VapiConnected(str(answer.get("id", "")))
        self._connect_task = None
        self.feed(event, self._now())
        if self._failed:
            self._close_vapi()
        if vapi is not None:  # after VapiConnected: what Vapi sent meanwhile is replayed now
            vapi.attach(self._on_vapi_message, self._on_vapi_close)

    def _on_vapi_message(self, raw: ws.Message) -> None:
        now = self._loop.time() * 1000.0
        if isinstance(raw, bytes):
            self.feed(VapiAudio(raw), now)
            if self.call.state is _BRIDGING:
                self._bridge.add(self._loop.time() * 1000.0 - now)
        else:
            self.feed(vapi_protocol.parse(raw), now)

    def _on_vapi_close(self, conn: ws.WsConnection) -> None:
        if conn is self._vapi:  # not when we closed it ourselves
            self._vapi = None
            code = conn.close_code or CloseCode.ABNORMAL_CLOSURE
            self.feed(SocketClosed("vapi", code), self._now())

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
        now = self._now()
        if deadline > now:
            self._arm()  # the deadline moved later since we armed: just re-arm
            return
        self.feed(Tick(), now)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._check_done()

    def _lost(self, conn: ws.WsConnection) -> None:
        self._links.discard(conn)
        if conn is self._twilio:
            self.feed(SocketClosed("twilio", conn.close_code), self._now())  # no-op if closed
            if self._failed:
                self._close_vapi()
        self._check_done()

    def _abort(self) -> None:
        """After an unexpected error: close both sides without trusting the machine."""
        self._failed = True
        self._timer_at = float("-inf")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close_vapi()
        self._twilio.close(CloseCode.INTERNAL_ERROR, "internal error")

    def _check_done(self) -> None:
        if self._done or self._twilio in self._links:
            return
        if self._connect_task is not None:
            self._connect_task.cancel()
        if self._vapi is not None:  # e.g. the machine failed: nobody closed it
            self._close_vapi()
        if self._links or self._tasks:
            return
        self._done = True
        if self._ctx.live is not None and self.call.call_sid:
            self._ctx.live.forget(self.call.call_sid)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = float("-inf")  # never re-arm
        self._on_done(self)

    def _keys(self) -> dict[str, str]:
        return self.call.log_keys


_A = TypeVar("_A")
_Handler = Callable[[CallSession, Any], Coroutine[Any, Any, None] | None]


def _handler(
    kind: type[_A], run: Callable[[CallSession, _A], Coroutine[Any, Any, None] | None]
) -> tuple[type, _Handler]:
    """One table row; the type checker holds ``run`` to the action type it is filed under."""
    return kind, run


# Dispatch by exact action type, most frequent first (one dict lookup per action, as the core's
# _HANDLERS does for events; benchmarks/shell.py measures it against the if/elif ladder it
# replaced).
_HANDLERS: dict[type, _Handler] = dict(
    (
        _handler(SendAudioToVapi, CallSession._send_audio_to_vapi),
        _handler(SendToTwilio, CallSession._send_to_twilio),
        _handler(Latency, CallSession._latency),
        _handler(Metric, CallSession._metric),
        _handler(Log, CallSession._log),
        _handler(Publish, CallSession._publish),
        _handler(RecordAudio, CallSession._record_audio),
        _handler(FinishRecording, CallSession._finish_recording),
        _handler(StorePicture, CallSession._store_picture),
        _handler(SendJsonToVapi, CallSession._send_json_to_vapi),
        _handler(ClaimStream, CallSession._claim_stream),
        _handler(CreateVapiCall, CallSession._create_vapi_call),
        _handler(CloseVapi, CallSession._close_vapi_action),
        _handler(CloseTwilio, CallSession._close_twilio),
        _handler(EndCallViaTwilio, CallSession._end_call_via_twilio),
    )
)
