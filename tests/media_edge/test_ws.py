"""WsConnection's fast path against websockets' own protocol objects as the peer: whatever way
the bytes are cut, the messages, their order and every protocol rule are the same as through
websockets alone."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from media_edge.io.ws import WsConnection

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
    assert server.ws.close_sent.code == 1002


async def test_an_unmasked_frame_from_a_client_is_a_protocol_error() -> None:
    server, _, _, seen = open_server()
    server.data_received(b"\x81\x02hi")
    assert seen.messages == []
    assert server.ws.close_sent is not None
    assert server.ws.close_sent.code == 1002


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
    assert server.ws.close_sent.code == 1007


async def test_after_the_peer_closes_nothing_more_is_delivered() -> None:
    server, transport, client, seen = open_server()
    client.send_text(b"last")
    client.send_close(1000, "bye")
    wire = b"".join(client.data_to_send())
    client.state = State.OPEN  # a misbehaving peer keeps sending after its close
    server.data_received(wire + frames_from(client, ("text", b"ghost")))
    assert seen.messages == ["last"]
    assert server.close_code == 1000
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
