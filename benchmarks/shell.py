"""CPU per frame through the call session shell (media_edge.io.session), in process.

What one 20 ms frame costs above the sans-I/O core: parsing the Twilio message, feeding the
call, dispatching its actions, writing the frame (to a transport that drops the bytes). Three
figures, each the best of ``--repeat`` runs of ``--frames`` frames:

- ``inbound``: a Twilio ``media`` message -> the call -> a binary frame to Vapi (the whole path);
- ``dispatch SendAudioToVapi`` / ``dispatch SendToTwilio``: ``_execute`` of one action alone.

    python -m benchmarks.shell [--frames 20000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import httpx
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from media_edge.core import CallConfig
from media_edge.core.actions import SendAudioToVapi, SendToTwilio
from media_edge.core.events import VapiConnected
from media_edge.io.session import CallSession, EdgeContext
from media_edge.io.telemetry import EdgeMetrics, edge_logger
from media_edge.io.ws import WsConnection
from media_edge.protocol.twilio import TwilioStart
from voicebridge import stream_token

SECRET = "bench-secret"
ACCOUNT = "AC" + "0" * 32
CALL_SID = "CA" + "1" * 32
STREAM_SID = "MZ" + "2" * 32


class NullTransport(asyncio.Transport):
    def write(self, data: Any) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


def open_socket(protocol: ServerProtocol | ClientProtocol) -> WsConnection:
    conn = WsConnection(protocol)
    conn.connection_made(NullTransport())
    protocol.state = State.OPEN
    return conn


def config() -> CallConfig:
    no_flood_limit: dict[str, Any] = {
        "max_twilio_messages_per_s": 10**9,
        "twilio_burst_messages": 10**9,
    }
    try:
        return CallConfig(token_secret=SECRET, account_sid=ACCOUNT, **no_flood_limit)
    except TypeError:  # before the account check existed
        return CallConfig(token_secret=SECRET, **no_flood_limit)  # type: ignore[call-arg,unused-ignore]


def bridged_session(http: httpx.AsyncClient) -> CallSession:
    names = {f.name for f in dataclasses.fields(EdgeContext)}
    extra: dict[str, Any] = {"claims": None} if "claims" in names else {}  # unused once bridged
    ctx = EdgeContext(
        call_config=config(),
        vapi_base_url="http://vapi.invalid",
        vapi_api_key="k",
        twilio_api_base="http://twilio.invalid",
        twilio_account_sid=ACCOUNT,
        twilio_auth_token="t",
        http=http,
        metrics=EdgeMetrics(None),
        logger=edge_logger(),
        **extra,
    )
    twilio = open_socket(ServerProtocol())
    args: list[Any] = [twilio, ctx, lambda s: None]
    try:
        session = CallSession(*args, lambda s: True)  # type: ignore[call-arg]
    except TypeError:
        session = CallSession(*args)
    call = session.call
    token = stream_token.mint(SECRET, CALL_SID, "asst", time.time(), 120)
    now = session._now()
    call.feed(TwilioStart(STREAM_SID, CALL_SID, ACCOUNT, {"token": token}), now)
    try:
        from media_edge.core.events import ClaimOutcome, StreamClaimed

        call.feed(StreamClaimed(ClaimOutcome.CLAIMED), now)
    except ImportError:
        pass
    call.feed(VapiConnected("v"), now)
    assert call.state.value == "bridging", call.state
    session._vapi = open_socket(ClientProtocol(parse_uri("ws://vapi.invalid/")))
    return session


def best_ns(run: Callable[[], None], frames: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        run()
        times.append((time.perf_counter_ns() - start) / frames)
    return min(times)


async def measure(frames: int, repeat: int) -> dict[str, float]:
    async with httpx.AsyncClient() as http:
        session = bridged_session(http)
        payload = base64.b64encode(b"\x7f" * 160).decode()
        messages = [
            f'{{"event":"media","sequenceNumber":"{i + 2}","streamSid":"{STREAM_SID}",'
            f'"media":{{"track":"inbound","chunk":"{i + 1}","timestamp":"{i * 20}",'
            f'"payload":"{payload}"}}}}'
            for i in range(frames * repeat)
        ]
        batches = iter([messages[i * frames : (i + 1) * frames] for i in range(repeat)])

        def inbound() -> None:
            on_message = session._on_twilio_message
            for message in next(batches):
                on_message(message)

        audio = [SendAudioToVapi(b"\x7f" * 160)]
        media = [SendToTwilio(messages[0])]

        def dispatch(actions: list[Any]) -> Callable[[], None]:
            def run() -> None:
                execute = session._execute
                for _ in range(frames):
                    execute(actions)

            return run

        results = {
            "inbound": best_ns(inbound, frames, repeat),
            "dispatch SendAudioToVapi": best_ns(dispatch(audio), frames, repeat),
            "dispatch SendToTwilio": best_ns(dispatch(media), frames, repeat),
        }
        assert session.call.frames_in == frames * repeat
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    results = asyncio.run(measure(args.frames, args.repeat))
    print("| path | ns per frame (best of runs) |\n|---|---:|")
    for name, ns in results.items():
        print(f"| {name} | {ns:.0f} |")


if __name__ == "__main__":
    main()
