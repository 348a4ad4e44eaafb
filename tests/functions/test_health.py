"""``GET /health`` tells a load balancer or a human whether the API can serve calls at all."""

import json

from tests.functions.conftest import apigw_event, invoke, response_body
from voicebridge.config import reset_settings_cache


def test_health_is_503_naming_every_bad_variable_but_no_value(aws, monkeypatch):
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    monkeypatch.delenv("ADMIN_API_KEY")
    monkeypatch.setenv("EDGE_PUBLIC_URL", "https://not-a-websocket.example")
    reset_settings_cache()
    result = invoke(apigw_event("GET", "/health"))
    assert result["statusCode"] == 503
    body = json.loads(response_body(result))
    assert body == {
        "status": "misconfigured",
        "variables": ["ADMIN_API_KEY", "EDGE_PUBLIC_URL", "TWILIO_AUTH_TOKEN"],
    }
    assert b"not-a-websocket" not in response_body(result)


def test_health_recovers_once_the_configuration_is_fixed(aws, monkeypatch):
    monkeypatch.delenv("STREAM_TOKEN_SECRET")
    reset_settings_cache()
    assert invoke(apigw_event("GET", "/health"))["statusCode"] == 503
    monkeypatch.setenv("STREAM_TOKEN_SECRET", "back-again")
    assert invoke(apigw_event("GET", "/health"))["statusCode"] == 200
