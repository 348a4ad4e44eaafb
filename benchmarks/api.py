"""Control-plane benchmark (``make bench-api``): warm handler latency and import time.

Runs in-process: AWS is moto's ``mock_aws`` (DynamoDB/SQS calls are in-process Python, not a
network round trip), requests are API Gateway HTTP API v2 events through the real Mangum
``functions.api.handler``. Latency = wall time of one ``handler(event, context)`` call, after a
warm-up; EMF and log lines are written to /dev/null (the write is still paid for).
Import time = ``import functions.api`` in a fresh interpreter (median of several), the cold-start
proxy; ``-X importtime`` names the heaviest imports.

AWS healthy vs down (``--outage``, on by default): the same webhooks against a moto server on
loopback, then with that port answering nothing (a listening socket that never accepts: a stalled
endpoint, the worst kind of down), every binding read going to DynamoDB (cache window 0). The
first request into the outage waits out its deadline and is reported on its own (per route, each
meeting the outage first); the timed ones after it meet the dependency's cooldown
(``functions.aws``), as every request does in the seconds after a failure.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any
from urllib.parse import urlencode

DOMAIN = "abc123.execute-api.us-east-1.amazonaws.com"
NUMBER = "+15550100002"
SECRETS = {
    "TWILIO_AUTH_TOKEN": "bench-token",
    "STREAM_TOKEN_SECRET": "bench-stream-secret",
    "VAPI_WEBHOOK_SECRET": "bench-webhook-secret",
    "ADMIN_API_KEY": "bench-admin",
    "EDGE_PUBLIC_URL": "wss://edge.example.com",
    "VAPI_ASSISTANT_ID": "asst-default",
}


class _Context:
    function_name = "bench"
    aws_request_id = "bench"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    memory_limit_in_mb = 512

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def _event(path: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": DOMAIN, "content-length": str(len(body)), **headers},
        "requestContext": {
            "domainName": DOMAIN,
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "1.2.3.4"},
            "stage": "$default",
            "routeKey": "$default",
            "requestId": "r",
        },
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.50), "p99": pick(0.99), "max": ordered[-1], "n": len(ordered)}


def _time(
    call: Callable[[], dict[str, Any]], n: int, expect: int, warmup: int = 50
) -> dict[str, float]:
    for _ in range(warmup):  # warm-up: caches, lazy clients, first-route compilation
        assert call()["statusCode"] == expect
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        result = call()
        samples.append((time.perf_counter() - started) * 1000.0)
        assert result["statusCode"] == expect
    return _percentiles(samples)


def _invoke(make: Callable[[], dict[str, Any]], context: Any) -> dict[str, Any]:
    """One request through the Lambda handler (``make`` builds a fresh event)."""
    from functions.api import handler

    result: dict[str, Any] = handler(make(), context)
    return result


def handler_latency(n: int) -> dict[str, dict[str, float]]:
    import boto3
    from moto import mock_aws

    from infra.local_aws import FAKE_CREDENTIALS, REGION, create_resources
    from voicebridge.twilio_signature import sign

    os.environ.update(FAKE_CREDENTIALS)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    with mock_aws(), open(os.devnull, "w") as devnull, redirect_stdout(devnull):
        env = create_resources(
            boto3.client("dynamodb", region_name=REGION), boto3.client("sqs", region_name=REGION)
        )
        os.environ.update({**env, **SECRETS})
        from functions.api import handler
        from functions.storage import Store

        Store(env["SESSIONS_TABLE"]).put_assistant({"id": "asst-bound"}, [NUMBER], time.time())
        context: Any = _Context()  # stands in for Lambda's context object
        params = {
            "CallSid": "CA" + "0" * 32,
            "AccountSid": "AC" + "0" * 32,
            "From": "+14155550123",
            "To": NUMBER,
            "CallStatus": "ringing",
            "Direction": "inbound",
        }
        voice_headers = {
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": sign(
                SECRETS["TWILIO_AUTH_TOKEN"], f"https://{DOMAIN}/twilio/voice", params
            ),
        }
        voice = _event("/twilio/voice", urlencode(params).encode(), voice_headers)
        message = {"message": {"type": "assistant-request", "phoneNumber": {"number": NUMBER}}}
        request = _event(
            "/vapi/webhook",
            json.dumps(message).encode(),
            {"content-type": "application/json", "x-vapi-secret": SECRETS["VAPI_WEBHOOK_SECRET"]},
        )
        store = Store(env["SESSIONS_TABLE"])

        def session_write() -> dict[str, Any]:
            store.put_session("CA" + "1" * 32, "+1", NUMBER, "asst", time.time(), 600)
            return {"statusCode": 200}

        return {
            "POST /twilio/voice": _time(lambda: handler(voice, context), n, 200),
            "assistant-request": _time(lambda: handler(request, context), n, 200),
            "(session put_item alone, moto)": _time(session_write, n, 200),
        }


def _signed_requests(number: str) -> dict[str, Callable[[], dict[str, Any]]]:
    """Per route, a maker of signed events: /twilio/voice and /twilio/status with a new CallSid
    each time (a new call, as in production: no conditional-write conflict), assistant-request."""
    from itertools import count

    from voicebridge.twilio_signature import sign

    sids = count(1)
    form = "application/x-www-form-urlencoded"

    def twilio(path: str, **extra: str) -> dict[str, Any]:
        params = {
            "CallSid": f"CA{next(sids):032x}",
            "AccountSid": "AC" + "0" * 32,
            "From": "+14155550123",
            "To": number,
            "CallStatus": "ringing",
            "Direction": "inbound",
            **extra,
        }
        signature = sign(SECRETS["TWILIO_AUTH_TOKEN"], f"https://{DOMAIN}{path}", params)
        headers = {"content-type": form, "x-twilio-signature": signature}
        return _event(path, urlencode(params).encode(), headers)

    message = {"message": {"type": "assistant-request", "phoneNumber": {"number": number}}}
    vapi_headers = {
        "content-type": "application/json",
        "x-vapi-secret": SECRETS["VAPI_WEBHOOK_SECRET"],
    }
    assistant_request = _event("/vapi/webhook", json.dumps(message).encode(), vapi_headers)
    return {
        "POST /twilio/voice": lambda: twilio("/twilio/voice"),
        "assistant-request": lambda: assistant_request,
        "POST /twilio/status": lambda: twilio(
            "/twilio/status", CallStatus="completed", SequenceNumber="3"
        ),
    }


@contextmanager
def _stalled_port(port: int) -> Iterator[None]:
    """A socket on ``port`` that accepts connections into its backlog and never reads them."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(4096)
        yield


def outage_latency(n: int) -> dict[str, dict[str, dict[str, float]]]:
    """{route: {"healthy": stats, "down": stats, "first": {"ms": ...}}}."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from functions import aws, storage, web
    from infra.local_aws import FAKE_CREDENTIALS, REGION, create_resources
    from voicebridge.config import reset_settings_cache

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per AWS request
    os.environ.update(FAKE_CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    session = boto3.session.Session(region_name=REGION)
    env = create_resources(
        session.client("dynamodb", endpoint_url=endpoint),
        session.client("sqs", endpoint_url=endpoint),
        prefix="bench-outage",
    )
    spool = tempfile.mkdtemp(prefix="bench-spool-")
    os.environ.update({**env, **SECRETS, "AWS_ENDPOINT_URL": endpoint, "EVENT_SPOOL_DIR": spool})
    reset_settings_cache()
    storage.BINDING_CACHE_SECONDS = 0.0  # every request reads the binding: the worst case
    from functions.api import handler

    storage.Store(env["SESSIONS_TABLE"], endpoint).put_assistant(
        {"id": "asst-bound"}, [NUMBER], time.time()
    )
    requests = _signed_requests(NUMBER)
    context: Any = _Context()  # stands in for Lambda's context object
    expect = {"POST /twilio/voice": 200, "assistant-request": 200, "POST /twilio/status": 204}
    results: dict[str, dict[str, dict[str, float]]] = {}
    with open(os.devnull, "w") as devnull, redirect_stdout(devnull):
        web.logger.registered_handler.stream = devnull  # type: ignore[attr-defined]
        for route, make in requests.items():
            results[route] = {
                "healthy": _time(functools.partial(_invoke, make, context), n, expect[route])
            }
        server.stop()
        with _stalled_port(port):
            for route, make in requests.items():
                aws.forget_failures()  # each route's first request meets the outage itself
                started = time.perf_counter()
                assert handler(make(), context)["statusCode"] == expect[route]
                first = {"ms": (time.perf_counter() - started) * 1000.0}
                down = _time(functools.partial(_invoke, make, context), n, expect[route], 5)
                results[route].update({"down": down, "first": first})
    spooled = len(os.listdir(spool))
    assert spooled >= n, f"status events must be spooled, found {spooled}"
    return results


def _import_ms(module: str, runs: int) -> list[float]:
    code = f"import time;t=time.perf_counter();import {module};print(time.perf_counter()-t)"
    return [
        float(subprocess.check_output([sys.executable, "-c", code], text=True)) * 1000.0  # noqa: S603
        for _ in range(runs)
    ]


def import_time(runs: int) -> tuple[list[float], list[float], list[tuple[int, str]]]:
    """(functions.api samples, bare fastapi samples, heaviest imports), interleaved runs so
    machine noise hits both alike."""
    samples: list[float] = []
    baseline: list[float] = []
    for _ in range(runs):
        samples += _import_ms("functions.api", 1)
        baseline += _import_ms("fastapi", 1)
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import functions.api"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    top_level = []
    for line in trace.splitlines()[1:]:
        _, _, cumulative, name = (part.strip() for part in line.replace("|", ":").split(":", 3))
        if not name.startswith(" ") and "." not in name:
            top_level.append((int(cumulative), name))
    return samples, baseline, sorted(top_level, reverse=True)[:8]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="timed requests per route")
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument(
        "--no-outage", dest="outage", action="store_false", help="skip AWS healthy vs down"
    )
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    for route, stats in handler_latency(args.n).items():
        print(
            f"{route:32s} n={stats['n']:.0f}  p50 {stats['p50']:.2f} ms  "
            f"p99 {stats['p99']:.2f} ms  max {stats['max']:.2f} ms"
        )
    if args.outage:
        print("AWS healthy (moto server on loopback) vs down (its port stalled), same run:")
        for route, cases in outage_latency(args.n).items():
            healthy, down = cases["healthy"], cases["down"]
            print(
                f"{route:22s} healthy p50 {healthy['p50']:.2f} p99 {healthy['p99']:.2f} ms | "
                f"down p50 {down['p50']:.2f} p99 {down['p99']:.2f} max {down['max']:.2f} ms "
                f"(p99 x{down['p99'] / healthy['p99']:.2f}) | "
                f"first request into the outage {cases['first']['ms']:.0f} ms"
            )
    samples, baseline, heavy = import_time(args.import_runs)
    for name, runs in (("import functions.api", samples), ("import fastapi (floor)", baseline)):
        print(
            f"{name:32s} median {statistics.median(runs):.0f} ms over {len(runs)} fresh "
            f"interpreters (min {min(runs):.0f}, max {max(runs):.0f})"
        )
    print(
        "heaviest top-level imports (cumulative ms): "
        + ", ".join(f"{name} {us / 1000:.0f}" for us, name in heavy)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
