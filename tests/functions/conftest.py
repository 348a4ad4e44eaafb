"""Control-plane test rig: moto in-process (mock_aws) with the template's tables and queues,
the API's required config, and helpers to drive ``functions.api.handler`` with API Gateway v2
events the way Lambda does."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from moto import mock_aws

from functions import aws as aws_clients
from functions import replay, storage, worker
from infra.local_aws import REGION, create_resources, load_template
from voicebridge import twilio_signature

AUTH_TOKEN = "test-auth-token"
WEBHOOK_SECRET = "test-webhook-secret"
ADMIN_KEY = "test-admin-key"
STREAM_SECRET = "test-stream-secret"
ACCOUNT_SID = "AC" + "a" * 32
DOMAIN = "abc123.execute-api.us-east-1.amazonaws.com"
CALL_SID = "CA" + "1" * 32


@dataclass
class Aws:
    env: dict[str, str]
    dynamodb: Any
    sqs: Any

    def queued(self, max_messages: int = 10) -> list[dict[str, Any]]:
        """Bodies currently in the events queue (received and deleted)."""
        bodies = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.env["EVENTS_QUEUE_URL"], MaxNumberOfMessages=max_messages
            ).get("Messages", [])
            if not got:
                return bodies
            for message in got:
                bodies.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.env["EVENTS_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"]
                )

    def items(self) -> list[dict[str, Any]]:
        return self.dynamodb.scan(TableName=self.env["SESSIONS_TABLE"])["Items"]


@pytest.fixture(scope="session")
def _template():
    return load_template()


@pytest.fixture(scope="session")
def _clients():
    """boto3 clients are slow to build; moto intercepts them in every later mock_aws block."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    return session.client("dynamodb"), session.client("sqs")


def _forget_cached_state() -> None:
    for store in storage._stores.values():
        store._bindings.clear()
    aws_clients.forget_failures()
    replay._nonces = replay._Memory()
    replay._tool_calls = replay._Memory()


@pytest.fixture
def aws(monkeypatch, tmp_path, _template, _clients):
    """A fresh in-process AWS (moto) holding the template's tables and queues, and the API's
    configuration pointing at it. Stores and queues keep their boto3 clients across tests
    (moto resets the data, not the clients); only in-process caches are reset."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    _forget_cached_state()
    with mock_aws():
        dynamodb, sqs = _clients
        env = create_resources(dynamodb, sqs, _template, prefix="test")
        config = {
            **env,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_API_BASE": "https://twilio.test",
            "EDGE_PUBLIC_URL": "wss://edge.example.com",
            "STREAM_TOKEN_SECRET": STREAM_SECRET,
            "VAPI_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ADMIN_API_KEY": ADMIN_KEY,
            "VAPI_ASSISTANT_ID": "asst-default",
            "VAPI_API_KEY": "vapi-key",
            "VAPI_BASE_URL": "https://vapi.test",
            "TRANSFER_ALLOWLIST": "sales=+14155550100,support=+14155550111",
            "EVENT_SPOOL_DIR": str(tmp_path / "spool"),
        }
        for name, value in config.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
        yield Aws(config, dynamodb, sqs)
    _forget_cached_state()


class FakeContext:
    function_name = "voicebridge-api"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:voicebridge-api"
    memory_limit_in_mb = 512
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/voicebridge-api"
    log_stream_name = "stream"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def apigw_event(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: str = "",
    domain: str = DOMAIN,
    base64_body: bool = True,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0, ``$default`` stage) event, as Lambda receives it."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {k.lower(): v for k, v in (headers or {}).items()}
        | {"host": domain, "content-length": str(len(body)), "x-forwarded-proto": "https"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.9",
                "userAgent": "TwilioProxy/1.1",
            },
            "requestId": "r1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "21/Nov/2026:21:00:00 +0000",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": base64.b64encode(body).decode() if base64_body else body.decode(),
        "isBase64Encoded": base64_body,
    }


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    """Call the Lambda handler like the runtime: synchronously, with a usable event loop
    (pytest-asyncio leaves none behind after an async test; Lambda's main thread always has one)."""
    from functions.api import handler

    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    return handler(event, FakeContext())


@pytest.fixture
def log_lines(monkeypatch):
    """The API and worker JSON log lines written during the test, parsed."""
    from functions import web

    buffer = io.StringIO()
    for logger in (web.logger, worker.logger):
        monkeypatch.setattr(logger.registered_handler, "stream", buffer)
    return lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]


def response_body(result: dict[str, Any]) -> bytes:
    body = result.get("body") or ""
    return base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()


def voice_params(**overrides: str) -> dict[str, str]:
    params = {
        "CallSid": CALL_SID,
        "AccountSid": ACCOUNT_SID,
        "From": "+14155550123",
        "To": "+18005550199",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }
    params.update(overrides)
    return params


def twilio_post(
    path: str,
    params: dict[str, str],
    *,
    query: str = "",
    signed_url: str | None = None,
    domain: str = DOMAIN,
    signature: str | None = "sign",
) -> dict[str, Any]:
    """A Twilio form POST through the Lambda handler, signed like Twilio signs it."""
    url = signed_url or f"https://{domain}{path}" + (f"?{query}" if query else "")
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if signature == "sign":
        headers["x-twilio-signature"] = twilio_signature.sign(AUTH_TOKEN, url, params)
    elif signature is not None:
        headers["x-twilio-signature"] = signature
    body = urlencode(params).encode()
    return invoke(apigw_event("POST", path, body, headers, query=query, domain=domain))


def vapi_post(message: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    body = json.dumps({"message": message}).encode()
    auth = {"x-vapi-secret": WEBHOOK_SECRET} if headers is None else headers
    return invoke(
        apigw_event("POST", "/vapi/webhook", body, {"content-type": "application/json", **auth})
    )
