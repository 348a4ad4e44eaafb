"""Webhooks when AWS stops answering: a real moto server in its own process, paused with SIGSTOP
(the kernel still accepts connections, nothing ever answers: the slow-dependency case) or not
there at all (connection refused). Every webhook answers within its budget, a bound number keeps
its own assistant, and every accepted event reaches SQS once the endpoint is back.

Each latency check is a correctness bound (the deadline holds, 25-51 s before the fix), not a
speed measurement: the bound is the budget plus generous slack for a loaded machine.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from functions import aws, outbox, storage, web
from infra.local_aws import REGION, create_resources, load_template
from infra.worker_loop import WorkerLoop
from tests.functions.conftest import (
    ACCOUNT_SID,
    ADMIN_KEY,
    AUTH_TOKEN,
    STREAM_SECRET,
    WEBHOOK_SECRET,
    response_body,
    twilio_post,
    vapi_post,
    voice_params,
)
from voicebridge import stream_token

NUMBER = "+18005550199"
BUDGET_S = web.WEBHOOK_DEADLINE_S + outbox.FALLBACK_DEADLINE_S
SLACK_S = 2.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoProcess:
    """``python -m moto.server`` on loopback: a process we can pause, resume and stop."""

    def __init__(self, port: int) -> None:
        self.endpoint = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("moto server did not start")

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.process.terminate()
        self.process.wait(timeout=10)


@dataclass
class LiveAws:
    endpoint: str
    env: dict[str, str]

    def client(self, service: str):
        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint, region_name=REGION
        )

    def create(self) -> None:
        created = create_resources(
            self.client("dynamodb"), self.client("sqs"), load_template(), prefix="outage"
        )
        # the template has more (outbound, dialer): the ones this test names must be these
        assert {k: v for k, v in self.env.items() if k in created} == {
            k: created[k] for k in self.env if k in created
        }

    def queued_keys(self) -> list[str]:
        sqs, keys = self.client("sqs"), []
        while True:
            got = sqs.receive_message(
                QueueUrl=self.env["EVENTS_QUEUE_URL"], MaxNumberOfMessages=10
            ).get("Messages", [])
            if not got:
                return keys
            for message in got:
                keys.append(json.loads(message["Body"])["key"])
                sqs.delete_message(
                    QueueUrl=self.env["EVENTS_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"]
                )


def _configure(monkeypatch: pytest.MonkeyPatch, endpoint: str, spool: str) -> dict[str, str]:
    account = "123456789012"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "SESSIONS_TABLE": "outage-SessionsTable",
        "IDEMPOTENCY_TABLE": "outage-IdempotencyTable",
        "EVENTS_QUEUE_URL": f"{endpoint}/{account}/outage-EventsQueue",
        "EVENTS_DLQ_URL": f"{endpoint}/{account}/outage-EventsDLQ",
        "CONSOLE_CONNECTIONS_TABLE": "outage-ConsoleConnectionsTable",
        "CONSOLE_EVENTS_TABLE": "outage-ConsoleEventsTable",
        "EVENT_SPOOL_DIR": spool,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "EDGE_PUBLIC_URL": "wss://edge.example.com",
        "STREAM_TOKEN_SECRET": STREAM_SECRET,
        "VAPI_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ADMIN_API_KEY": ADMIN_KEY,
        "VAPI_ASSISTANT_ID": "asst-default",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    monkeypatch.delenv("WORKER_FUNCTION_NAME", raising=False)
    return env


@pytest.fixture
def moto(monkeypatch, tmp_path) -> Iterator[tuple[MotoProcess, LiveAws]]:
    server = MotoProcess(_free_port())
    try:
        live = LiveAws(server.endpoint, _configure(monkeypatch, server.endpoint, str(tmp_path)))
        live.create()
        yield server, live
    finally:
        server.stop()


def _timed(request):
    started = time.monotonic()
    result = request()
    return result, time.monotonic() - started


def _assistant_in_twiml(result) -> str:
    body = response_body(result).decode()
    token = body.split('name="token" value="')[1].split('"')[0]
    return stream_token.verify(STREAM_SECRET, token, _sid(9), now=time.time()).assistant_id


def _sid(n: int) -> str:
    return "CA" + f"{n:x}" * 32


def _status(n: int, status: str) -> dict[str, str]:
    return voice_params(CallSid=_sid(n), CallStatus=status, SequenceNumber=str(n))


def test_paused_aws_every_webhook_answers_in_time_and_nothing_is_lost(moto, monkeypatch):
    server, live = moto
    monkeypatch.setattr(storage, "BINDING_CACHE_SECONDS", 0.0)  # every call reads it again
    monkeypatch.setattr(aws, "COOLDOWN_SECONDS", 1.0)  # shorter, for the wait after resume
    storage.Store(live.env["SESSIONS_TABLE"], live.endpoint).put_assistant(
        {"id": "asst-bound"}, [NUMBER], time.time()
    )
    # Seen once while AWS is healthy: read and remembered (and queued normally).
    seen = twilio_post("/twilio/voice", voice_params(CallSid=_sid(9), To=NUMBER))
    assert _assistant_in_twiml(seen) == "asst-bound"
    assert twilio_post("/twilio/status", _status(1, "ringing"))["statusCode"] == 204

    server.pause()
    results = {
        "voice": _timed(
            lambda: twilio_post("/twilio/voice", voice_params(CallSid=_sid(9), To=NUMBER))
        ),
        "assistant-request": _timed(
            lambda: vapi_post({"type": "assistant-request", "phoneNumber": {"number": NUMBER}})
        ),
        "status-1": _timed(lambda: twilio_post("/twilio/status", _status(2, "in-progress"))),
        "status-2": _timed(lambda: twilio_post("/twilio/status", _status(3, "completed"))),
        "vapi-event": _timed(
            lambda: vapi_post(
                {"type": "status-update", "status": "ended", "call": {"id": "v1"}, "timestamp": 7}
            )
        ),
        "tool-calls": _timed(
            lambda: vapi_post(
                {
                    "type": "tool-calls",
                    "call": {"id": "v1"},
                    "toolCallList": [
                        {"id": "t1", "function": {"name": "order_status", "arguments": "{}"}}
                    ],
                }
            )
        ),
    }
    for route, (result, elapsed) in results.items():
        assert result["statusCode"] in (200, 204), route
        assert elapsed < BUDGET_S + SLACK_S, f"{route} took {elapsed:.1f} s"
    # Stale-while-error: the number's own assistant, not the default.
    assert _assistant_in_twiml(results["voice"][0]) == "asst-bound"
    assert json.loads(response_body(results["assistant-request"][0])) == {
        "assistantId": "asst-bound"
    }
    spool = outbox.Spool(Path(live.env["EVENT_SPOOL_DIR"]))
    assert spool.count() == 3  # status-1, status-2, vapi-event

    server.resume()
    time.sleep(aws.COOLDOWN_SECONDS)  # the last failure's cooldown: then AWS is tried again
    # The next event that reaches SQS brings the spooled ones along.
    assert twilio_post("/twilio/status", _status(4, "completed"))["statusCode"] == 204
    assert spool.count() == 0
    keys = live.queued_keys()
    expected = {
        f"twilio:{_sid(1)}:ringing:1",
        f"twilio:{_sid(2)}:in-progress:2",
        f"twilio:{_sid(3)}:completed:3",
        "vapi:v1:status-update:7",
        f"twilio:{_sid(4)}:completed:4",
    }
    # None lost. (A send abandoned at its deadline may still land after the resume: a duplicate,
    # which the worker's idempotency absorbs; hence a set.)
    assert set(keys) == expected


def test_refused_connection_spools_then_the_worker_loop_replays(monkeypatch, tmp_path):
    port = _free_port()  # nothing listens here yet: connection refused
    env = _configure(monkeypatch, f"http://127.0.0.1:{port}", str(tmp_path))
    for n, status in ((5, "ringing"), (6, "completed")):
        params = _status(n, status)
        result, elapsed = _timed(lambda params=params: twilio_post("/twilio/status", params))
        assert result["statusCode"] == 204
        assert elapsed < BUDGET_S + SLACK_S
    result, elapsed = _timed(
        lambda: twilio_post("/twilio/voice", voice_params(CallSid=_sid(7), To=NUMBER))
    )
    assert result["statusCode"] == 200  # the default assistant: this number was never seen
    assert elapsed < BUDGET_S + SLACK_S
    spool = outbox.Spool(tmp_path)
    assert spool.count() == 2

    server = MotoProcess(port)  # the endpoint comes back (empty: create what the stack has)
    try:
        live = LiveAws(server.endpoint, env)
        live.create()
        sqs = live.client("sqs")
        loop = WorkerLoop(sqs, env["EVENTS_QUEUE_URL"], lambda event, context: {}, spool=spool)
        assert loop.drain_spool() == 2
        assert spool.count() == 0
        assert set(live.queued_keys()) == {
            f"twilio:{_sid(5)}:ringing:5",
            f"twilio:{_sid(6)}:completed:6",
        }
    finally:
        server.stop()
