"""Small loopback fakes for socket-level edge tests: Vapi (REST + transport), Twilio REST, a
Twilio Media Streams client. (The full emulators for end-to-end runs live in infra/.)"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from voicebridge import stream_token
from voicebridge.twilio_signature import sign

AUTH_TOKEN = "twilio-auth-token-for-tests"
ACCOUNT_SID = "AC" + "a" * 32
TOKEN_SECRET = "stream-token-secret-for-tests-0123456789"
VAPI_KEY = "vapi-private-key-for-tests"
PUBLIC_URL = "wss://edge.example.com"
SESSIONS_TABLE = "voicebridge-test-sessions"


class MemoryClaims:
    """The stream-claim store in memory, with the table's semantics (one stream per CallSid);
    ``failure`` makes every claim raise it, as an unreachable table would. Tests of the real
    conditional write run it against moto (test_server.py)."""

    def __init__(self) -> None:
        self.claims: dict[str, str] = {}
        self.failure: Exception | None = None

    def claim(self, call_sid: str, stream_sid: str, now: float) -> bool:
        if self.failure is not None:
            raise self.failure
        return self.claims.setdefault(call_sid, stream_sid) == stream_sid


class HttpFake:
    """A minimal HTTP/1.1 server: records requests, answers from ``respond(method, path, body)``."""

    def __init__(self, respond: Callable[[str, str, bytes], tuple[int, dict[str, Any]]]):
        self.respond = respond
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((method, path, headers, body))
                status, answer = self.respond(method, path, body)
                data = json.dumps(answer).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


Behaviour = Callable[[ServerConnection, "FakeVapi"], Awaitable[None]]


async def echo(ws: ServerConnection, fake: FakeVapi) -> None:
    """Vapi transport that plays back whatever it hears (binary in -> binary out).

    An echo that fails because the edge has closed meanwhile must not stop the reading: the
    edge's last messages (``end-call``) were sent before its close and are still queued here."""
    async for message in ws:
        if isinstance(message, bytes):
            fake.audio.extend(message)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(message)
        else:
            fake.texts.append(json.loads(message))


class FakeVapi:
    """POST /call -> a websocketCallUrl on its own transport server, run by ``behaviour``."""

    def __init__(self, behaviour: Behaviour = echo, statuses: list[int] | None = None) -> None:
        self.behaviour = behaviour
        self.statuses = list(statuses or [])  # statuses to answer POST /call with, then 201
        self.http = HttpFake(self._respond)
        self.audio = bytearray()
        self.texts: list[dict[str, Any]] = []
        self.connections: list[ServerConnection] = []
        self.auth: list[str | None] = []
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self._ws: Server | None = None
        self._ws_port = 0

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for method, path, _, body in self.http.requests if path == "/call"]

    async def start(self) -> str:
        self._ws = await serve(self._transport, "127.0.0.1", 0, compression=None, close_timeout=1)
        self._ws_port = self._ws.sockets[0].getsockname()[1]
        return await self.http.start()

    async def stop(self) -> None:
        await self.http.stop()
        assert self._ws is not None
        self._ws.close()
        await self._ws.wait_closed()

    def _respond(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if self.statuses:
            status = self.statuses.pop(0)
            return status, {"message": "scripted failure"}
        n = len(self.bodies)
        url = f"ws://127.0.0.1:{self._ws_port}/call-{n}/transport"
        return 201, {"id": f"vapi-call-{n}", "transport": {"websocketCallUrl": url}}

    async def _transport(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        self.auth.append(ws.request.headers.get("Authorization") if ws.request else None)
        self.connected.set()
        try:
            await self.behaviour(ws, self)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()


def sig_headers(url: str = PUBLIC_URL + "/media") -> dict[str, str]:
    return {"X-Twilio-Signature": sign(AUTH_TOKEN, url)}


class TwilioCaller:
    """Speaks Twilio Media Streams to the edge: connected, start, media, marks, stop."""

    def __init__(
        self,
        port: int,
        call_sid: str = "CA" + "1" * 32,
        stream_sid: str = "",
        path: str = "/media",
        signed_url: str = PUBLIC_URL + "/media",
    ) -> None:
        self.url = f"ws://127.0.0.1:{port}{path}"
        self.signed_url = signed_url  # what X-Twilio-Signature covers (Twilio's <Stream url>)
        self.call_sid = call_sid
        self.stream_sid = stream_sid or "MZ" + call_sid[2:]
        self.ws: ClientConnection | None = None
        self.received: list[dict[str, Any]] = []
        self.played = bytearray()
        self.echo_marks = True
        self._reader: asyncio.Task[None] | None = None
        self.got_message = asyncio.Event()

    async def __aenter__(self) -> TwilioCaller:
        headers = sig_headers(self.signed_url)
        self.ws = await connect(self.url, additional_headers=headers, compression=None)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()
        assert self._reader is not None
        await self._reader

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                self.received.append(message)
                if message["event"] == "media":
                    self.played.extend(base64.b64decode(message["media"]["payload"]))
                elif message["event"] == "mark" and self.echo_marks:
                    await self.send(message)
                self.got_message.set()
        except ConnectionClosed:
            pass

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    def token(self) -> str:
        """A fresh stream token for this call, as /twilio/voice mints one."""
        return stream_token.mint(TOKEN_SECRET, self.call_sid, "asst-1", _now(), 120)

    async def start(
        self, token: str | None = None, account_sid: str = ACCOUNT_SID, **params: str
    ) -> None:
        if token is None:
            token = self.token()
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {
                        "callSid": self.call_sid,
                        "from": "+14155550100",
                        "to": "+14155550199",
                        "token": token,
                        **params,
                    },
                },
            }
        )

    async def media(self, payload: bytes, timestamp: int, stream_sid: str | None = None) -> None:
        await self.send(
            {
                "event": "media",
                "sequenceNumber": str(timestamp // 20 + 2),
                "streamSid": stream_sid or self.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(timestamp // 20 + 1),
                    "timestamp": str(timestamp),
                    "payload": base64.b64encode(payload).decode(),
                },
            }
        )

    async def stop(self) -> None:
        await self.send(
            {
                "event": "stop",
                "sequenceNumber": "999",
                "streamSid": self.stream_sid,
                "stop": {"accountSid": ACCOUNT_SID, "callSid": self.call_sid},
            }
        )

    async def closed(self) -> int | None:
        """Wait for the edge to close the stream (10 s at most: a hang fails); its close code."""
        assert self._reader is not None
        assert self.ws is not None
        async with asyncio.timeout(10.0):
            await asyncio.shield(self._reader)
        return self.ws.close_code

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["event"] == kind]


def _now() -> float:
    import time

    return time.time()
