"""An emulated API Gateway WebSocket API for the console, running the gateway's own handler.

``make run`` puts this where AWS has the console's WebSocket API (template.yaml
``ConsoleWebSocketApi``), in its own process as API Gateway is its own service
(``python -m infra.ws_gateway``); the handler it invokes is the Lambda's,
``functions.console.gateway``, called with Lambda-shaped events in a worker thread.

Each behaviour and its source: infra/README.md, "The console's WebSocket gateway".

Deviation: the management API listens on its own port (one HTTP server cannot take both the
upgrade and arbitrary POSTs here); ``requestContext.domainName`` names that port, so the handler
finds its callback URL exactly as in AWS (``https://{domainName}/{stage}``, http on loopback).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import json
import logging
import secrets
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from infra.asgi import AsgiServer, bind
from voicebridge import live

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
log = logging.getLogger("ws-gateway")
ROUTES = frozenset({"subscribe", "unsubscribe", "ping"})  # template.yaml's routes besides $...
API_ID = "local0000a"
ACCOUNT = "123456789012"


@dataclass(slots=True)
class _Connection:
    id: str
    socket: ServerConnection | None
    source_ip: str
    user_agent: str
    authorizer: dict[str, Any]
    connected_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    open: bool = False  # $connect has finished: posts may reach it


class WsGateway:
    """``await start()``; ``url`` for browsers, ``management_url`` for the edge and handlers."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        stage: str = "live",
        connection_seconds: float = live.CONNECTION_SECONDS,
        idle_seconds: float = live.IDLE_SECONDS,
        sockets: tuple[socket.socket, socket.socket] | None = None,
    ) -> None:
        """``sockets``: (upgrades, management API), bound by the caller; else free ports."""
        self._handler = handler
        self.host = host
        self.stage = stage
        self.connection_seconds = connection_seconds
        self.idle_seconds = idle_seconds
        self._connections: dict[str, _Connection] = {}
        self._pending: dict[ServerConnection, _Connection] = {}
        self._ws: Server | None = None
        self._http: AsgiServer | None = None
        self._sockets = sockets
        self.invocations: list[tuple[str, str]] = []  # (route, connectionId), for tests

    @property
    def url(self) -> str:
        assert self._ws is not None
        port = self._ws.sockets[0].getsockname()[1]
        return f"ws://{self.host}:{port}/{self.stage}"

    @property
    def management_url(self) -> str:
        assert self._http is not None
        return f"http://{self._domain}/{self.stage}"

    @property
    def _domain(self) -> str:
        assert self._http is not None
        return f"{self.host}:{self._http.port}"

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self._connections.values() if c.open)

    async def start(self) -> None:
        upgrades, management = self._sockets or (bind(self.host, 0), bind(self.host, 0))
        upgrades.listen(128)
        self._ws = await serve(
            self._serve,
            sock=upgrades,
            process_request=self._upgrade,
            max_size=live.MAX_FRAME_BYTES,  # browsers send one frame per message: 1009 above it
            ping_interval=None,  # API Gateway sends no pings; the client keeps it alive
        )
        path = f"/{self.stage}/@connections/{{id:path}}"  # an id is opaque: any character
        app = Starlette(
            routes=[Route(path, self._manage, methods=["POST", "GET", "DELETE"])],
        )
        self._http = AsgiServer(app, sock=management)
        await self._http.start()

    async def stop(self) -> None:
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()
            self._ws = None
        if self._http is not None:
            await self._http.stop()
            self._http = None

    # -- Lambda-shaped events -------------------------------------------------------------------

    def _context(self, route: str, kind: str, connection: _Connection) -> dict[str, Any]:
        return {
            "routeKey": route,
            "eventType": kind,
            "connectionId": connection.id,
            "domainName": self._domain,
            "stage": self.stage,
            "apiId": API_ID,
            "requestId": uuid.uuid4().hex,
            "connectedAt": int(connection.connected_at * 1000),
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent},
            "authorizer": connection.authorizer,
        }

    async def _invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        route = event.get("requestContext", {}).get("routeKey", "$authorizer")
        connection_id = event.get("requestContext", {}).get("connectionId", "")
        self.invocations.append((str(route), str(connection_id)))
        return await asyncio.get_running_loop().run_in_executor(None, self._handler, event, None)

    # -- $connect -------------------------------------------------------------------------------

    async def _upgrade(self, socket: ServerConnection, request: WsRequest) -> WsResponse | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != f"/{self.stage}":
            return socket.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        query = dict(parse_qsl(parts.query))
        peer = socket.remote_address[0] if socket.remote_address else "127.0.0.1"
        connection = _Connection(
            id=base64.urlsafe_b64encode(secrets.token_bytes(10)).decode(),  # like "AbC-x_9=="
            socket=None,
            source_ip=str(peer),
            user_agent=request.headers.get("User-Agent", ""),
            authorizer={},
        )
        if not query.get("ticket"):  # the identity source is missing: no authorizer call
            return socket.respond(http.HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        context = self._context("$connect", "CONNECT", connection)
        arn = f"arn:aws:execute-api:us-east-1:{ACCOUNT}:{API_ID}/{self.stage}/$connect"
        authorizer_event = {
            "type": "REQUEST",
            "methodArn": arn,
            "headers": dict(request.headers.raw_items()),
            "queryStringParameters": query,
            "requestContext": context,
        }
        try:
            decision = await self._invoke(authorizer_event)
            statement = decision["policyDocument"]["Statement"][0]
        except Exception:
            return socket.respond(http.HTTPStatus.INTERNAL_SERVER_ERROR, "Internal Server Error\n")
        if statement.get("Effect") != "Allow" or statement.get("Resource") != arn:
            return socket.respond(http.HTTPStatus.FORBIDDEN, "Forbidden\n")
        connection.authorizer = {
            **{k: str(v) for k, v in (decision.get("context") or {}).items()},
            "principalId": str(decision.get("principalId", "")),
        }
        self._connections[connection.id] = connection  # known, but not open: posts are 410
        try:
            answer = await self._invoke(
                {"requestContext": self._context("$connect", "CONNECT", connection)}
            )
        except Exception:
            answer = {"statusCode": 500}
        status = int(answer.get("statusCode") or 200) if isinstance(answer, dict) else 200
        if not 200 <= status < 300:
            self._connections.pop(connection.id, None)
            return socket.respond(http.HTTPStatus(status), "Forbidden\n")
        self._pending[socket] = connection
        return None

    # -- the open socket ------------------------------------------------------------------------

    async def _serve(self, socket: ServerConnection) -> None:
        connection = self._pending.pop(socket)
        connection.socket = socket
        connection.open = True
        lifetime = asyncio.get_running_loop().call_later(
            self.connection_seconds, self._close_soon, socket, CloseCode.GOING_AWAY, "Going away"
        )
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_seconds):
                        message = await socket.recv()
                except TimeoutError:
                    await socket.close(CloseCode.GOING_AWAY, "Going away")
                    break
                connection.last_active = time.time()
                await self._message(connection, message)
        except ConnectionClosed:
            pass
        finally:
            lifetime.cancel()
            connection.open = False
            self._connections.pop(connection.id, None)
            with contextlib.suppress(Exception):
                await self._invoke(
                    {"requestContext": self._context("$disconnect", "DISCONNECT", connection)}
                )

    def _close_soon(self, socket: ServerConnection, code: int, reason: str) -> None:
        asyncio.get_running_loop().create_task(socket.close(code, reason))

    async def _message(self, connection: _Connection, message: str | bytes) -> None:
        body = message if isinstance(message, str) else message.decode("utf-8", "replace")
        route = "$default"
        with contextlib.suppress(ValueError):
            parsed = json.loads(body)
            if isinstance(parsed, dict) and parsed.get("action") in ROUTES:
                route = str(parsed["action"])
        event = {
            "requestContext": {
                **self._context(route, "MESSAGE", connection),
                "messageId": uuid.uuid4().hex[:12],
            },
            "body": body,
            "isBase64Encoded": False,
        }
        try:
            await self._invoke(event)
        except Exception:
            # API Gateway answers a failed integration with this message on the socket and
            # logs the error (execution logs); the socket stays open.
            log.exception("integration failed on route %s", route)
            failure = {"message": "Internal server error", "connectionId": connection.id}
            with contextlib.suppress(ConnectionClosed):
                assert connection.socket is not None
                await connection.socket.send(json.dumps(failure))

    # -- @connections ---------------------------------------------------------------------------

    async def _manage(self, request: Request) -> Response:
        authorization = request.headers.get("authorization", "")
        if not (
            authorization.startswith("AWS4-HMAC-SHA256 Credential=")
            and "/execute-api/aws4_request" in authorization
            and request.headers.get("x-amz-date")
        ):
            return _aws_error(403, "ForbiddenException", "Missing Authentication Token")
        connection = self._connections.get(request.path_params["id"])
        if connection is None or not connection.open or connection.socket is None:
            return _aws_error(410, "GoneException", None)
        if request.method == "GET":
            return JSONResponse(
                {
                    "ConnectedAt": _iso(connection.connected_at),
                    "Identity": {
                        "SourceIp": connection.source_ip,
                        "UserAgent": connection.user_agent,
                    },
                    "LastActiveAt": _iso(connection.last_active),
                }
            )
        if request.method == "DELETE":
            connection.open = False
            await connection.socket.close(CloseCode.NORMAL_CLOSURE, "")
            return Response(status_code=204)
        data = await request.body()
        if len(data) > live.MAX_MESSAGE_BYTES:
            return _aws_error(413, "PayloadTooLargeException", "Payload too large")
        try:
            await connection.socket.send(data.decode("utf-8", "replace"))
        except ConnectionClosed:
            return _aws_error(410, "GoneException", None)
        return Response(status_code=200)


def _aws_error(status: int, kind: str, message: str | None) -> JSONResponse:
    """An AWS REST error: the type in ``x-amzn-ErrorType``, which SDKs map to their exception
    classes (boto3's ``GoneException``)."""
    return JSONResponse({"message": message}, status, headers={"x-amzn-ErrorType": kind})


def _iso(stamp: float) -> str:
    return (
        datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def main(argv: list[str] | None = None) -> None:
    """The gateway as its own process, running the console gateway Lambda's handler with this
    process's environment as the Lambda's (``CONSOLE_*``, ``AWS_ENDPOINT_URL``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m infra.ws_gateway", description=__doc__)
    parser.add_argument("--upgrades-fd", type=int, required=True)
    parser.add_argument("--management-fd", type=int, required=True)
    parser.add_argument("--stage", default="live")
    args = parser.parse_args(argv)
    from functions.console.gateway import handler

    async def run() -> None:
        sockets = (
            socket.socket(fileno=args.upgrades_fd),
            socket.socket(fileno=args.management_fd),
        )
        gateway = WsGateway(handler, stage=args.stage, sockets=sockets)
        await gateway.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await gateway.stop()

    asyncio.run(run())


if __name__ == "__main__":
    main()
