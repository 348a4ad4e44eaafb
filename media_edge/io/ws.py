"""A thin asyncio shell around websockets' sans-I/O protocol objects, for both of our sockets.

websockets' own asyncio layer costs an async context manager per send and an assembler plus
futures per received message; at 50 frames a second each way per call that was ~40 % of the
edge's CPU. Here ``data_received`` hands bytes to the protocol object and delivers each message
to a plain callback, in order, synchronously; sends serialise and write at once. No task, future
or lock per message: the only timers are a keepalive ping (<= 20 s) and a close deadline.

The protocol object (``ServerProtocol`` for Twilio, ``ClientProtocol`` for Vapi) does the
handshake and all of RFC 6455 that is not a plain data frame: control frames, fragments, the
maximum message size, protocol errors, the close handshake. The plain data frames, which are
nearly all the traffic (a media message every 20 ms each way), take a hand-written fast path
both ways: a complete, unfragmented, correctly masked text or binary frame within max_size is
cut out of the buffer and unmasked here; every other frame is handed to the protocol object
whole, so its parser always sits at a frame boundary, and once the connection is no longer open
everything goes to it. websockets' parser, frame objects and per-frame masking syscall were ~25 %
of the edge's CPU at 100 calls; the fast path is ~6 % (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import struct
from collections.abc import Callable
from typing import Any

from mypy_extensions import mypyc_attr
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidMessage
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets ships the C speedup in its wheels
    from websockets.utils import apply_mask

PING_INTERVAL_S = 15.0  # both sockets; <= 20 s keeps ALB/NAT idle timers and dead peers in check
PING_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 2.0
WRITE_STALL_S = 10.0  # a peer that reads nothing for this long (buffer over high water) is gone
MAX_WRITE_BUFFER = 1 << 20  # ... or that lets this much pile up

_TEXT, _BINARY, _CONT, _PING, _PONG = (
    Opcode.TEXT,
    Opcode.BINARY,
    Opcode.CONT,
    Opcode.PING,
    Opcode.PONG,
)
_OPEN = State.OPEN
_CONNECTING = State.CONNECTING
_CLOSE_INVALID_DATA = CloseCode.INVALID_DATA
_CLOSE_INTERNAL = CloseCode.INTERNAL_ERROR
_CLOSE_TOO_BIG = CloseCode.MESSAGE_TOO_BIG

# How bytes received are handled (see the module docstring).
_HANDSHAKE, _FRAMES, _PROTOCOL = 0, 1, 2
_END_OF_HEADERS = b"\r\n\r\n"
MAX_HANDSHAKE_BYTES = 16_384  # beyond this without a blank line, websockets rejects the request
_FIN_TEXT, _FIN_BINARY = 0x81, 0x82  # FIN set, no RSV bits (no extensions are negotiated)
_MASK_BIT = 0x80
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack
_MASK_POOL_BYTES = 4096  # masking keys for 1024 client frames per os.urandom call

Message = str | bytes
OnMessage = Callable[[Message], None]
OnClose = Callable[["WsConnection"], None]


def _ignore(*_: Any) -> None:
    return None


class _MaskKeys:
    """Unpredictable masking keys (RFC 6455 5.3) drawn from one os.urandom block at a time, rather
    than a syscall per frame as websockets does."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def take(self) -> bytes:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(_MASK_POOL_BYTES), 0
        self._at = at + 4
        return self._pool[at : at + 4]


_mask_keys = _MaskKeys()


def _header(first: int, length: int, mask_bit: int) -> bytes:
    if length < 126:
        return bytes((first, mask_bit | length))
    if length < 65536:
        return _HEADER_16(first, mask_bit | 126, length)
    return _HEADER_64(first, mask_bit | 127, length)


# Compiled by infra/edge_compile.py; the server's TwilioSocket (interpreted) subclasses it.
@mypyc_attr(allow_interpreted_subclasses=True)
class WsConnection(asyncio.Protocol):
    """One WebSocket over one transport. Callbacks (set with :meth:`attach`):

    - ``on_message(str | bytes)`` for each complete message, in arrival order;
    - ``on_close(conn)`` once, when the peer closed, the protocol failed or the TCP link died
      (``close_code`` / ``oversize`` tell which);
    - ``on_lost(conn)`` once, when the transport is gone (nothing left to release).

    Messages that arrive before :meth:`attach` are kept and replayed by it.
    """

    def __init__(self, protocol: ServerProtocol | ClientProtocol) -> None:
        self.ws = protocol
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._on_message: OnMessage | None = None
        self._on_close: OnClose = _ignore
        self.on_lost: OnClose = _ignore
        self._backlog: list[Message] = []
        self._parts: list[bytes] | None = None  # a fragmented message being assembled
        self._parts_text = False
        self._close_reported = False
        self._failed = False
        self._lost = False
        self._ping_payload: bytes | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._opened: asyncio.Future[None] | None = None  # client side: the handshake's outcome
        self._mode = _HANDSHAKE
        self._rx = b""  # received bytes not yet handled: a partial request or frame
        self._client = isinstance(protocol, ClientProtocol)
        self._mask_in = 0 if self._client else _MASK_BIT  # clients mask, servers do not
        self._max_size = protocol.max_message_size

    # -- API ------------------------------------------------------------------------------------

    def attach(self, on_message: OnMessage, on_close: OnClose) -> None:
        self._on_close = on_close
        self._on_message = on_message
        backlog, self._backlog = self._backlog, []
        for message in backlog:
            on_message(message)
        if self._close_reported:
            on_close(self)

    @property
    def open(self) -> bool:
        return self.ws.state is _OPEN

    @property
    def close_code(self) -> int | None:
        """The code of the close frame the peer sent (None: none received)."""
        rcvd = self.ws.close_rcvd
        return rcvd.code if rcvd is not None else None

    @property
    def oversize(self) -> bool:
        """We failed the connection because a message was over max_size (MESSAGE_TOO_BIG)."""
        sent = self.ws.close_sent
        return sent is not None and sent.code == _CLOSE_TOO_BIG

    def send_text(self, text: str) -> None:
        if self.ws.state is _OPEN:
            self._send(_FIN_TEXT, text.encode())

    def send_binary(self, data: bytes) -> None:
        if self.ws.state is _OPEN:
            self._send(_FIN_BINARY, data)

    def _send(self, first: int, payload: bytes) -> None:
        """One unfragmented data frame, straight to the transport (the fast path out)."""
        transport = self.transport
        if transport is None or self._lost:
            return
        if self._client:
            key = _mask_keys.take()
            transport.write(
                _header(first, len(payload), _MASK_BIT) + key + apply_mask(payload, key)
            )
        else:
            transport.write(_header(first, len(payload), 0) + payload)
        if self._stall_timer is not None and transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.abort()

    def close(self, code: CloseCode = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; the transport is aborted if it does not finish in
        CLOSE_TIMEOUT_S."""
        if self.ws.state is _OPEN:
            self.ws.send_close(code, reason)
            self._flush()
            self._arm_close_deadline()
        elif self.ws.state is _CONNECTING:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.abort()

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        mode = self._mode
        if mode is _FRAMES:
            self._frames(self._rx + data if self._rx else data)
        elif mode is _HANDSHAKE:
            self._handshake_bytes(self._rx + data if self._rx else data)
        else:
            self._through_protocol(data)

    def _handshake_bytes(self, data: bytes) -> None:
        """Give websockets the HTTP request or response and nothing after it, so that frames that
        follow in the same segment still take the fast path."""
        end = data.find(_END_OF_HEADERS)
        if end < 0 and len(data) <= MAX_HANDSHAKE_BYTES:
            self._rx = data
            return
        cut = len(data) if end < 0 else end + len(_END_OF_HEADERS)
        self._rx = b""
        self._through_protocol(data[:cut])
        self._mode = _FRAMES if self.ws.state is _OPEN else _PROTOCOL
        rest = data[cut:]
        if rest:
            self.data_received(rest)

    def _frames(self, data: bytes) -> None:
        """The fast path in: plain data frames are delivered from here, any other complete frame
        goes to the protocol object whole; an incomplete one waits in ``_rx``."""
        ws = self.ws
        max_size = self._max_size
        size = len(data)
        pos = 0
        while ws.state is _OPEN and size - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            length = second & 0x7F
            head = pos + 2
            if length == 126:
                head += 2
                if head > size:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
            elif length == 127:
                head += 8
                if head > size:
                    break
                length = int.from_bytes(data[pos + 2 : head], "big")
            if max_size is not None and length > max_size:
                self._mode = _PROTOCOL  # websockets fails it (MESSAGE_TOO_BIG) on seeing the header
                break
            masked = second & _MASK_BIT
            if masked:
                head += 4
            stop = head + length
            if stop > size:
                break
            if (
                first in (_FIN_TEXT, _FIN_BINARY)
                and masked == self._mask_in
                and ws.current_size is None  # no fragmented message in progress
            ):
                if masked:
                    payload = apply_mask(data[head:stop], data[head - 4 : head])
                else:
                    payload = bytes(data[head:stop])
                self._deliver(payload, first == _FIN_TEXT)
            else:
                self._through_protocol(data[pos:stop])
            pos = stop
        if ws.state is not _OPEN:
            self._mode = _PROTOCOL  # closing or failed: websockets handles what follows
        if self._mode is _PROTOCOL:
            self._rx = b""
            if pos < size:
                self._through_protocol(data[pos:])
        else:
            self._rx = data[pos:]

    def _through_protocol(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        events = ws.events_received()
        self._flush()  # what the protocol answers by itself: pongs, close echoes, EOF
        for event in events:
            if isinstance(event, Frame):
                self._frame(event)
            else:
                self.handshake(event)
        state = ws.state
        if state is not _OPEN:
            self._after_close()
            if state is not _CONNECTING:
                self._report_close()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        self._report_close()
        return None  # close the transport: WebSocket never writes after the peer's EOF

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.ws.receive_eof()
        self.ws.data_to_send()
        for timer in (self._ping_timer, self._close_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._close_timer = self._stall_timer = None
        opened = self._opened
        if opened is not None and not opened.done():
            opened.set_exception(
                self.ws.handshake_exc or ConnectionError("connection lost during the handshake")
            )
        self._report_close()
        self.on_lost(self)

    def pause_writing(self) -> None:
        self._stall_timer = self._loop.call_later(WRITE_STALL_S, self.abort)

    def resume_writing(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    # -- internals --------------------------------------------------------------------------------

    def handshake(self, event: Request | Response) -> None:
        """Client side: the server's answer to our upgrade (the server side overrides this)."""
        opened = self._opened
        if opened is None or opened.done():
            return
        exc = self.ws.handshake_exc
        if exc is not None:
            opened.set_exception(exc)
        else:
            opened.set_result(None)
            self.start_keepalive()

    def _frame(self, frame: Frame) -> None:
        if self._failed:
            return  # RFC 6455 7.1.7: nothing more is processed once we failed the connection
        opcode = frame.opcode
        if opcode is _TEXT or opcode is _BINARY:
            if not frame.fin:
                self._parts, self._parts_text = [bytes(frame.data)], opcode is _TEXT
                return
            data = frame.data
            text = opcode is _TEXT
        elif opcode is _CONT:
            parts = self._parts
            assert parts is not None  # the protocol rejects a stray continuation
            parts.append(bytes(frame.data))
            if not frame.fin:
                return
            data, text, self._parts = b"".join(parts), self._parts_text, None
        else:
            if opcode is _PONG and frame.data == self._ping_payload:
                self._pong()
            return  # pings are answered by the protocol; close is handled after the batch
        self._deliver(bytes(data), text)  # unmasked frames come out of the parser as bytearrays

    def _deliver(self, data: bytes, text: bool) -> None:
        message: Message
        if text:
            try:
                message = data.decode()
            except UnicodeDecodeError:
                self._fail(_CLOSE_INVALID_DATA, "invalid UTF-8")
                return
        else:
            message = data
        if self._on_message is not None:
            self._on_message(message)
        else:
            self._backlog.append(message)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or self._lost:
            self.ws.data_to_send()
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                try:
                    transport.write_eof()
                except (OSError, RuntimeError):  # uvloop raises RuntimeError here
                    transport.close()
            else:  # TLS: no half-close
                transport.close()
        if self._stall_timer is not None and transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.abort()

    def _fail(self, code: CloseCode, reason: str) -> None:
        self._failed = True
        self.ws.fail(code, reason)
        self._flush()
        self._after_close()

    def _after_close(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if self.ws.close_expected():
            self._arm_close_deadline()

    def _arm_close_deadline(self) -> None:
        if self._close_timer is None and not self._lost:
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT_S, self.abort)

    def _report_close(self) -> None:
        if self._close_reported:
            return
        self._close_reported = True
        if self._on_message is not None:
            self._on_close(self)

    # keepalive: one timer per connection, moved every PING_INTERVAL_S

    def start_keepalive(self) -> None:
        self._ping_timer = self._loop.call_later(PING_INTERVAL_S, self._ping)

    def _ping(self) -> None:
        if self.ws.state is not _OPEN:
            self._ping_timer = None
            return
        self._ping_payload = os.urandom(4)
        self.ws.send_ping(self._ping_payload)
        self._flush()
        self._ping_timer = self._loop.call_later(PING_TIMEOUT_S, self._ping_timeout)

    def _pong(self) -> None:
        self._ping_payload = None
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        self._ping_timer = self._loop.call_later(PING_INTERVAL_S, self._ping)

    def _ping_timeout(self) -> None:
        self._ping_timer = None
        if self.ws.state is _OPEN:
            self._fail(_CLOSE_INTERNAL, "keepalive ping timeout")
            self._report_close()
        self.abort()  # the peer is unresponsive: no point waiting for its close


_client_ssl: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _client_ssl
    if _client_ssl is None:
        _client_ssl = ssl.create_default_context()
    return _client_ssl


async def connect(url: str, headers: dict[str, str], *, max_size: int) -> WsConnection:
    """Open a client WebSocket (ws:// or wss://). Raises InvalidURI, OSError, InvalidHandshake;
    cancelling it aborts the half-open connection."""
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, max_size=max_size)
    request = protocol.connect()
    for name, value in headers.items():
        request.headers[name] = value
    loop = asyncio.get_running_loop()
    conn = WsConnection(protocol)
    conn._opened = loop.create_future()
    context = _ssl_context() if uri.secure else None
    await loop.create_connection(
        lambda: conn, uri.host, uri.port, ssl=context, server_hostname=uri.host if context else None
    )
    try:
        protocol.send_request(request)
        conn._flush()
        await conn._opened
    except BaseException as exc:
        conn.abort()
        if isinstance(exc, ConnectionError) and not isinstance(exc, InvalidHandshake):
            raise InvalidMessage("connection closed during the handshake") from exc
        raise
    return conn
