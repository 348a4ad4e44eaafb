"""The Vapi emulator over real loopback sockets: REST rules, transport, signed webhooks."""

import asyncio
import hashlib
import hmac
import json

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from infra.asgi import AsgiServer
from infra.audio import sample, ulaw_encode
from infra.vapi_emulator import Script, ToolScript, VapiEmulator

KEY = "test-key"
SECRET = "whsec"
AUTH = {"Authorization": f"Bearer {KEY}"}
MULAW = {"format": "mulaw", "container": "raw", "sampleRate": 8000}


class Sink:
    """A server URL that records webhooks and answers tool calls."""

    def __init__(self):
        self.received: list[tuple[dict, dict]] = []
        self.server = AsgiServer(Starlette(routes=[Route("/hook", self.hook, methods=["POST"])]))

    async def hook(self, request):
        raw = await request.body()
        self.received.append((dict(request.headers), raw))
        message = json.loads(raw)["message"]
        if message["type"] == "tool-calls":
            results = [{"toolCallId": t["id"], "result": "ok"} for t in message["toolCallList"]]
            return JSONResponse({"results": results})
        return JSONResponse({})

    def messages(self, kind=None):
        out = [json.loads(raw)["message"] for _, raw in self.received]
        return [m for m in out if kind is None or m["type"] == kind]


@pytest.fixture
async def sink():
    sink = Sink()
    await sink.server.start()
    yield sink
    await sink.server.stop()


@pytest.fixture
async def emulator():
    emulator = VapiEmulator(
        KEY, webhook_secret=SECRET, script=Script(think_ms=50, end_of_turn_ms=200)
    )
    await emulator.start()
    yield emulator
    await emulator.stop()


async def make_assistant(client, emulator, sink=None, **extra):
    body = {"name": "t", "firstMessage": "Hello", **extra}
    if sink:
        body["server"] = {"url": f"http://127.0.0.1:{sink.server.port}/hook"}
    response = await client.post(f"{emulator.base_url}/assistant", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def make_call(client, emulator, assistant_id, audio=MULAW, **extra):
    body = {
        "assistantId": assistant_id,
        "transport": {"provider": "vapi.websocket", "audioFormat": audio},
        **extra,
    }
    return await client.post(f"{emulator.base_url}/call", json=body, headers=AUTH)


async def test_rest_auth_and_vapi_like_rejections(emulator):
    async with httpx.AsyncClient() as client:
        base = emulator.base_url
        assert (await client.post(f"{base}/assistant", json={})).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.get(f"{base}/assistant/x", headers=wrong)).status_code == 401
        legacy = await client.post(
            f"{base}/assistant", json={"serverUrl": "https://x"}, headers=AUTH
        )
        assert legacy.status_code == 400
        assert legacy.json()["message"] == ["property serverUrl should not exist"]
        bad = await client.post(
            f"{base}/assistant", json={"server": {"url": "nope"}, "model": {}}, headers=AUTH
        )
        assert set(bad.json()["message"]) >= {
            "server.url must be a URL address",
            "model.provider must be one of the following values",
        }
        assistant_id = await make_assistant(client, emulator)
        got = await client.get(f"{base}/assistant/{assistant_id}", headers=AUTH)
        assert got.json()["firstMessage"] == "Hello"
        assert (await client.get(f"{base}/assistant/unknown", headers=AUTH)).status_code == 404

        for audio in (MULAW, {"format": "pcm_s16le", "container": "raw", "sampleRate": 16000}):
            created = await make_call(client, emulator, assistant_id, audio)
            assert created.status_code == 201
            transport = created.json()["transport"]
            assert transport["audioFormat"] == audio
            assert transport["websocketCallUrl"].endswith(f"/{created.json()['id']}/transport")

        cases = [
            (
                {"assistantId": assistant_id, "transport": {"provider": "twilio"}},
                "transport.provider",
            ),
            (
                {
                    "assistantId": assistant_id,
                    "transport": {
                        "provider": "vapi.websocket",
                        "audioFormat": {"format": "opus", "sampleRate": 8000},
                    },
                },
                "format",
            ),
            (
                {
                    "assistantId": assistant_id,
                    "transport": {
                        "provider": "vapi.websocket",
                        "audioFormat": {"format": "mulaw", "sampleRate": 16000},
                    },
                },
                "sampleRate",
            ),
            ({"transport": {"provider": "vapi.websocket"}}, "Need Either"),
            ({"assistantId": "missing", "transport": {"provider": "vapi.websocket"}}, "Not Found"),
            ({"assistantId": assistant_id}, "transport"),
            (
                {
                    "assistantId": assistant_id,
                    "transport": {"provider": "vapi.websocket"},
                    "bogus": 1,
                },
                "bogus",
            ),
        ]
        for body, needle in cases:
            response = await client.post(f"{base}/call", json=body, headers=AUTH)
            assert response.status_code == 400, body
            assert any(needle in m for m in response.json()["message"]), response.json()
        assert (await client.post(f"{base}/call", content=b"{", headers=AUTH)).status_code == 400


async def test_concurrency_limit_is_429(emulator):
    emulator.concurrency_limit = 1
    async with httpx.AsyncClient() as client:
        assistant_id = await make_assistant(client, emulator)
        assert (await make_call(client, emulator, assistant_id)).status_code == 201
        limited = await make_call(client, emulator, assistant_id)
        assert limited.status_code == 429


async def test_transport_needs_bearer_and_connects_once(emulator):
    async with httpx.AsyncClient() as client:
        assistant_id = await make_assistant(client, emulator)
        url = (await make_call(client, emulator, assistant_id)).json()["transport"][
            "websocketCallUrl"
        ]
    with pytest.raises(InvalidStatus) as denied:
        async with connect(url):
            pass
    assert denied.value.response.status_code == 401
    async with connect(url, additional_headers=AUTH) as ws:
        with pytest.raises(InvalidStatus):
            async with connect(url, additional_headers=AUTH):
                pass
        await ws.send(json.dumps({"type": "end-call"}))
        async for _ in ws:
            pass
    assert ws.close_code == 1000


async def collect(ws, until, limit_s=10.0):
    """Messages until ``until(event)`` is true for a JSON event; audio counted as bytes."""
    events, audio = [], 0
    async with asyncio.timeout(limit_s):
        async for message in ws:
            if isinstance(message, bytes):
                audio += len(message)
                continue
            event = json.loads(message)
            events.append(event)
            if until(event):
                break
    return events, audio


async def test_conversation_barge_in_and_signed_webhooks(emulator, sink):
    async with httpx.AsyncClient() as client:
        assistant_id = await make_assistant(
            client, emulator, sink, firstMessageMode="assistant-waits-for-user"
        )
        created = await make_call(
            client, emulator, assistant_id, assistantOverrides={"metadata": {"callSid": "CA1"}}
        )
    url = created.json()["transport"]["websocketCallUrl"]
    speech = ulaw_encode(sample("caller_utterance")[:8000])
    silence = ulaw_encode(np.zeros(160 * 15, dtype=np.int16))
    async with connect(url, additional_headers=AUTH) as ws:
        await ws.send(speech + silence)  # one turn (audio may arrive faster than real time)
        events, _ = await collect(
            ws, lambda e: e["type"] == "speech-update" and e["role"] == "assistant"
        )
        assert [e["type"] for e in events][:2] == ["status-update", "speech-update"]
        assert any(e["type"] == "transcript" and e["role"] == "user" for e in events)
        # The parrot reply is playing: talk over it (1 s of words: an interruption, where 0.4 s
        # would be heard as "mm-hmm", which never interrupts).
        await ws.send(speech)
        events, _ = await collect(ws, lambda e: e["type"] == "user-interrupted")
        _, audio_after = await asyncio.wait_for(_drain_for(ws, 0.3), 2)
        assert audio_after == 0  # assistant audio stopped at the interruption
        await ws.send(json.dumps({"type": "end-call"}))
        events, _ = await collect(ws, lambda e: e.get("status") == "ended")
        assert events[-1]["endedReason"] == "customer-ended-call"
    await _until(lambda: sink.messages("end-of-call-report"))
    report = sink.messages("end-of-call-report")[0]
    assert report["call"]["assistantOverrides"]["metadata"] == {"callSid": "CA1"}
    assert report["assistant"]["metadata"] == {"callSid": "CA1"}  # the overrides applied
    assert report["analysis"]["summary"]
    assert "User: [caller speech" in report["artifact"]["transcript"]
    assert isinstance(report["cost"], float)
    kinds = [m["type"] for m in sink.messages()]
    assert (
        kinds.index("status-update")
        < kinds.index("user-interrupted")
        < kinds.index("end-of-call-report")
    )
    for headers, raw in sink.received:
        signed = f"{headers['x-timestamp']}.".encode() + raw
        expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-signature"], expected)
    assert emulator.active_calls == 0
    await _until(lambda: emulator.pending_tasks() == 0)
    assert emulator.open_sockets == 0


async def _drain_for(ws, seconds):
    audio = 0
    try:
        async with asyncio.timeout(seconds):
            async for message in ws:
                if isinstance(message, bytes):
                    audio += len(message)
    except TimeoutError:
        pass
    return None, audio


async def _until(predicate, limit_s=5.0):
    async with asyncio.timeout(limit_s):
        while not predicate():  # noqa: ASYNC110 - state changes inside the emulator, no event
            await asyncio.sleep(0.02)


async def test_tool_calls_webhook_and_other_auth_modes(emulator, sink):
    emulator.webhook_auth = "secret"
    emulator.script = Script(tool=ToolScript("lookup", {"q": 1}, on_add_message=True))
    async with httpx.AsyncClient() as client:
        assistant_id = await make_assistant(
            client, emulator, sink, clientMessages=["tool-calls-result", "status-update"]
        )
        url = (await make_call(client, emulator, assistant_id)).json()["transport"][
            "websocketCallUrl"
        ]
    async with connect(url, additional_headers=AUTH) as ws:
        await ws.send(
            json.dumps({"type": "add-message", "message": {"role": "system", "content": "1"}})
        )
        events, _ = await collect(ws, lambda e: e["type"] == "tool-calls-result")
        assert events[-1]["toolCallResult"][0]["result"] == "ok"
    tool = sink.messages("tool-calls")[0]
    assert tool["toolCallList"][0]["function"]["name"] == "lookup"
    assert all(h["x-vapi-secret"] == SECRET for h, _ in sink.received)


async def test_vapi_drop_is_an_abrupt_tcp_close(emulator, sink):
    emulator.script = Script(drop_after_ms=200)
    async with httpx.AsyncClient() as client:
        assistant_id = await make_assistant(client, emulator, sink)
        url = (await make_call(client, emulator, assistant_id)).json()["transport"][
            "websocketCallUrl"
        ]
    async with connect(url, additional_headers=AUTH) as ws:
        with pytest.raises(ConnectionClosedError):
            async for _ in ws:
                pass
    assert ws.protocol.close_rcvd is None  # no close frame: the vendor vanished
    await _until(lambda: sink.messages("end-of-call-report"))
    assert sink.messages("end-of-call-report")[0]["endedReason"] == "worker-shutdown"


async def test_unconnected_call_expires_with_a_report(sink):
    async with VapiEmulator(KEY, webhook_secret=SECRET, connect_timeout_s=0.1) as emulator:
        async with httpx.AsyncClient() as client:
            assistant_id = await make_assistant(client, emulator, sink)
            await make_call(client, emulator, assistant_id)
        await _until(lambda: sink.messages("end-of-call-report"))
        reason = sink.messages("end-of-call-report")[0]["endedReason"]
        assert reason == "call.in-progress.error-vapifault-transport-never-connected"


# Every credential Vapi offers (#/components/schemas/HMACAuthenticationPlan,
# BearerAuthenticationPlan, legacy x-vapi-secret): the emulator signs, our product verifies.
# Two independent implementations of the same schema text must agree.

B64 = "c2VjcmV0IGtleSBieXRlcw=="
CREDENTIALS = {
    "preset hmac": ("hmac", SECRET),
    "preset bearer": ("bearer", SECRET),
    "preset secret": ("secret", SECRET),
    "sha512 base64": (
        {"type": "hmac", "algorithm": "sha512", "signatureEncoding": "base64"},
        SECRET,
    ),
    "sha1 prefix headers": (
        {
            "type": "hmac",
            "algorithm": "sha1",
            "signaturePrefix": "sha1=",
            "signatureHeader": "X-Hub-Signature",
            "timestampHeader": "X-Hub-Timestamp",
        },
        SECRET,
    ),
    "no timestamp": ({"type": "hmac", "algorithm": "sha256", "includeTimestamp": False}, SECRET),
    "method url format": (
        {
            "type": "hmac",
            "algorithm": "sha256",
            "payloadFormat": "{method}:{url}:{timestamp}:{body}",
        },
        SECRET,
    ),
    "svix": (
        {
            "type": "hmac",
            "algorithm": "sha256",
            "signatureEncoding": "base64",
            "secretIsBase64": True,
            "signatureHeader": "svix-signature",
            "signaturePrefix": "v1,",
            "timestampHeader": "svix-timestamp",
            "messageIdHeader": "svix-id",
            "payloadFormat": "{svix-id}.{timestamp}.{body}",
        },
        B64,
    ),
    "bearer own header": ({"type": "bearer", "headerName": "X-Api-Key"}, SECRET),
    "bearer no prefix": ({"type": "bearer", "bearerPrefixEnabled": False}, SECRET),
}


def _plans_for(auth):
    from voicebridge.vapi_credentials import parse_plans

    preset = {"hmac": "hmac", "bearer": "bearer", "secret": "x-vapi-secret"}
    return parse_plans(preset[auth] if isinstance(auth, str) else json.dumps(auth))


@pytest.mark.parametrize("name", CREDENTIALS)
async def test_every_credential_signs_what_our_product_verifies(name):
    import time

    from functions.vapi_auth import is_authentic

    auth, secret = CREDENTIALS[name]
    emulator = VapiEmulator(KEY, webhook_secret=secret, webhook_auth=auth)
    body, url = b'{"message":{"type":"hang"}}', "https://api.example.com/vapi/webhook"
    headers = {k.lower(): v for k, v in emulator.sign(body, url).items()}
    plans = _plans_for(auth)
    assert is_authentic(secret, headers, body, time.time(), plans=plans, url=url)
    if auth == "hmac" or (isinstance(auth, dict) and auth["type"] == "hmac"):  # body signed
        assert not is_authentic(secret, headers, body + b" ", time.time(), plans=plans, url=url)
    emulator.webhook_secret = secret.replace("e", "f") if secret != B64 else B64[:-4] + "ZQ=="
    forged = {k.lower(): v for k, v in emulator.sign(body, url).items()}
    assert not is_authentic(secret, forged, body, time.time(), plans=plans, url=url)


@pytest.mark.parametrize(
    "plan",
    [
        {"type": "hmac"},  # algorithm is required
        {"type": "hmac", "algorithm": "md5"},
        {"type": "hmac", "algorithm": "sha256", "signatureEncoding": "base32"},
        {"type": "bearer", "prefix": "Token"},
        {"type": "oauth2"},
    ],
)
def test_credentials_vapi_would_refuse_are_refused(plan):
    with pytest.raises(ValueError):
        VapiEmulator(KEY, webhook_secret=SECRET, webhook_auth=plan)


async def test_signed_url_is_the_assistants_server_url(emulator, sink):
    emulator.webhook_auth = {"type": "hmac", "algorithm": "sha256", "payloadFormat": "{url}|{body}"}
    async with httpx.AsyncClient() as client:
        assistant_id = await make_assistant(client, emulator, sink)
        url = (await make_call(client, emulator, assistant_id)).json()["transport"][
            "websocketCallUrl"
        ]
    async with connect(url, additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "end-call"}))
        async for _ in ws:
            pass
    await _until(lambda: sink.messages("end-of-call-report"))
    server_url = f"http://127.0.0.1:{sink.server.port}/hook"
    for headers, raw in sink.received:
        expected = hmac.new(SECRET.encode(), f"{server_url}|".encode() + raw, hashlib.sha256)
        assert hmac.compare_digest(headers["x-signature"], expected.hexdigest())
