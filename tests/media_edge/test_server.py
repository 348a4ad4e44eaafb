"""The edge on loopback: a real websockets server, a Twilio-speaking client, a small Vapi fake.

Every test runs twice: on asyncio and on uvloop, the loop ``python -m media_edge`` uses by
default (their transports differ in write_eof, buffering and close ordering)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import CloseCode
from websockets.http11 import Request

from infra.local_aws import REGION, embedded_aws
from media_edge.core import Call
from media_edge.dsp import ulaw_decode, ulaw_encode
from media_edge.io import ws
from media_edge.io.claims import CLAIM_TIMEOUT_S, DynamoClaimStore
from media_edge.io.session import CallSession
from media_edge.server import EdgeServer, call_config
from tests.media_edge.fakes import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUBLIC_URL,
    SESSIONS_TABLE,
    TOKEN_SECRET,
    VAPI_KEY,
    Behaviour,
    FakeVapi,
    HttpFake,
    MemoryClaims,
    TwilioCaller,
    echo,
    sig_headers,
)
from voicebridge import stream_token, telemetry
from voicebridge.config import load_settings

WAIT_S = 10.0  # upper bound for every wait: a hang fails instead of blocking the suite


# pytest-asyncio 1.x deprecates overriding this fixture for a loop-factory hook, which would
# apply to every async test of the suite; this override works across the versions we allow.
pytestmark = pytest.mark.filterwarnings('ignore:Overriding the "event_loop_policy" fixture')


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    if request.param == "uvloop":
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


async def until(predicate: Callable[[], bool]) -> None:
    """Poll a condition the fakes update (bounded: a hang fails the test instead)."""
    async with asyncio.timeout(WAIT_S):
        while not predicate():  # noqa: ASYNC110 - the fakes have no event for every condition
            await asyncio.sleep(0.005)


class Stack:
    """Edge + fakes, started per test with the knobs the test needs; stopped leak-free."""

    def __init__(self) -> None:
        self.vapi: FakeVapi | None = None
        self.twilio_rest = HttpFake(lambda m, p, b: (200, {"sid": "CA", "status": "completed"}))
        self.edge: EdgeServer | None = None
        self.claims = MemoryClaims()

    async def start(
        self,
        behaviour: Behaviour = echo,
        statuses: list[int] | None = None,
        env: dict[str, str] | None = None,
        vapi: FakeVapi | None = None,
        claim_store: Any = None,
        **config: Any,
    ) -> EdgeServer:
        self.vapi = vapi or FakeVapi(behaviour, statuses)
        vapi_url = await self.vapi.start()
        twilio_url = await self.twilio_rest.start()
        settings = load_settings(
            "edge",
            {
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
                "TWILIO_API_BASE": twilio_url,
                "VAPI_API_KEY": VAPI_KEY,
                "VAPI_BASE_URL": vapi_url,
                "EDGE_PUBLIC_URL": PUBLIC_URL,
                "STREAM_TOKEN_SECRET": TOKEN_SECRET,
                "SESSIONS_TABLE": SESSIONS_TABLE,
                "EDGE_PORT": "0",
                "METRICS_FLUSH_SECONDS": "300",
                **(env or {}),
            },
        )
        config.setdefault("connect_timeout_ms", 3000)
        self.edge = EdgeServer(
            settings,
            call_config_override=replace(call_config(settings), **config),
            claim_store=claim_store or self.claims,
        )
        await self.edge.start()
        return self.edge

    @property
    def port(self) -> int:
        assert self.edge is not None
        return self.edge.port

    def caller(self, call_sid: str = "CA" + "1" * 32, **options: Any) -> TwilioCaller:
        return TwilioCaller(self.port, call_sid, **options)

    async def stop(self) -> None:
        if self.edge is not None:
            await self.edge.stop()
        if self.vapi is not None:
            await self.vapi.stop()
        await self.twilio_rest.stop()


@pytest.fixture(autouse=True)
def feeds_never_nest(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What lets CallSession run without a feed queue: no feed starts while another runs (its
    actions never call back synchronously), checked on both loops in every test of this file."""
    original = CallSession.feed
    depth = [0, 0]  # now, deepest

    def feed(self: CallSession, event: Any, now: float) -> None:
        depth[0] += 1
        depth[1] = max(depth)
        try:
            original(self, event, now)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(CallSession, "feed", feed)
    yield
    assert depth[1] <= 1, "a feed started inside another"


def tone(freq: float, seconds: float, rate: int = 8000, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))


def frame_levels(pcm: np.ndarray, samples_per_frame: int) -> np.ndarray:
    frames = pcm[: len(pcm) // samples_per_frame * samples_per_frame].astype(np.float64)
    return np.sqrt((frames.reshape(-1, samples_per_frame) ** 2).mean(axis=1))


async def send_audio(caller: TwilioCaller, mulaw: bytes, start_ts: int = 0) -> None:
    for i in range(0, len(mulaw), 160):
        await caller.media(mulaw[i : i + 160], start_ts + i // 160 * 20)


async def bridged(stack: Stack, caller: TwilioCaller) -> None:
    await caller.start()
    assert stack.vapi is not None
    await until(lambda: stack.edge is not None and "bridging" in _states(stack))


def _states(stack: Stack) -> set[str]:
    """The states of every stream on the edge (squatters and replays are streams too)."""
    assert stack.edge is not None
    return {session.call.state.value for session in stack.edge._sessions}


def _state(stack: Stack) -> str:
    assert stack.edge is not None
    sessions = list(stack.edge._sessions)
    return sessions[0].call.state.value if sessions else "none"


# -- HTTP on the same port ------------------------------------------------------------------


async def test_health_and_ready(stack):
    await stack.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.port}") as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code == 200
        assert (await client.get("/nope")).status_code == 404


async def test_bad_signature_is_refused_with_403_before_upgrading(stack):
    await stack.start()
    url = f"ws://127.0.0.1:{stack.port}/media"
    for headers in ({}, {"X-Twilio-Signature": "forged"}, sig_headers("wss://other.example/media")):
        with pytest.raises(InvalidStatus) as info:
            await connect(url, additional_headers=headers)
        assert info.value.response.status_code == 403
    assert stack.vapi.http.requests == []


async def test_signature_over_the_public_url_with_trailing_slash_is_accepted(stack):
    await stack.start()
    url = f"ws://127.0.0.1:{stack.port}/media"
    ws = await connect(url, additional_headers=sig_headers(PUBLIC_URL + "/media/"))
    await ws.close()


async def test_rejected_token_closes_1008_and_no_vapi_call_is_made(stack):
    await stack.start()
    async with stack.caller() as caller:
        forged = "v1.eyJjIjoiQ0EifQ.AAAA"
        await caller.start(token=forged)
        assert await caller.closed() == CloseCode.POLICY_VIOLATION
    assert stack.vapi.http.requests == []


async def test_a_query_string_is_refused_before_the_upgrade_even_if_signed(stack):
    await stack.start()
    base = f"ws://127.0.0.1:{stack.port}/media"
    for signed in ("/media", "/media?x=1"):
        with pytest.raises(InvalidStatus) as info:
            await connect(base + "?x=1", additional_headers=sig_headers(PUBLIC_URL + signed))
        assert info.value.response.status_code == 400
    # An empty query too (clients drop a bare "?", so by hand):
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    headers = "".join(f"{k}: {v}\r\n" for k, v in sig_headers().items())
    writer.write(
        (
            "GET /media? HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\n{headers}\r\n"
        ).encode()
    )
    async with asyncio.timeout(WAIT_S):
        assert (await reader.readline()).startswith(b"HTTP/1.1 400 ")
    writer.close()
    assert stack.edge.open_streams == 0
    assert stack.vapi.http.requests == []


async def test_a_start_from_another_twilio_account_closes_1008_without_a_vapi_call(stack):
    await stack.start()
    async with stack.caller() as caller:
        await caller.start(account_sid="AC" + "f" * 32)
        assert await caller.closed() == CloseCode.POLICY_VIOLATION
    assert stack.vapi.http.requests == []
    assert stack.edge.metrics._errors == {"wrong_account": 1}


@pytest.mark.parametrize("sid", ["CA" + "1" * 32 + "CallStatusringing", "CA" + "1" * 32 + "\n"])
async def test_a_call_sid_that_is_not_exactly_a_sid_closes_1008(stack, sid):
    await stack.start()
    async with stack.caller(sid, stream_sid="MZ" + "1" * 32) as caller:
        await caller.start(token=stream_token.mint(TOKEN_SECRET, sid, "asst-1", time.time(), 60))
        assert await caller.closed() == CloseCode.POLICY_VIOLATION
    assert stack.vapi.http.requests == []
    assert stack.edge.metrics._errors == {"twilio_bad_sid": 1}


async def test_edge_public_url_with_a_path_prefix_serves_prefix_media(stack):
    public = "wss://edge.example.com/voice/edge"
    await stack.start(env={"EDGE_PUBLIC_URL": public + "/"})
    async with stack.caller(path="/voice/edge/media", signed_url=public + "/media") as caller:
        await bridged(stack, caller)
        await send_audio(caller, b"\x42" * 320)
        await until(lambda: len(caller.played) >= 320)
        await caller.stop()
        assert await caller.closed() == CloseCode.NORMAL_CLOSURE
    url = f"ws://127.0.0.1:{stack.port}"
    for path, signed, status in (
        ("/media", public + "/media", 404),  # the unprefixed path is not served
        ("/voice/edge/media", "wss://edge.example.com/media", 403),  # signed without the prefix
    ):
        with pytest.raises(InvalidStatus) as info:
            await connect(url + path, additional_headers=sig_headers(signed))
        assert info.value.response.status_code == status


# -- no slot squatting -------------------------------------------------------------------------


async def squat(port: int) -> tuple[ClientConnection, asyncio.Task[None]]:
    """The reported attack: a signed upgrade, then ``connected`` again and again, never start."""
    squatter = await connect(f"ws://127.0.0.1:{port}/media", additional_headers=sig_headers())

    async def keep_alive() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await squatter.send(json.dumps({"event": "connected", "protocol": "Call"}))
                await asyncio.sleep(0.1)

    return squatter, asyncio.create_task(keep_alive())


async def test_squatters_hold_no_call_slot_and_a_real_call_gets_through(stack):
    edge = await stack.start(
        env={"EDGE_MAX_CALLS": "1", "EDGE_MAX_PENDING": "4"}, start_timeout_ms=1500
    )
    squatters = [await squat(stack.port) for _ in range(6)]  # more than the pending cap
    await until(lambda: edge.open_streams == 4)  # the two oldest made room for newer ones
    assert edge.active_calls == 0
    assert edge.metrics._active_calls is not None
    assert edge.metrics._active_calls() == 0  # ActiveCalls, what autoscaling reads
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.port}") as client:
        assert (await client.get("/ready")).status_code == 200  # squatters are not calls
        async with stack.caller() as caller:
            await bridged(stack, caller)
            await send_audio(caller, b"\x42" * 320)
            await until(lambda: b"\x42" * 320 in bytes(caller.played))
            assert edge.active_calls == 1
            assert (await client.get("/ready")).status_code == 503  # the call filled the task
            codes = []
            for squatter, keep_alive in squatters:
                async with asyncio.timeout(WAIT_S):
                    await keep_alive
                codes.append(squatter.close_code)
            # The three oldest were evicted (connection dropped), the rest ended at their start
            # deadline although they kept sending: only the real call is left.
            assert codes == [CloseCode.ABNORMAL_CLOSURE] * 3 + [CloseCode.POLICY_VIOLATION] * 3
            assert edge.open_streams == 1
            assert caller.ws.close_code is None
            await caller.stop()
            await caller.closed()
    assert len(stack.vapi.bodies) == 1
    assert edge.metrics._counts[telemetry.STREAMS_EVICTED] == 3
    assert edge.metrics._errors == {"start_timeout": 3}


# -- one stream per call -----------------------------------------------------------------------


async def test_a_token_used_twice_bridges_one_stream_and_one_vapi_call(stack):
    await stack.start()
    async with stack.caller() as first, stack.caller(stream_sid="MZ" + "9" * 32) as replay:
        token = first.token()
        await first.start(token=token)
        await until(lambda: "bridging" in _states(stack))
        await replay.start(token=token)
        assert await replay.closed() == CloseCode.POLICY_VIOLATION
        await send_audio(first, b"\x42" * 160)
        await until(lambda: b"\x42" * 160 in bytes(first.played))  # the first call goes on
    assert len(stack.vapi.bodies) == 1
    assert stack.edge.metrics._errors == {"stream_already_claimed": 1}


async def test_this_tasks_claim_holds_while_the_claim_store_is_down(stack):
    stack.claims.failure = OSError("table unreachable")
    edge = await stack.start()
    async with stack.caller() as first, stack.caller(stream_sid="MZ" + "9" * 32) as replay:
        await bridged(stack, first)  # fail open: the caller is not punished for the outage
        await replay.start(token=replay.token())  # a second token for the same CallSid
        assert await replay.closed() == CloseCode.POLICY_VIOLATION
    assert len(stack.vapi.bodies) == 1
    assert edge.metrics._counts[telemetry.CLAIM_STORE_ERRORS] == 1


class StalledTable:
    """A DynamoDB endpoint that accepts connections and never answers."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@pytest.fixture(scope="module")
def moto_table() -> Iterator[dict[str, str]]:
    """A real DynamoDB API (moto server on loopback) with the template's sessions table."""
    with embedded_aws(prefix="edge-claims") as env:
        yield env


def aws_session() -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


def table_store(env: dict[str, str]) -> DynamoClaimStore:
    return DynamoClaimStore(
        env["SESSIONS_TABLE"], env["AWS_ENDPOINT_URL"], retention_s=3600, session=aws_session()
    )


@pytest.mark.parametrize("replay", ["same token", "second token"])
async def test_one_stream_per_call_sid_across_edge_tasks_through_the_table(
    stack, moto_table, replay
):
    call_sid = "CA" + secrets.token_hex(16)  # the table outlives each test
    edge = await stack.start(claim_store=table_store(moto_table))
    other = EdgeServer(edge.settings, claim_store=table_store(moto_table))  # a second task
    other_port = await other.start()
    try:
        async with (
            stack.caller(call_sid) as first,
            TwilioCaller(other_port, call_sid, stream_sid="MZ" + "9" * 32) as second,
        ):
            token = first.token()
            await first.start(token=token)
            await until(lambda: "bridging" in _states(stack))
            await second.start(token=token if replay == "same token" else second.token())
            assert await second.closed() == CloseCode.POLICY_VIOLATION
            assert first.ws.close_code is None
        assert other.metrics._errors == {"stream_already_claimed": 1}
    finally:
        await other.stop()
    assert len(stack.vapi.bodies) == 1
    # /twilio/voice wrote no session here: the claim made its own item.
    item = (
        aws_session()
        .client("dynamodb", endpoint_url=moto_table["AWS_ENDPOINT_URL"])
        .get_item(
            TableName=moto_table["SESSIONS_TABLE"],
            Key={"pk": {"S": f"CALL#{call_sid}"}, "sk": {"S": "STREAM"}},
        )["Item"]
    )
    assert item["stream_sid"] == {"S": first.stream_sid}
    assert int(item["expires_at"]["N"]) - int(item["claimed_at"]["N"]) == 3600


async def test_a_stalled_table_fails_open_within_the_claim_budget(stack):
    stalled = StalledTable()
    endpoint = await stalled.start()
    try:
        edge = await stack.start(
            claim_store=DynamoClaimStore(
                "sessions", endpoint, retention_s=60, session=aws_session()
            )
        )
        async with stack.caller() as caller:
            began = time.monotonic()
            await bridged(stack, caller)
            waited = time.monotonic() - began
        # Bridged, so within the call's connect deadline (3 s here) although the table never
        # answered: the claim gave up after CLAIM_TIMEOUT_S, not botocore's 60 s read timeout.
        assert waited < 10.0
        assert CLAIM_TIMEOUT_S < 3.0
        assert edge.metrics._counts[telemetry.CLAIM_STORE_ERRORS] == 1
        assert len(stack.vapi.bodies) == 1
    finally:
        await stack.stop()
        stack.edge = stack.vapi = None
        await stalled.stop()


# -- audio both ways ------------------------------------------------------------------------


async def test_mulaw_tone_passes_through_both_ways_without_gaps(stack):
    await stack.start(lead_ms=60)
    sent = ulaw_encode(tone(440.0, 0.5))
    async with stack.caller() as caller:
        await bridged(stack, caller)
        await send_audio(caller, sent)
        await until(lambda: len(stack.vapi.audio) >= len(sent))
        assert bytes(stack.vapi.audio) == sent  # passthrough: bit-exact, in order, nothing lost
        await until(lambda: len(caller.played) >= len(sent))
        assert bytes(caller.played) == sent
        assert abs(peak_hz(ulaw_decode(bytes(caller.played)), 8000) - 440.0) < 4.0
        (create,) = stack.vapi.bodies
        assert create["transport"]["audioFormat"]["format"] == "mulaw"
        assert create["assistantId"] == "asst-1"
        assert stack.vapi.auth == [f"Bearer {VAPI_KEY}"]
        marks = caller.events("mark")
        assert marks  # the edge tracks playback with marks
        await caller.stop()
        assert await caller.closed() == CloseCode.NORMAL_CLOSURE


async def test_pcm16_tone_is_resampled_both_ways_at_the_same_frequency(stack):
    await stack.start(audio_format="pcm16", lead_ms=60)
    sent = ulaw_encode(tone(1000.0, 0.5))
    async with stack.caller() as caller:
        await bridged(stack, caller)
        await send_audio(caller, sent)
        await until(lambda: len(stack.vapi.audio) >= 2 * 2 * 4000)
        heard = np.frombuffer(bytes(stack.vapi.audio), "<i2")
        assert len(heard) == 8000  # 0.5 s at 16 kHz: nothing lost, nothing invented
        assert abs(peak_hz(heard, 16000) - 1000.0) < 4.0
        assert frame_levels(heard[32:], 320).min() > 2000  # no gap anywhere
        await until(lambda: len(caller.played) >= len(sent))
        back = ulaw_decode(bytes(caller.played))
        assert len(back) == 4000
        assert abs(peak_hz(back, 8000) - 1000.0) < 4.0
        assert frame_levels(back[32:], 160).min() > 2000
        (create,) = stack.vapi.bodies
        assert create["transport"]["audioFormat"] == {
            "format": "pcm_s16le",
            "container": "raw",
            "sampleRate": 16000,
        }


class SlowVapi(FakeVapi):
    """A Vapi whose transport socket opens only when the test says so (a slow POST /call)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def start(self) -> str:
        async def hold(connection: ServerConnection, request: Request) -> None:
            self.asked.set()
            await self.release.wait()

        self._ws = await serve(
            self._transport, "127.0.0.1", 0, compression=None, close_timeout=1, process_request=hold
        )
        self._ws_port = self._ws.sockets[0].getsockname()[1]
        return await self.http.start()


async def test_caller_audio_sent_while_vapi_connects_reaches_vapi_first_and_in_order(stack):
    slow = SlowVapi()
    edge = await stack.start(vapi=slow)
    sent = ulaw_encode(tone(440.0, 0.4))
    async with stack.caller() as caller:
        await caller.start()
        async with asyncio.timeout(WAIT_S):
            await slow.asked.wait()  # POST /call answered; the socket is not open yet
        await send_audio(caller, sent[:1600])  # the caller's first 200 ms
        (session,) = edge._sessions
        await until(lambda: session.call.frames_in == 10)
        assert session.call.state.value == "started"
        slow.release.set()
        await until(lambda: _state(stack) == "bridging")
        await send_audio(caller, sent[1600:], start_ts=200)
        await until(lambda: len(slow.audio) >= len(sent))
        assert bytes(slow.audio) == sent  # nothing clipped, nothing reordered or repeated
    assert edge.metrics._errors == {}


async def test_missing_timestamps_reach_vapi_as_silence(stack):
    await stack.start()
    frames = [bytes([0x10 + i]) * 160 for i in range(4)]
    async with stack.caller() as caller:
        await bridged(stack, caller)
        for ts, frame in zip((0, 20, 80, 100), frames, strict=True):
            await caller.media(frame, ts)
        await until(lambda: len(stack.vapi.audio) >= 6 * 160)
        expected = frames[0] + frames[1] + b"\xff" * 320 + frames[2] + frames[3]
        assert bytes(stack.vapi.audio) == expected


async def test_dtmf_reaches_vapi_as_add_message(stack):
    await stack.start()
    async with stack.caller() as caller:
        await bridged(stack, caller)
        await caller.send({"event": "dtmf", "streamSid": caller.stream_sid, "dtmf": {"digit": "5"}})
        await until(lambda: stack.vapi.texts)
        assert stack.vapi.texts[0]["type"] == "add-message"


# -- barge-in ---------------------------------------------------------------------------------


def interrupter(signal: dict[str, Any], go: asyncio.Event, sent: asyncio.Event) -> Behaviour:
    async def behaviour(ws: ServerConnection, fake: FakeVapi) -> None:
        await ws.send(ulaw_encode(tone(300.0, 3.0)))  # 3 s of assistant speech at once
        await go.wait()
        await ws.send(json.dumps(signal))
        sent.set()
        async for message in ws:
            if isinstance(message, str):
                fake.texts.append(json.loads(message))

    return behaviour


async def test_barge_in_clears_within_a_frame_and_stops_playout(stack):
    go, sent = asyncio.Event(), asyncio.Event()
    edge = await stack.start(interrupter({"type": "user-interrupted"}, go, sent), lead_ms=100)
    async with stack.caller() as caller:
        caller.echo_marks = False  # Twilio still "playing": audio is pending
        await bridged(stack, caller)
        await until(lambda: len(caller.events("media")) >= 3)
        go.set()
        await sent.wait()
        at_signal = len(caller.events("media"))
        await until(lambda: caller.events("clear"))
        clear_index = caller.received.index(caller.events("clear")[0])
        media_before_clear = len(
            [m for m in caller.received[:clear_index] if m["event"] == "media"]
        )
        assert media_before_clear - at_signal <= 1  # at most one frame went out meanwhile
        await asyncio.sleep(0.2)  # ten frame times: nothing more may be played
        after = [m for m in caller.received[clear_index:] if m["event"] == "media"]
        assert after == []
        assert len(caller.played) < 3 * 8000 // 4  # far less than the 3 s Vapi sent
        assert edge.metrics._latencies[telemetry.BARGE_IN_LATENCY].count == 1


async def test_caller_sound_pauses_playout_within_a_frame_without_clearing(stack):
    """speech-update (user, started) may be a backchannel: stop feeding Twilio, keep the rest."""
    go, sent = asyncio.Event(), asyncio.Event()
    signal = {"type": "speech-update", "role": "user", "status": "started"}
    edge = await stack.start(interrupter(signal, go, sent), lead_ms=100)
    async with stack.caller() as caller:
        await bridged(stack, caller)
        await until(lambda: len(caller.events("media")) >= 3)
        go.set()
        await sent.wait()
        at_signal = len(caller.events("media"))
        await asyncio.sleep(0.2)  # ten frame times
        assert len(caller.events("media")) - at_signal <= 1  # at most one frame meanwhile
        assert caller.events("clear") == []
        assert telemetry.BARGE_IN_LATENCY not in edge.metrics._latencies  # no clear: no sample


# -- teardown paths ----------------------------------------------------------------------------


async def test_stop_ends_the_vapi_call_and_closes_both_sockets(stack):
    await stack.start()
    async with stack.caller() as caller:
        await bridged(stack, caller)
        await caller.stop()
        assert await caller.closed() == CloseCode.NORMAL_CLOSURE
    await stack.vapi.closed.wait()
    assert {"type": "end-call"} in stack.vapi.texts


async def test_twilio_socket_close_ends_the_vapi_call(stack):
    await stack.start()
    caller = stack.caller()
    async with caller:
        await bridged(stack, caller)
    await stack.vapi.closed.wait()
    assert {"type": "end-call"} in stack.vapi.texts
    await until(lambda: stack.edge.active_calls == 0)


async def vapi_reports_end(ws: ServerConnection, fake: FakeVapi) -> None:
    await ws.send(ulaw_encode(tone(500.0, 0.2)))  # a short goodbye...
    await ws.send(json.dumps({"type": "status-update", "status": "ended", "endedReason": "x"}))
    await ws.close()  # ...then Vapi closes the transport


async def vapi_closes_without_ending(ws: ServerConnection, fake: FakeVapi) -> None:
    await ws.send(ulaw_encode(tone(500.0, 0.2)))
    await ws.close(CloseCode.GOING_AWAY)  # e.g. a Vapi server restarting: the call did not end


async def vapi_crashes(ws: ServerConnection, fake: FakeVapi) -> None:
    await ws.send(ulaw_encode(tone(500.0, 0.2)))
    await asyncio.sleep(0.05)  # let the audio leave before the connection dies
    ws.transport.abort()  # TCP reset, no close frame (ABNORMAL_CLOSURE at the edge)


async def vapi_closes_normally(ws: ServerConnection, fake: FakeVapi) -> None:
    await ws.send(ulaw_encode(tone(500.0, 0.2)))
    await ws.close(CloseCode.NORMAL_CLOSURE)  # Vapi's deliberate end, without a status-update first


@pytest.mark.parametrize("behaviour", [vapi_reports_end, vapi_closes_normally])
async def test_vapi_side_end_plays_the_goodbye_then_closes_twilio(stack, behaviour):
    edge = await stack.start(behaviour, lead_ms=60)
    async with stack.caller() as caller:
        await caller.start()
        assert await caller.closed() == CloseCode.NORMAL_CLOSURE
        assert len(caller.played) == 1600  # the whole 200 ms goodbye played before the hang-up
    assert stack.twilio_rest.requests == []
    assert edge.metrics._errors == {}


@pytest.mark.parametrize(
    "behaviour", [vapi_closes_without_ending, vapi_crashes], ids=["close", "crash"]
)
async def test_vapi_drop_mid_call_plays_what_arrived_then_apologises_through_rest(stack, behaviour):
    edge = await stack.start(behaviour, lead_ms=60)
    async with stack.caller() as caller:
        await caller.start()
        assert await caller.closed() == CloseCode.INTERNAL_ERROR
        assert len(caller.played) == 1600  # what Vapi had sent still played, then the apology
    ((_, path, _, body),) = stack.twilio_rest.requests
    assert path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{caller.call_sid}.json"
    assert "<Say>" in httpx.QueryParams(body.decode())["Twiml"]
    assert edge.metrics._errors == {"vapi_dropped": 1}


async def test_idle_timeout_ends_a_silent_stream(stack):
    await stack.start(idle_timeout_ms=300)
    async with stack.caller() as caller:
        await caller.start()
        assert await caller.closed() == CloseCode.GOING_AWAY
    await stack.vapi.closed.wait()
    assert {"type": "end-call"} in stack.vapi.texts


async def test_max_duration_ends_the_call(stack):
    await stack.start(max_call_ms=400)
    async with stack.caller() as caller:
        await bridged(stack, caller)
        for i in range(100):  # keep talking: it is the duration cap that ends it
            try:
                await caller.media(b"\x7f" * 160, i * 20)
            except ConnectionClosed:  # the cap closed the stream between two frames
                break
            await asyncio.sleep(0.02)
        assert await caller.closed() == CloseCode.NORMAL_CLOSURE
    await stack.vapi.closed.wait()
    assert {"type": "end-call"} in stack.vapi.texts


async def test_drain_refuses_new_streams_then_ends_live_calls(stack):
    edge = await stack.start()
    async with stack.caller() as caller:
        await bridged(stack, caller)
        drain = asyncio.create_task(edge.drain(grace_s=0.3))
        await until(lambda: edge.draining)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.port}") as client:
            assert (await client.get("/ready")).status_code == 503
            assert (await client.get("/health")).status_code == 200
        with pytest.raises(InvalidStatus) as info:
            await connect(f"ws://127.0.0.1:{stack.port}/media", additional_headers=sig_headers())
        assert info.value.response.status_code == 503
        assert _state(stack) == "bridging"  # the live call continues during the grace
        await drain
        assert await caller.closed() == CloseCode.GOING_AWAY
    await stack.vapi.closed.wait()
    assert {"type": "end-call"} in stack.vapi.texts


async def test_drain_returns_as_soon_as_calls_end(stack):
    edge = await stack.start()
    async with stack.caller() as caller:
        await bridged(stack, caller)
        drain = asyncio.create_task(edge.drain(grace_s=60))
        await caller.stop()
        await caller.closed()
    async with asyncio.timeout(WAIT_S):
        await drain


# -- Vapi unreachable -----------------------------------------------------------------------


async def test_vapi_unreachable_apologises_through_twilio_rest(stack):
    await stack.start(statuses=[503, 500], connect_timeout_ms=800)
    async with stack.caller() as caller:
        await caller.start()
        assert await caller.closed() == CloseCode.INTERNAL_ERROR
    ((_, path, _, body),) = stack.twilio_rest.requests
    assert path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{caller.call_sid}.json"
    form = httpx.QueryParams(body.decode())
    assert "<Say>" in form["Twiml"]
    assert "<Hangup/>" in form["Twiml"]
    # Never retried: Vapi may have created the call before failing (POST /call is not idempotent).
    assert len(stack.vapi.http.requests) == 1


async def test_vapi_429_then_success_is_retried(stack):
    await stack.start(statuses=[429])
    async with stack.caller() as caller:
        await bridged(stack, caller)
    assert len(stack.vapi.http.requests) == 2


async def test_vapi_socket_refusing_the_upgrade_apologises_through_twilio_rest(stack):
    edge = await stack.start()
    # The websocketCallUrl now points at a plain HTTP server: it answers the upgrade with 201.
    stack.vapi._ws_port = int(stack.vapi.http._server.sockets[0].getsockname()[1])
    async with stack.caller() as caller:
        await caller.start()
        assert await caller.closed() == CloseCode.INTERNAL_ERROR
    assert [path for _, path, _, _ in stack.vapi.http.requests] == ["/call", "/call-1/transport"]
    ((_, path, _, body),) = stack.twilio_rest.requests
    assert path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{caller.call_sid}.json"
    assert "<Say>" in httpx.QueryParams(body.decode())["Twiml"]
    assert edge.metrics._errors == {"vapi_unreachable": 1}


async def test_vapi_unreachable_dials_the_fallback_number(stack):
    await stack.start(statuses=[400], env={"EDGE_FALLBACK_NUMBER": "+14155550123"})
    async with stack.caller() as caller:
        await caller.start()
        assert await caller.closed() == CloseCode.INTERNAL_ERROR
    ((_, _, _, body),) = stack.twilio_rest.requests
    assert httpx.QueryParams(body.decode())["Twiml"] == (
        "<Response><Dial>+14155550123</Dial></Response>"
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 21220), (404, 20404)],  # twilio.com/docs/api/errors/21220 and /20404
)
async def test_fallback_to_a_call_already_over_counts_no_error(stack, capsys, status, code):
    stack.twilio_rest.respond = lambda m, p, b: (status, {"code": code, "message": "over"})
    edge = await stack.start(statuses=[400])
    async with stack.caller() as caller:
        await caller.start()
        assert await caller.closed() == 1011
    assert len(stack.twilio_rest.requests) == 1
    assert edge.metrics._errors == {"vapi_unreachable": 1}  # no twilio_fallback_failed
    assert "twilio fallback failed" not in capsys.readouterr().out


# -- bad input: that call ends, the others do not notice ---------------------------------------


def media_with(payload: str, stream_sid: str) -> str:
    return json.dumps(
        {"event": "media", "streamSid": stream_sid, "media": {"timestamp": "0", "payload": payload}}
    )


BAD_INPUTS: dict[str, Callable[[str], str | bytes]] = {
    "malformed_json": lambda sid: "{not json",
    "binary_frame": lambda sid: b"\x00\x01",
    "missing_event": lambda sid: json.dumps({"streamSid": sid, "media": {}}),
    "wrong_stream_sid": lambda sid: media_with("//8=", "MZ" + "0" * 32),
    "bad_base64": lambda sid: media_with("not base64!", sid),
    "oversize": lambda sid: media_with("A" * 20_000, sid),
    "oversize_frame": lambda sid: "x" * 40_000,
}


async def test_unknown_twilio_event_types_are_counted_and_the_call_goes_on(stack):
    edge = await stack.start()
    async with stack.caller() as caller:
        await bridged(stack, caller)
        for _ in range(2):
            await caller.send({"event": "brand-new", "streamSid": caller.stream_sid})
        await caller.media(b"\x42" * 160, 0)
        await until(lambda: b"\x42" * 160 in bytes(stack.vapi.audio))
        assert caller.ws.close_code is None
    assert edge.metrics._counts[telemetry.UNKNOWN_TWILIO_EVENTS] == 2
    assert edge.metrics._errors == {}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
async def test_bad_input_ends_only_that_call(stack, name):
    edge = await stack.start()
    async with stack.caller("CA" + "1" * 32) as good, stack.caller("CA" + "2" * 32) as bad:
        await good.start()
        await bad.start()
        await until(lambda: len(stack.vapi.connections) == 2)
        await until(lambda: all(s.call.state.value == "bridging" for s in edge._sessions))
        await bad.send(BAD_INPUTS[name](bad.stream_sid))
        assert await bad.closed() in (CloseCode.POLICY_VIOLATION, CloseCode.MESSAGE_TOO_BIG)
        await good.media(b"\x42" * 160, 0)  # the other call still bridges audio both ways
        await until(lambda: b"\x42" * 160 in bytes(good.played))
        assert good.ws.close_code is None
    reasons = {"wrong_stream_sid": "wrong_stream_sid", "oversize_frame": "twilio_oversize"}
    assert edge.metrics._errors == {reasons.get(name, f"twilio_{name}"): 1}


async def test_media_before_start_ends_the_call(stack):
    edge = await stack.start()
    async with stack.caller() as caller:
        await caller.media(b"\xff" * 160, 0)
        assert await caller.closed() == CloseCode.POLICY_VIOLATION
    assert edge.metrics._errors == {"event_before_start": 1}
    assert stack.vapi.http.requests == []


async def test_flood_ends_the_call(stack):
    edge = await stack.start(max_twilio_messages_per_s=100, twilio_burst_messages=50)
    async with stack.caller() as caller:
        await bridged(stack, caller)
        for i in range(150):
            try:
                await caller.media(b"\xff" * 160, i * 20)
            except ConnectionClosed:  # the flood limit closed the stream mid-burst
                break
        assert await caller.closed() == CloseCode.POLICY_VIOLATION
    assert edge.metrics._errors == {"flood": 1}


async def test_metrics_flush_writes_emf_with_service_dimension(stack, capsys):
    edge = await stack.start()
    async with stack.caller() as caller:
        await bridged(stack, caller)
        await send_audio(caller, b"\xff" * 1600)
        await until(lambda: len(caller.played) >= 1600)
        capsys.readouterr()
        edge.metrics.flush()
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    (blob,) = blobs
    directive = blob["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == telemetry.NAMESPACE
    assert directive["Dimensions"] == [["service"]]
    assert blob["service"] == telemetry.SERVICE_EDGE
    names = {m["Name"] for m in directive["Metrics"]}
    assert {
        telemetry.ACTIVE_CALLS,
        telemetry.BRIDGE_LATENCY,
        telemetry.FIRST_AUDIO_LATENCY,
        telemetry.VAPI_CONNECT_TIME,
    } <= names
    assert blob[telemetry.ACTIVE_CALLS] == [1.0]
    assert 20 <= len(blob[telemetry.BRIDGE_LATENCY]) <= 99


async def test_task_protection_is_on_while_calls_are_live(stack):
    agent = HttpFake(lambda m, p, b: (200, {"protection": {}}))
    agent_url = await agent.start()
    try:
        edge = await stack.start(env={"ECS_AGENT_URI": agent_url})

        def states() -> list[dict[str, Any]]:
            return [json.loads(body) for _, _, _, body in agent.requests]

        async with stack.caller() as caller:
            await bridged(stack, caller)
            await until(lambda: len(agent.requests) == 1)
            await caller.stop()
            await caller.closed()
        await until(lambda: edge.active_calls == 0 and len(agent.requests) == 2)
        assert states() == [
            {"ProtectionEnabled": True, "ExpiresInMinutes": 10},
            {"ProtectionEnabled": False},
        ]
        assert {(m, p) for m, p, _, _ in agent.requests} == {("PUT", "/task-protection/v1/state")}
    finally:
        await stack.stop()
        stack.edge = None
        stack.vapi = None
        await agent.stop()


async def test_a_bug_in_one_call_ends_that_call_only(stack, monkeypatch):
    edge = await stack.start()
    original = Call.feed

    def feed(self, event, now):
        if getattr(event, "payload", None) == b"\x13" * 160:
            raise RuntimeError("simulated bug")
        return original(self, event, now)

    monkeypatch.setattr(Call, "feed", feed)
    async with stack.caller("CA" + "1" * 32) as good, stack.caller("CA" + "2" * 32) as bad:
        await good.start()
        await bad.start()
        await until(lambda: all(s.call.state.value == "bridging" for s in edge._sessions))
        await until(lambda: len(edge._sessions) == 2)
        await bad.media(b"\x13" * 160, 0)
        assert await bad.closed() == CloseCode.INTERNAL_ERROR
        await good.media(b"\x42" * 160, 0)
        await until(lambda: b"\x42" * 160 in bytes(good.played))
    assert edge.metrics._errors == {"internal_error": 1}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.port}") as client:
        assert (await client.get("/health")).status_code == 200


async def test_keepalive_drops_a_peer_that_stops_answering_pings(stack, monkeypatch):
    monkeypatch.setattr(ws, "PING_INTERVAL_S", 0.05)
    monkeypatch.setattr(ws, "PING_TIMEOUT_S", 0.1)
    await stack.start()
    async with stack.caller() as alive:  # websockets answers every ping by itself
        await bridged(stack, alive)
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
        headers = "".join(f"{k}: {v}\r\n" for k, v in sig_headers().items())
        writer.write(
            (
                "GET /media HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\n{headers}\r\n"
            ).encode()
        )
        async with asyncio.timeout(WAIT_S):
            assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
            head = await reader.readexactly(2)
            assert head[0] == 0x89  # a ping (final frame) ...
            await reader.readexactly(head[1] & 0x7F)
            rest = await reader.read()  # ... never answered: the edge closes on its own
        writer.close()
        assert rest[0] == 0x88  # a close frame, INTERNAL_ERROR, then EOF
        assert rest[2:4] == CloseCode.INTERNAL_ERROR.to_bytes(2, "big")
        await until(lambda: stack.edge.active_calls == 1)
        assert alive.ws.close_code is None  # answered its pings for as long: still bridging
        assert _state(stack) == "bridging"


async def test_full_edge_is_not_ready_and_refuses_new_streams(stack):
    await stack.start(env={"EDGE_MAX_CALLS": "1"})
    async with stack.caller() as caller:
        await bridged(stack, caller)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.port}") as client:
            assert (await client.get("/ready")).status_code == 503
        with pytest.raises(InvalidStatus) as info:
            await connect(f"ws://127.0.0.1:{stack.port}/media", additional_headers=sig_headers())
        assert info.value.response.status_code == 503
        await caller.stop()
        await caller.closed()
    await until(lambda: stack.edge.active_calls == 0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.port}") as client:
        assert (await client.get("/ready")).status_code == 200
