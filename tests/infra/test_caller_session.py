"""The simulated caller over loopback against a stand-in API and edge: the webhooks Twilio really
posts for an inbound call, the <Stream> status callbacks, and the "what the caller heard" WAV."""

import base64
import json
import math
import re
import wave
from datetime import datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from urllib.parse import parse_qsl

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from websockets.asyncio.server import serve

from infra.asgi import AsgiServer
from infra.audio import load_wav, sample, ulaw_decode, ulaw_encode
from infra.caller import CallerConfig, Hangup, SimulatedCall, WaitForSilence, WaitForSpeech
from tests.audio_match import best_match
from voicebridge.twilio_signature import SIGNATURE_HEADER, is_valid

AC, TOKEN = "AC" + "1" * 32, "twilio-token"
GREETING = sample("assistant_greeting")[:8000]  # 1 s of what the assistant says
STREAM_KEYS = {"AccountSid", "CallSid", "StreamSid", "StreamName", "StreamEvent", "Timestamp"}


class Api:
    """Answers the voice webhook with ``twiml`` and records every (signed) callback."""

    def __init__(self):
        self.twiml = ""
        self.callbacks: list[tuple[str, str, dict[str, str]]] = []  # (path, method, params)
        self.bad_signatures = 0
        routes = [
            Route("/voice", self.voice, methods=["POST"]),
            Route("/status", self.callback, methods=["POST"]),
            Route("/stream-status", self.callback, methods=["GET", "POST"]),
        ]
        self.server = AsgiServer(Starlette(routes=routes))

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.port}"

    async def voice(self, request):
        return Response(self.twiml, media_type="application/xml")

    async def callback(self, request):
        form = dict(parse_qsl((await request.body()).decode()))
        url = str(request.url)
        if not is_valid(TOKEN, url, form, request.headers.get(SIGNATURE_HEADER)):
            self.bad_signatures += 1
        params = form if request.method == "POST" else dict(request.query_params)
        self.callbacks.append((request.url.path, request.method, params))
        return Response(status_code=204)

    def at(self, path):
        return [(method, params) for p, method, params in self.callbacks if p == path]


class Edge:
    """A stand-in media edge: plays the greeting once the stream starts, then a mark."""

    def __init__(self, refuse=False):
        self.refuse = refuse
        self.received: list[dict] = []
        self.port = 0

    async def __aenter__(self):
        self._server = await serve(
            self.handler, "127.0.0.1", 0, process_request=self.check if self.refuse else None
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self._server.close()
        await self._server.wait_closed()

    def check(self, connection, request):
        return connection.respond(HTTPStatus.FORBIDDEN, "no\n")

    async def handler(self, ws):
        async for raw in ws:
            message = json.loads(raw)
            self.received.append(message)
            if message["event"] == "start":
                sid = message["streamSid"]
                payload = base64.b64encode(ulaw_encode(GREETING)).decode()
                await ws.send(
                    json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}})
                )
                await ws.send(
                    json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "greeting"}})
                )


@pytest.fixture
async def api():
    api = Api()
    await api.server.start()
    yield api
    await api.server.stop()


def stream_twiml(edge_port, attributes=""):
    return (
        f'<Response><Connect><Stream url="ws://127.0.0.1:{edge_port}/media"{attributes}>'
        '<Parameter name="callSid" value="x"/></Stream></Connect></Response>'
    )


async def place(api, **changes):
    config = CallerConfig(
        api_url=api.url,
        auth_token=TOKEN,
        account_sid=AC,
        voice_url=f"{api.url}/voice",
        status_callback_url=f"{api.url}/status",
        max_seconds=15,
    )
    for name, value in changes.items():
        setattr(config, name, value)
    steps = [WaitForSpeech(limit_ms=5000), WaitForSilence(silence_ms=300, limit_ms=5000), Hangup()]
    return await SimulatedCall(config, steps).run()


async def test_an_inbound_call_posts_only_the_final_status_callback(api):
    async with Edge() as edge:
        api.twiml = stream_twiml(edge.port)  # no statusCallback on <Stream>: no stream events
        report = await place(api)
    assert report.protocol_errors == []
    assert api.bad_signatures == 0
    assert [path for path, _, _ in api.callbacks] == ["/status"]
    ((method, params),) = api.at("/status")
    assert method == "POST"
    assert params["CallStatus"] == "completed"
    assert params["Direction"] == "inbound"
    assert params["CallbackSource"] == "call-progress-events"
    assert params["SequenceNumber"] == "0"
    assert params["CallSid"] == report.call_sid
    assert parsedate_to_datetime(params["Timestamp"]).utcoffset().total_seconds() == 0
    assert params["Timestamp"].endswith(" +0000")  # RFC 2822 in UTC, as Twilio writes it
    seconds = int(params["CallDuration"])
    assert seconds >= 1  # a greeting of 1 s was heard before the caller hung up
    assert params["Duration"] == str(math.ceil(seconds / 60))
    assert report.status_callbacks == [("completed", 204)]


@pytest.mark.parametrize(
    ("attributes", "method", "name"),
    [
        (' statusCallback="{api}/stream-status"', "POST", None),
        (
            ' name="bridge" statusCallback="{api}/stream-status" statusCallbackMethod="GET"',
            "GET",
            "bridge",
        ),
    ],
)
async def test_stream_status_callbacks_as_twilio_sends_them(api, attributes, method, name):
    async with Edge() as edge:
        api.twiml = stream_twiml(edge.port, attributes.format(api=api.url))
        report = await place(api)
    assert report.protocol_errors == []
    assert api.bad_signatures == 0
    events = api.at("/stream-status")
    assert [params["StreamEvent"] for _, params in events] == ["stream-started", "stream-stopped"]
    for used, params in events:
        assert used == method
        assert set(params) == STREAM_KEYS  # no StreamError without an error
        assert params["StreamSid"] == report.stream_sid
        assert params["StreamName"] == (name or report.stream_sid)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", params["Timestamp"])
        datetime.fromisoformat(params["Timestamp"])  # ISO 8601, as the <Stream> page says
    assert len(api.at("/status")) == 1


async def test_a_refused_upgrade_is_a_stream_error_and_the_call_completes(api):
    async with Edge(refuse=True) as edge:
        api.twiml = stream_twiml(edge.port, f' statusCallback="{api.url}/stream-status"')
        report = await place(api)
    assert report.ended_by == "stream-connect-failed"
    ((_, error),) = api.at("/stream-status")
    assert error["StreamEvent"] == "stream-error"
    assert error["StreamError"].startswith("31920")
    assert "HTTP 403" in error["StreamError"]
    ((_, final),) = api.at("/status")
    assert final["CallStatus"] == "completed"


@pytest.mark.parametrize("order", ["shuffled", "duplicated"])
async def test_reordered_and_retried_callbacks_carry_the_same_parameters(api, order):
    async with Edge() as edge:
        api.twiml = stream_twiml(edge.port, f' statusCallback="{api.url}/stream-status"')
        report = await place(api, status_order=order, seed=3)
    copies = 2 if order == "duplicated" else 1
    delivered = [json.dumps(params, sort_keys=True) for _, _, params in api.callbacks]
    assert len(delivered) == 3 * copies
    assert len(set(delivered)) == 3  # a retry is the same request, not a new event
    assert sorted(label for label, _ in report.status_callbacks) == sorted(
        ["completed", "stream-started", "stream-stopped"] * copies
    )


async def test_the_heard_wav_holds_what_the_caller_heard(api, tmp_path):
    heard_wav = tmp_path / "heard.wav"
    async with Edge() as edge:
        api.twiml = stream_twiml(edge.port)
        report = await place(api, heard_wav=heard_wav)
        # The mark came back once the greeting had played, with Twilio's fields.
        (echo,) = [m for m in edge.received if m["event"] == "mark"]
    assert echo == {
        "event": "mark",
        "sequenceNumber": echo["sequenceNumber"],
        "streamSid": report.stream_sid,
        "mark": {"name": "greeting"},
    }
    with wave.open(str(heard_wav)) as handle:
        assert (handle.getframerate(), handle.getnchannels(), handle.getsampwidth()) == (8000, 1, 2)
        frames = handle.getnframes()
    heard = load_wav(heard_wav)
    # As long as the call: one 20 ms frame per media tick, the timeline's clock.
    assert frames == len(report.heard_speech) * 160 == len(report.heard)
    assert frames / 8000 >= report.timeline[-1][0] / 1000
    # Not silent, and loud exactly where the caller heard the assistant.
    loud = np.array([np.abs(f).mean() > 100 for f in heard.reshape(-1, 160)])
    assert loud.any()
    assert (loud == np.array(report.heard_speech)).mean() > 0.95
    # It is the greeting the assistant played (G.711 on the way), where the timeline puts it.
    reference = ulaw_decode(ulaw_encode(GREETING))
    lag, correlation = best_match(heard, reference)
    assert correlation > 0.99
    assert abs(lag - report.first_audio_ms * 8) <= 8 * 200  # within the first loud frames
