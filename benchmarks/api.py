"""Control-plane benchmark (``make bench-api``): warm handler latency and import time.

Runs in-process: AWS is moto's ``mock_aws`` (DynamoDB/SQS calls are in-process Python, not a
network round trip), requests are API Gateway HTTP API v2 events through the real Mangum
``functions.api.handler``. Latency = wall time of one ``handler(event, context)`` call, after a
warm-up; EMF and log lines are written to /dev/null (the write is still paid for).
Import time = ``import functions.api`` in a fresh interpreter (median of several), the cold-start
proxy; ``-X importtime`` names the heaviest imports.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stdout
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


def _time(call: Callable[[], dict[str, Any]], n: int, expect: int) -> dict[str, float]:
    for _ in range(50):  # warm-up: caches, lazy clients, first-route compilation
        assert call()["statusCode"] == expect
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        result = call()
        samples.append((time.perf_counter() - started) * 1000.0)
        assert result["statusCode"] == expect
    return _percentiles(samples)


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
        context = _Context()
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
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    for route, stats in handler_latency(args.n).items():
        print(
            f"{route:32s} n={stats['n']:.0f}  p50 {stats['p50']:.2f} ms  "
            f"p99 {stats['p99']:.2f} ms  max {stats['max']:.2f} ms"
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
