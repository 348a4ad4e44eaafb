"""The Vapi emulator's I/O: REST (Starlette under uvicorn) and the websocket transport.

REST and the transport listen on two loopback ports (the ``websocketCallUrl`` is opaque to
clients, as Vapi's is): the transport is a plain ``websockets`` server so an emulated crash can
drop the TCP connection with no close frame, which an ASGI app cannot do. Every request needs
``Authorization: Bearer <api key>``; every webhook is signed like Vapi signs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from infra.asgi import AsgiServer
from infra.vapi_emulator.assistant import (
    Abort,
    Action,
    CallTool,
    Close,
    Script,
    ScriptedCall,
    SendAudio,
    SendEvent,
    Webhook,
)
from infra.vapi_emulator.signing import check_plan, credential_headers
from infra.vapi_emulator.update import apply_update, parse_assistant_id, validate_update
from infra.vapi_emulator.validation import (
    ValidationFailed,
    audio_format,
    control_enabled,
    validate_assistant,
    validate_call,
    validate_control,
)

log = logging.getLogger("vapi-emulator")
MAX_BODY = 1 << 20
ORG_ID = "org-emulator"
TICK_S = 0.02
HISTORY = 2000  # requests, webhooks and ended calls kept for inspection (bounded for make run)
# A preset, or a credential's authenticationPlan as Vapi's schema writes it (see signing.py).
WebhookAuth = Literal["hmac", "secret", "bearer", "none"] | dict[str, Any]
_PRESETS: dict[str, dict[str, Any]] = {
    "hmac": {"type": "hmac", "algorithm": "sha256"},  # HMACAuthenticationPlan defaults
    "bearer": {"type": "bearer"},  # BearerAuthenticationPlan defaults
    "secret": {"type": "x-vapi-secret"},  # the legacy header
}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"message": message, "error": HTTPStatus(status).phrase, "statusCode": status}, status
    )


@dataclass(slots=True)
class Captured:
    """A request the emulator received (for tests that check what we send to Vapi)."""

    method: str
    path: str
    body: Any


@dataclass(slots=True)
class EmulatedCall:
    record: dict[str, Any]
    assistant: dict[str, Any]
    script: Script
    connected: bool = False
    machine: ScriptedCall | None = None
    socket: ServerConnection | None = None  # the transport, while it is open
    expiry: asyncio.Task[None] | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    webhooks: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)


class VapiEmulator:
    """Vapi's REST API, websocket transport and server-URL webhooks, on loopback.

    ``script`` is the default behaviour; ``scripts[callSid]`` overrides it for one call (the
    callSid is read from the call's metadata, where our edge puts it).
    """

    def __init__(
        self,
        api_key: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_secret: str | None = None,
        webhook_auth: WebhookAuth = "hmac",
        script: Script | None = None,
        connect_timeout_s: float = 30.0,
        concurrency_limit: int = 0,
    ) -> None:
        if not api_key:
            raise ValueError("the emulator needs an API key to check Bearer auth against")
        self.api_key = api_key
        self.host = host
        self.webhook_secret = webhook_secret
        if isinstance(webhook_auth, dict):
            check_plan(webhook_auth)
        self.webhook_auth: WebhookAuth = webhook_auth if webhook_secret else "none"
        self.script = script or Script()
        self.scripts: dict[str, Script] = {}
        self.connect_timeout_s = connect_timeout_s
        self.concurrency_limit = concurrency_limit
        self.assistants: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, EmulatedCall] = {}
        self.requests: deque[Captured] = deque(maxlen=HISTORY)
        self.webhooks_sent: deque[tuple[int, dict[str, Any]]] = deque(maxlen=HISTORY)
        self._port = port
        self._http: AsgiServer | None = None
        self._ws: Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._open_sockets = 0

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._http is not None, "start() first"
        return f"http://{self.host}:{self._http.port}"

    @property
    def active_calls(self) -> int:
        """Calls created and not yet ended."""
        return sum(1 for c in self.calls.values() if not (c.machine and c.machine.closed))

    @property
    def open_sockets(self) -> int:
        return self._open_sockets

    def pending_tasks(self) -> int:
        return sum(len(c.tasks) for c in self.calls.values())

    async def start(self) -> str:
        from infra.asgi import bind

        self._client = httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0))
        self._ws = await serve(
            self._transport,
            self.host,
            0,
            process_request=self._check_upgrade,
            max_size=1 << 16,
            ping_interval=20,
        )
        app = Starlette(
            routes=[
                Route("/assistant", self._create_assistant, methods=["POST"]),
                Route("/assistant", self._list_assistants, methods=["GET"]),
                Route("/assistant/{id}", self._get_assistant, methods=["GET"]),
                Route("/assistant/{id}", self._update_assistant, methods=["PATCH"]),
                Route("/call", self._create_call, methods=["POST"]),
                Route("/call/{id}", self._get_call, methods=["GET"]),
                Route("/{id}/control", self._control, methods=["POST"]),
            ]
        )
        self._http = AsgiServer(app, sock=bind(self.host, self._port))
        await self._http.start()
        return self.base_url

    async def stop(self) -> None:
        """End live calls (their reports still go out), then close everything."""
        now = time.monotonic() * 1000
        for call in list(self.calls.values()):
            if call.expiry is not None:
                call.expiry.cancel()
            if call.machine and not call.machine.closed:
                await self._run(call, None, call.machine.end("manually-canceled", now))
            call.webhooks.put_nowait(None)
        for call in self.calls.values():
            if call.tasks:
                _done, pending = await asyncio.wait(call.tasks, timeout=5)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()
        if self._http is not None:
            await self._http.stop()
        if self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> VapiEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- REST -------------------------------------------------------------------------------

    def _authorized(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        )

    async def _body(self, request: Request) -> Any:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise ValidationFailed(["request entity too large"])
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise ValidationFailed(["Unexpected token in JSON"]) from None
        self.requests.append(Captured(request.method, request.url.path, body))
        return body

    def _unauthorized(self) -> JSONResponse:
        return _error(
            401,
            "Invalid Key. Hot tip, you may be using the private key instead of "
            "the public key, or vice versa.",
        )

    async def _create_assistant(self, request: Request) -> JSONResponse:
        if not self._authorized(request.headers.get("authorization")):
            return self._unauthorized()
        try:
            body = validate_assistant(await self._body(request))
        except ValidationFailed as exc:
            return JSONResponse(exc.body(), 400)
        now = _now_iso()
        assistant = {
            **body,
            "id": str(uuid.uuid4()),
            "orgId": ORG_ID,
            "createdAt": now,
            "updatedAt": now,
        }
        self.assistants[assistant["id"]] = assistant
        return JSONResponse(assistant, 201)

    async def _list_assistants(self, request: Request) -> JSONResponse:
        if not self._authorized(request.headers.get("authorization")):
            return self._unauthorized()
        return JSONResponse(list(self.assistants.values()))

    async def _get_assistant(self, request: Request) -> JSONResponse:
        if not self._authorized(request.headers.get("authorization")):
            return self._unauthorized()
        assistant = self.assistants.get(request.path_params["id"])
        if assistant is None:
            return _error(404, "Couldn't Get Assistant. Assistant Not Found.")
        return JSONResponse(assistant)

    async def _update_assistant(self, request: Request) -> JSONResponse:
        """``PATCH /assistant/{id}`` (infra/vapi_emulator/update.py has the rules' sources)."""
        if not self._authorized(request.headers.get("authorization")):
            return self._unauthorized()
        assistant_id = parse_assistant_id(request.path_params["id"])
        if assistant_id is None:
            return _error(400, "Validation failed (uuid is expected)")
        if assistant_id not in self.assistants:
            return _error(404, "Couldn't Get Assistant. Assistant Not Found.")
        try:
            update = validate_update(await self._body(request))
        except ValidationFailed as exc:
            return JSONResponse(exc.body(), 400)
        updated = apply_update(self.assistants[assistant_id], update, _now_iso())
        self.assistants[assistant_id] = updated
        return JSONResponse(updated)

    async def _create_call(self, request: Request) -> JSONResponse:
        if not self._authorized(request.headers.get("authorization")):
            return self._unauthorized()
        try:
            body = await self._body(request)
            assistant = validate_call(body, self.assistants)
        except ValidationFailed as exc:
            return JSONResponse(exc.body(), 400)
        if self.concurrency_limit and self.active_calls >= self.concurrency_limit:
            return _error(429, "Over Concurrency Limit.")
        call_id = str(uuid.uuid4())
        fmt, rate = audio_format(body)
        ws_port = self._ws.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        now = _now_iso()
        record: dict[str, Any] = {
            "id": call_id,
            "orgId": ORG_ID,
            "type": "vapi.websocketCall",
            "status": "queued",
            "createdAt": now,
            "updatedAt": now,
            "transport": {
                "provider": "vapi.websocket",
                "audioFormat": {"format": fmt, "container": "raw", "sampleRate": rate},
                "websocketCallUrl": f"ws://{self.host}:{ws_port}/{call_id}/transport",
            },
        }
        for key in ("assistantId", "assistantOverrides", "customer", "name"):
            if key in body:
                record[key] = body[key]
        if control_enabled(assistant, body.get("assistantOverrides") or {}):
            # Monitor.controlUrl: "send any control message via a POST request" (MonitorPlan).
            # Listening (listenUrl) is not emulated: our edge turns it off.
            record["monitor"] = {"controlUrl": f"{self.base_url}/{call_id}/control"}
        call = EmulatedCall(record, assistant, self._script_for(body))
        self._forget_old_calls()
        self.calls[call_id] = call
        self._spawn(call, self._send_webhooks(call))
        call.expiry = self._spawn(call, self._expire_unconnected(call))
        return JSONResponse(record, 201)

    async def _get_call(self, request: Request) -> JSONResponse:
        if not self._authorized(request.headers.get("authorization")):
            return self._unauthorized()
        call = self.calls.get(request.path_params["id"])
        if call is None:
            return _error(404, "Couldn't Get Call. Call Not Found.")
        return JSONResponse(call.record)

    async def _control(self, request: Request) -> JSONResponse:
        """``POST call.monitor.controlUrl``: a ClientInboundMessage applied to the live call
        (https://docs.vapi.ai/calls/call-features). The URL is the credential: no key is
        asked for (``MonitorPlan.controlAuthenticationEnabled`` defaults to false). Vapi does not
        document its answers; here an unknown call, one without control, or one that has ended
        is 404, one whose transport is not open yet 409, an invalid message 400, else 200."""
        call = self.calls.get(request.path_params["id"])
        if call is None or "monitor" not in call.record:
            return _error(404, "Call not found.")
        try:
            body = validate_control(await self._body(request))
        except ValidationFailed as exc:
            return JSONResponse(exc.body(), 400)
        machine = call.machine
        if machine is None or call.socket is None:
            if machine is not None and machine.closed:
                return _error(404, "Call has ended.")
            return _error(409, "Call is not in progress.")
        if machine.closed:
            return _error(404, "Call has ended.")
        now = time.monotonic() * 1000
        await self._run(call, call.socket, machine.text(json.dumps(body), now))
        return JSONResponse({}, 200)

    def _forget_old_calls(self) -> None:
        ended = [
            call_id
            for call_id, call in self.calls.items()
            if call.machine and call.machine.closed and not call.tasks
        ]
        for call_id in ended[: max(0, len(ended) - HISTORY // 4)]:
            del self.calls[call_id]

    def _script_for(self, body: dict[str, Any]) -> Script:
        overrides = body.get("assistantOverrides") or {}
        for holder in (overrides.get("metadata"), overrides.get("variableValues")):
            if isinstance(holder, dict) and str(holder.get("callSid")) in self.scripts:
                return self.scripts[str(holder["callSid"])]
        return self.script

    def _spawn(self, call: EmulatedCall, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        call.tasks.add(task)
        task.add_done_callback(call.tasks.discard)
        return task

    # -- transport ----------------------------------------------------------------------------

    def _check_upgrade(self, connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        call_id = request.path.strip("/").removesuffix("/transport")
        call = self.calls.get(call_id)
        if not self._authorized(request.headers.get("Authorization")):
            return self._ws_reject(connection, 401, "Unauthorized")
        if call is None or call.connected or (call.machine and call.machine.closed):
            return self._ws_reject(connection, 404, "Call not found or already connected")
        call.connected = True
        if call.expiry is not None:
            call.expiry.cancel()
        return None

    @staticmethod
    def _ws_reject(connection: ServerConnection, status: int, text: str) -> WsResponse:
        return connection.respond(HTTPStatus(status), text + "\n")

    async def _transport(self, ws: ServerConnection) -> None:
        call = self.calls[ws.request.path.strip("/").removesuffix("/transport")]  # type: ignore[union-attr]
        self._open_sockets += 1
        now = time.monotonic() * 1000
        call.record["status"] = "in-progress"
        machine = ScriptedCall(
            call.record,
            call.assistant,
            audio_format({"transport": call.record["transport"]}),
            call.script,
            now_ms=now,
            wall_ms=time.time() * 1000,
        )
        call.machine = machine
        call.socket = ws
        ticker = asyncio.create_task(self._tick(call, ws))
        try:
            await self._run(call, ws, machine.start(now))
            async for message in ws:
                now = time.monotonic() * 1000
                if isinstance(message, bytes):
                    actions = machine.audio(message, now)
                else:
                    actions = machine.text(message, now)
                await self._run(call, ws, actions)
                if machine.closed:
                    break
        except ConnectionClosed:
            pass
        finally:
            call.socket = None
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            now = time.monotonic() * 1000
            await self._run(call, None, machine.end("phone-call-provider-closed-websocket", now))
            call.record["status"] = "ended"
            call.record["endedReason"] = machine.ended_reason
            call.webhooks.put_nowait(None)
            self._open_sockets -= 1

    async def _tick(self, call: EmulatedCall, ws: ServerConnection) -> None:
        machine = call.machine
        assert machine is not None
        while not machine.closed:
            await asyncio.sleep(TICK_S)
            await self._run(call, ws, machine.tick(time.monotonic() * 1000))

    async def _run(
        self, call: EmulatedCall, ws: ServerConnection | None, actions: list[Action]
    ) -> None:
        for action in actions:
            try:
                if isinstance(action, SendAudio) and ws is not None:
                    await ws.send(action.data)
                elif isinstance(action, SendEvent) and ws is not None:
                    await ws.send(json.dumps(action.message))
                elif isinstance(action, Webhook):
                    call.webhooks.put_nowait(action.message)
                elif isinstance(action, CallTool):
                    self._spawn(call, self._call_tool(call, ws, action.message))
                elif isinstance(action, Close) and ws is not None:
                    await ws.close(action.code, action.reason)
                elif isinstance(action, Abort) and ws is not None:
                    ws.transport.abort()
                    ws = None
            except ConnectionClosed:
                ws = None  # the client is gone; reports still go out

    async def _expire_unconnected(self, call: EmulatedCall) -> None:
        await asyncio.sleep(self.connect_timeout_s)
        if not call.connected:
            now = time.monotonic() * 1000
            machine = ScriptedCall(
                call.record,
                call.assistant,
                ("mulaw", 8000),
                call.script,
                now_ms=now,
                wall_ms=time.time() * 1000,
            )
            call.machine = machine
            reason = "call.in-progress.error-vapifault-transport-never-connected"
            await self._run(call, None, machine.end(reason, now, connected=False))
            call.webhooks.put_nowait(None)

    # -- webhooks -----------------------------------------------------------------------------

    def _server(self, call: EmulatedCall) -> dict[str, Any] | None:
        server = call.assistant.get("server")
        return server if isinstance(server, dict) and server.get("url") else None

    def sign(self, body: bytes, url: str = "") -> dict[str, str]:
        """The auth headers Vapi would add for the configured credential (``url``: the server
        URL the request goes to, which an HMAC ``payloadFormat`` may cover)."""
        auth = self.webhook_auth
        if not self.webhook_secret or auth == "none":
            return {}
        plan = _PRESETS[auth] if isinstance(auth, str) else auth
        return credential_headers(
            plan,
            self.webhook_secret,
            body,
            method="POST",
            url=url,
            timestamp_ms=int(time.time() * 1000),
            message_id=f"msg_{uuid.uuid4().hex}",
        )

    async def _post(self, call: EmulatedCall, message: dict[str, Any]) -> httpx.Response | None:
        server = self._server(call)
        if server is None or self._client is None:
            return None
        body = json.dumps(message, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            **{str(k): str(v) for k, v in (server.get("headers") or {}).items()},
            **self.sign(body, str(server["url"])),
        }
        timeout = float(server.get("timeoutSeconds") or 20)
        try:
            response = await self._client.post(
                server["url"], content=body, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as exc:
            log.warning("webhook %s failed: %s", message["message"]["type"], exc)
            return None
        self.webhooks_sent.append((response.status_code, message))
        return response

    async def _send_webhooks(self, call: EmulatedCall) -> None:
        """One sender per call keeps a call's webhooks in order (Vapi does not retry)."""
        while (message := await call.webhooks.get()) is not None:
            await self._post(call, message)
        while not call.webhooks.empty():  # reports queued after the sentinel
            message = call.webhooks.get_nowait()
            if message is not None:
                await self._post(call, message)

    async def _call_tool(
        self, call: EmulatedCall, ws: ServerConnection | None, message: dict[str, Any]
    ) -> None:
        response = await self._post(call, message)
        results: list[dict[str, Any]] = []
        if response is not None and response.status_code == 200:
            with contextlib.suppress(ValueError):
                payload = response.json()
                if isinstance(payload, dict) and isinstance(payload.get("results"), list):
                    results = payload["results"]
        if not results:  # Vapi ignores non-200 answers: the model hears a generic failure
            tool_calls = message["message"]["toolCallList"]
            results = [{"toolCallId": t["id"], "error": "No result returned."} for t in tool_calls]
        if call.machine is not None:
            await self._run(call, ws, call.machine.tool_result(results, time.monotonic() * 1000))
