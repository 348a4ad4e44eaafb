"""``PUT``/``GET /numbers/{e164}``: bind a number to an assistant that already exists in Vapi."""

import json

import pytest

from tests.functions.conftest import (
    ADMIN_KEY,
    CALL_SID,
    apigw_event,
    invoke,
    response_body,
    twilio_post,
    voice_params,
)

AUTH = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
ASSISTANT = "3f1c2b9e-8a57-4d6e-9c1b-2a3d4e5f6a7b"
NUMBER = "+18005550199"


def _put(number, body, headers=AUTH):
    return invoke(apigw_event("PUT", f"/numbers/{number}", json.dumps(body).encode(), headers))


def test_bound_number_routes_its_calls_to_that_assistant(aws):
    first = _put(NUMBER, {"assistantId": ASSISTANT})
    assert first["statusCode"] == 200
    assert json.loads(response_body(first)) == {"phoneNumber": NUMBER, "assistantId": ASSISTANT}
    assert _put(NUMBER, {"assistantId": ASSISTANT})["statusCode"] == 200  # idempotent
    got = invoke(apigw_event("GET", f"/numbers/{NUMBER}", headers=AUTH))
    assert json.loads(response_body(got))["assistantId"] == ASSISTANT
    assert twilio_post("/twilio/voice", voice_params(To=NUMBER))["statusCode"] == 200
    session = aws.dynamodb.get_item(
        TableName=aws.env["SESSIONS_TABLE"],
        Key={"pk": {"S": f"CALL#{CALL_SID}"}, "sk": {"S": "SESSION"}},
    )["Item"]
    assert session["assistant_id"]["S"] == ASSISTANT


def test_rebinding_replaces_the_earlier_binding(aws):
    _put(NUMBER, {"assistantId": ASSISTANT})
    other = "00000000-0000-4000-8000-000000000001"
    assert twilio_post("/twilio/voice", voice_params(To=NUMBER))["statusCode"] == 200
    _put(NUMBER, {"assistantId": other})
    got = invoke(apigw_event("GET", f"/numbers/{NUMBER}", headers=AUTH))
    assert json.loads(response_body(got))["assistantId"] == other


@pytest.mark.parametrize(
    ("number", "body", "headers", "status"),
    [
        (NUMBER, {"assistantId": ASSISTANT}, {"content-type": "application/json"}, 401),
        ("14155550123", {"assistantId": ASSISTANT}, AUTH, 400),
        (NUMBER, {"assistantId": "not-an-id"}, AUTH, 400),
        (NUMBER, {"assistantId": ASSISTANT, "extra": 1}, AUTH, 400),
        (NUMBER, {}, AUTH, 400),
    ],
)
def test_bad_bindings_are_refused_and_nothing_is_stored(aws, number, body, headers, status):
    assert _put(number, body, headers)["statusCode"] == status
    missing = invoke(apigw_event("GET", f"/numbers/{NUMBER}", headers=AUTH))
    assert missing["statusCode"] == 404
