"""WsConnection's fast path against websockets' own protocol objects as the peer: whatever way
the bytes are cut, the messages, their order and every protocol rule are the same as through
websockets alone."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from media_edge.io.ws import Message, WsConnection

MAX_SIZE = 32_768


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.aborted = False
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def take(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data


class Server(WsConnection):
    """The server side as the edge runs it, minus the edge's HTTP routes: accept the upgrade."""

    def handshake(self, event: Request | Response) -> None:
        assert isinstance(event, Request)
        assert isinstance(self.ws, ServerProtocol)
        self.ws.send_response(self.ws.accept(event))
        self._flush()


class Recorder:
    def __init__(self, conn: WsConnection) -> None:
        self.messages: list[str | bytes] = []
        self.closed: list[WsConnection] = []
        conn.attach(self.messages.append, self.closed.append)


def client_wire() -> tuple[ClientProtocol, bytes]:
    client = ClientProtocol(parse_uri("ws://edge.test/media"))
    client.send_request(client.connect())
    return client, b"".join(client.data_to_send())


def open_server() -> tuple[Server, FakeTransport, ClientProtocol, Recorder]:
    """A server WsConnection after the upgrade, and the websockets client talking to it."""
    server = Server(ServerProtocol(max_size=MAX_SIZE))
    transport = FakeTransport()
    server.connection_made(transport)
    client, request = client_wire()
    server.data_received(request)
    client.receive_data(transport.take())
    assert client.events_received()
    assert client.state is State.OPEN
    return server, transport, client, Recorder(server)


def frames_from(client: ClientProtocol, *sends: tuple[str, Any]) -> bytes:
    for kind, payload in sends:
        getattr(client, f"send_{kind}")(payload)
    return b"".join(client.data_to_send())


def received_by(client: ClientProtocol, transport: FakeTransport) -> list[Frame]:
    client.receive_data(transport.take())
    return [e for e in client.events_received() if isinstance(e, Frame)]


async def test_upgrade_and_first_frames_in_one_segment_are_all_delivered() -> None:
    server = Server(ServerProtocol(max_size=MAX_SIZE))
    transport = FakeTransport()
    server.connection_made(transport)
    client, request = client_wire()
    client.state = State.OPEN  # pipelining: send frames before reading the 101
    wire = frames_from(client, ("text", b'{"event":"connected"}'), ("binary", b"\x01\x02"))
    server.data_received(request + wire)
    seen = Recorder(server)
    assert seen.messages == ['{"event":"connected"}', b"\x01\x02"]
    assert transport.take().startswith(b"HTTP/1.1 101")


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 130, 10_000])
async def test_messages_survive_any_segmentation(cut: int) -> None:
    server, _, client, seen = open_server()
    texts = [f'{{"event":"media","n":{n},"pad":"{"x" * n}"}}' for n in (0, 120, 200, 3000)]
    sends: list[tuple[str, Any]] = [("text", t.encode()) for t in texts]
    sends.append(("binary", os.urandom(70_000 // 4)))  # a 16-bit length on the wire
    wire = frames_from(client, *sends)
    for at in range(0, len(wire), cut):
        server.data_received(wire[at : at + cut])
    assert seen.messages == [*texts, sends[-1][1]]
    assert server.open
    assert not seen.closed


async def test_a_ping_between_data_frames_is_answered_and_order_kept() -> None:
    server, transport, client, seen = open_server()
    client.send_text(b"one")
    client.send_ping(b"hi")
    client.send_text(b"two")
    server.data_received(b"".join(client.data_to_send()))
    assert seen.messages == ["one", "two"]
    pongs = [f for f in received_by(client, transport) if f.opcode is Opcode.PONG]
    assert [p.data for p in pongs] == [b"hi"]


async def test_fragmented_messages_are_assembled_and_a_stray_data_frame_fails() -> None:
    server, _transport, client, seen = open_server()
    client.send_text(b"hel", fin=False)
    client.send_continuation(b"lo", fin=True)
    server.data_received(b"".join(client.data_to_send()))
    assert seen.messages == ["hello"]
    client.send_binary(b"a", fin=False)
    first = b"".join(client.data_to_send())
    client.expect_continuation_frame = False  # make the client break the rule
    client.send_binary(b"b")
    server.data_received(first + b"".join(client.data_to_send()))
    assert seen.messages == ["hello"]  # neither half of the broken message is delivered
    assert server.ws.close_sent is not None
    assert server.ws.close_sent.code == CloseCode.PROTOCOL_ERROR


async def test_an_unmasked_frame_from_a_client_is_a_protocol_error() -> None:
    server, _, _, seen = open_server()
    server.data_received(b"\x81\x02hi")
    assert seen.messages == []
    assert server.ws.close_sent is not None
    assert server.ws.close_sent.code == CloseCode.PROTOCOL_ERROR


async def test_an_oversize_frame_fails_on_its_header_alone() -> None:
    server, _, client, seen = open_server()
    wire = frames_from(client, ("binary", b"\x00" * (MAX_SIZE + 1)))
    server.data_received(wire[:8])  # header + mask only: no need to wait for 32 KB
    assert server.oversize
    assert seen.closed == [server]
    server.data_received(wire[8:])
    assert seen.messages == []


async def test_invalid_utf8_in_a_text_frame_fails_1007() -> None:
    server, _, client, seen = open_server()
    server.data_received(frames_from(client, ("text", b"\xff\xfe"), ("text", b"after")))
    assert seen.messages == []
    assert server.ws.close_sent is not None
    assert server.ws.close_sent.code == CloseCode.INVALID_DATA


async def test_after_the_peer_closes_nothing_more_is_delivered() -> None:
    server, transport, client, seen = open_server()
    client.send_text(b"last")
    client.send_close(CloseCode.NORMAL_CLOSURE, "bye")
    wire = b"".join(client.data_to_send())
    client.state = State.OPEN  # a misbehaving peer keeps sending after its close
    server.data_received(wire + frames_from(client, ("text", b"ghost")))
    assert seen.messages == ["last"]
    assert server.close_code == CloseCode.NORMAL_CLOSURE
    assert seen.closed == [server]
    closes = [f for f in received_by(client, transport) if f.opcode is Opcode.CLOSE]
    assert len(closes) == 1  # the close was echoed


async def test_server_frames_read_back_identically_by_websockets() -> None:
    server, transport, client, _ = open_server()
    big = "é" * 40_000  # 80 000 bytes: a 64-bit length
    for text in ("x", "y" * 200, big):
        server.send_text(text)
    server.send_binary(b"\x00\xff" * 100)
    frames = received_by(client, transport)
    assert [f.data.decode() for f in frames[:3]] == ["x", "y" * 200, big]
    assert frames[3].opcode is Opcode.BINARY
    assert frames[3].data == b"\x00\xff" * 100
    assert client.state is State.OPEN  # nothing it objected to


async def test_client_frames_are_masked_with_fresh_keys_and_read_back_by_a_server() -> None:
    peer = ServerProtocol(max_size=None)
    client = WsConnection(ClientProtocol(parse_uri("ws://vapi.test/"), max_size=MAX_SIZE))
    transport = FakeTransport()
    client.connection_made(transport)
    request = client.ws.connect()
    client.ws.send_request(request)
    client._flush()
    peer.receive_data(transport.take())
    (req,) = peer.events_received()
    peer.send_response(peer.accept(req))
    peer.send_text(b"welcome")  # in the same segment as the 101
    client.data_received(b"".join(peer.data_to_send()))
    seen = Recorder(client)
    assert client.open
    assert seen.messages == ["welcome"]
    payloads = [os.urandom(160) for _ in range(3)] + [os.urandom(70_000)]
    for payload in payloads:
        client.send_binary(payload)
    wire = transport.take()
    peer.receive_data(wire)
    frames = [e for e in peer.events_received() if isinstance(e, Frame)]
    assert [f.data for f in frames] == payloads
    assert peer.state is State.OPEN
    keys = {wire[i + 2 : i + 6] for i in (0, 166, 332)}  # 160-byte frames: 2 + 4 + 160 each
    assert len(keys) == 3
    assert payloads[0] not in wire  # masked on the wire


# -- property-based differential test: the fast path against websockets' own protocol objects ---
#
# A random stream of frames (text/binary, fragmented or not, masked or not, any mask key, control
# frames between fragments, invalid frames, oversize, non-minimal lengths) goes, cut at random
# points and then one byte at a time, to a WsConnection; the same frames go, one frame at a
# time, to a bare websockets protocol object of the same side and max_size, whose frames are
# assembled into messages the way websockets' asyncio layer does (a text message that is not
# UTF-8 fails the connection with INVALID_DATA). Both must deliver the same messages, close
# with the same code and send the same frames (pongs, close echoes, close on failure, EOF).

PROPERTY_MAX = 1024  # small, so that oversize frames are cheap to generate
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
Wire = tuple[bytes, ...]  # one entry per frame


def encode(
    opcode: int,
    payload: bytes,
    *,
    mask: bytes | None,
    fin: bool = True,
    rsv: int = 0,
    length: str = "minimal",
) -> bytes:
    """One frame as any peer could send it, including what RFC 6455 forbids."""
    n = len(payload)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    bit = 0x80 if mask is not None else 0
    if length == "minimal" and n < 126:
        head = bytes((first, bit | n))
    elif length in ("minimal", "16") and n < 65536:
        head = bytes((first, bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, bit | 127)) + n.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@st.composite
def frames(draw: st.DrawFn, masked: bool) -> Wire:
    """Frames one peer sends: mostly well-formed, masked as its side must (``masked``)."""

    def mask() -> bytes | None:
        wrong = draw(st.integers(0, 30)) == 0  # now and then the other side's masking
        return draw(st.binary(min_size=4, max_size=4)) if masked != wrong else None

    def payload(text: bool, max_size: int) -> bytes:
        if text and draw(st.booleans()):
            return draw(st.text(max_size=max_size // 4)).encode()
        return draw(st.binary(max_size=max_size))

    def control() -> bytes:
        kind = draw(st.sampled_from(["ping", "pong", "close", "bad_control"]))
        if kind == "close":
            code = draw(st.sampled_from([1000, 1001, 1008, 1011, 3000, 4999, 999, 1005, 1016]))
            reason = draw(st.text(max_size=20)).encode()
            body = draw(st.sampled_from([b"", code.to_bytes(2, "big") + reason, b"\x03"]))
            return encode(CLOSE, body, mask=mask())
        if kind == "bad_control":  # fragmented, or over 125 bytes
            return encode(PING, draw(st.binary(max_size=130)), mask=mask(), fin=False)
        return encode(PING if kind == "ping" else PONG, payload(False, 126), mask=mask())

    out: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        kinds = ["message", "message", "fragmented", "big", "control", "junk"]
        kind = draw(st.sampled_from(kinds))
        if kind == "message":
            text = draw(st.booleans())
            length = draw(st.sampled_from(["minimal", "minimal", "16", "64"]))
            body = payload(text, 300)
            out.append(encode(TEXT if text else BINARY, body, mask=mask(), length=length))
        elif kind in ("fragmented", "big"):
            text = draw(st.booleans())
            if kind == "big":  # around max_size: at it, just over it, over it in fragments
                size = draw(st.integers(PROPERTY_MAX - 2, PROPERTY_MAX + 2))
                body = draw(st.binary(min_size=size, max_size=size))
            else:
                body = payload(text, 300)
            cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
            pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
            for i, piece in enumerate(pieces):
                opcode = (TEXT if text else BINARY) if i == 0 else CONT
                out.append(encode(opcode, piece, mask=mask(), fin=i == len(pieces) - 1))
                if i < len(pieces) - 1 and draw(st.booleans()):
                    out.append(control())  # control frames may come between fragments
        elif kind == "control":
            out.append(control())
        else:
            junks = ["reserved_opcode", "rsv", "stray_cont", "unfinished", "bad_length"]
            junk = draw(st.sampled_from(junks))
            body = draw(st.binary(max_size=40))
            if junk == "reserved_opcode":
                out.append(encode(draw(st.sampled_from([3, 7, 0xB, 0xF])), body, mask=mask()))
            elif junk == "rsv":
                out.append(encode(BINARY, body, mask=mask(), rsv=draw(st.integers(1, 7))))
            elif junk == "stray_cont":
                out.append(encode(CONT, body, mask=mask()))
            elif junk == "unfinished":  # a new message before the last one's final fragment
                first = draw(st.sampled_from([TEXT, BINARY]))
                out.append(encode(first, body, mask=mask(), fin=False))
                out.append(encode(draw(st.sampled_from([TEXT, BINARY])), body, mask=mask()))
            else:  # a 64-bit length with the top bit set
                out.append(bytes((0x82, 0xFF)) + b"\x80" + b"\x00" * 7 + b"\x00" * 4)
    return tuple(out)


def opened(side: str) -> tuple[Any, Any]:
    """A (ours-to-be or reference) protocol of ``side`` and its peer, after the handshake."""
    client = ClientProtocol(parse_uri("ws://edge.test/"), max_size=PROPERTY_MAX)
    server = ServerProtocol(max_size=PROPERTY_MAX)
    client.send_request(client.connect())
    server.receive_data(b"".join(client.data_to_send()))
    (request,) = server.events_received()
    server.send_response(server.accept(request))
    client.receive_data(b"".join(server.data_to_send()))
    assert client.events_received()
    return (server, client) if side == "server" else (client, server)


def reference(side: str, wire: Wire) -> tuple[list[Message], int | None, list[Any], bool]:
    """websockets alone: messages, close code sent, frames sent (as the peer reads them), EOF."""
    ref, peer = opened(side)
    messages: list[Message] = []
    parts: list[bytes] | None = None
    text = False
    failed = False
    for frame_bytes in wire:  # one frame at a time: a failure stops what follows at once
        ref.receive_data(frame_bytes)
        for event in ref.events_received():
            opcode = event.opcode
            if failed or opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                continue
            if opcode is Opcode.CONT:
                assert parts is not None
                parts.append(event.data)
            else:
                parts, text = [event.data], opcode is Opcode.TEXT
            if not event.fin:
                continue
            data, parts = b"".join(parts), None
            if not text:
                messages.append(data)
                continue
            try:
                messages.append(data.decode())
            except UnicodeDecodeError:
                ref.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
                failed = True
    chunks = ref.data_to_send()
    sent = sent_frames(peer, b"".join(chunks))
    return messages, ref.close_sent and ref.close_sent.code, sent, b"" in chunks


def sent_frames(peer: Any, data: bytes) -> list[Any]:
    """What a peer reads from ``data``: (opcode, payload, fin), a close as its code alone."""
    peer.receive_data(data)
    read: list[Any] = []
    for event in peer.events_received():
        if event.opcode is Opcode.CLOSE:
            close = peer.close_rcvd
            read.append(("close", close and close.code))
        else:
            read.append((event.opcode, bytes(event.data), event.fin))
    return read


def ours(side: str, wire: Wire, segments: list[bytes]) -> tuple[Any, ...]:
    """The same stream through a WsConnection, delivered in ``segments``."""
    protocol, peer = opened(side)
    conn = (Server if side == "server" else WsConnection)(protocol)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn._mode = 1  # past the handshake (opened() did it): frames from the first byte on
    seen = Recorder(conn)
    for segment in segments:
        conn.data_received(segment)
    sent = sent_frames(peer, transport.take())
    sent_code = conn.ws.close_sent and conn.ws.close_sent.code
    return seen.messages, sent_code, sent, transport.closed


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


@pytest.mark.parametrize("side", ["server", "client"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_path_matches_websockets_for_any_frames_cut_anywhere(side: str, data: Any) -> None:
    wire = data.draw(frames(masked=side == "server"), label="frames")
    stream = b"".join(wire)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="cuts")
    expected = reference(side, wire)

    async def check() -> None:
        assert ours(side, wire, split(stream, cuts)) == expected
        assert ours(side, wire, [stream[i : i + 1] for i in range(len(stream))]) == expected

    asyncio.run(check())


@pytest.mark.parametrize("side", ["server", "client"])
@settings(max_examples=100, deadline=None)
@given(sends=st.lists(st.tuples(st.booleans(), st.binary(max_size=70_000)), max_size=4))
def test_frames_sent_read_back_as_websockets_sends_them(
    side: str, sends: list[tuple[bool, bytes]]
) -> None:
    async def check() -> None:
        protocol, peer = opened(side)
        conn = WsConnection(protocol)
        transport = FakeTransport()
        conn.connection_made(transport)
        ref, ref_peer = opened(side)
        for text, payload in sends:
            body = payload.decode("latin-1") if text else payload
            if isinstance(body, str):
                conn.send_text(body)
                ref.send_text(body.encode())
            else:
                conn.send_binary(body)
                ref.send_binary(body)
        wire = transport.take()
        expected = b"".join(ref.data_to_send())
        if side == "server":
            assert wire == expected  # unmasked: byte for byte what websockets writes
        assert sent_frames(peer, wire) == sent_frames(ref_peer, expected)
        assert peer.state is State.OPEN  # nothing the reader objected to

    asyncio.run(check())
