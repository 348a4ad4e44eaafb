import json
import time
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from functions import twilio_webhooks
from functions.storage import Store
from tests.functions.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CALL_SID,
    DOMAIN,
    STREAM_SECRET,
    apigw_event,
    invoke,
    response_body,
    twilio_post,
    voice_params,
)
from voicebridge import stream_token, twilio_signature

STREAM_SID = "MZ" + "2" * 32


def _stream(result):
    assert result["statusCode"] == 200, response_body(result)
    assert result["headers"]["content-type"].startswith("application/xml")
    root = ET.fromstring(response_body(result))
    stream = root.find("./Connect/Stream")
    assert stream is not None
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    return stream, params


def test_twilio_public_vector_through_our_form_parsing():
    body = urlencode(
        {
            "CallSid": "CA1234567890ABCDE",
            "Caller": "+14158675309",
            "Digits": "1234",
            "From": "+14158675309",
            "To": "+18005551212",
        }
    ).encode()
    form = twilio_webhooks.parse_form(body)
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature.is_valid("12345", url, form, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not twilio_signature.is_valid("12345", url, form, "RSOYDt4T1cUTdK1PDd93/VVr8B9=")


def test_repeated_form_fields_are_all_signed():
    form = twilio_webhooks.parse_form(b"A=1&B=2&A=3")
    assert form == {"A": ["1", "3"], "B": "2"}
    url = "https://x.example/twilio/status"
    signature = twilio_signature.sign("t", url, {"A": ["1", "3"], "B": "2"})
    assert twilio_signature.is_valid("t", url, form, signature)
    assert not twilio_signature.is_valid("t", url, {"A": "1", "B": "2"}, signature)


def test_voice_answers_stream_twiml_with_signed_token_and_writes_session(aws):
    result = twilio_post("/twilio/voice", voice_params())
    stream, params = _stream(result)
    assert stream.get("url") == "wss://edge.example.com/media"
    assert stream.get("statusCallback") == f"https://{DOMAIN}/twilio/status"
    assert params["callSid"] == CALL_SID
    assert params["from"] == "+14155550123"
    assert params["to"] == "+18005550199"
    grant = stream_token.verify(STREAM_SECRET, params["token"], CALL_SID, now=time.time())
    assert grant.assistant_id == "asst-default"
    session = Store(aws.env["SESSIONS_TABLE"]).get_session(CALL_SID, now=0)
    assert session["assistant_id"] == "asst-default"
    assert session["from"] == "+14155550123"
    assert session["expires_at"] > session["created_at"]


def test_voice_uses_the_number_binding(aws):
    Store(aws.env["SESSIONS_TABLE"]).put_assistant({"id": "asst-bound"}, ["+18005550199"], 0)
    _, params = _stream(twilio_post("/twilio/voice", voice_params()))
    grant = stream_token.verify(STREAM_SECRET, params["token"], CALL_SID, now=time.time())
    assert grant.assistant_id == "asst-bound"


def test_signature_uses_real_sdk_and_raw_query_string(aws):
    params = voice_params()
    url = f"https://{DOMAIN}/twilio/voice?tenant=a%20b&x=1"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    body = urlencode(params).encode()
    event = apigw_event(
        "POST",
        "/twilio/voice",
        body,
        {"x-twilio-signature": signature, "content-type": "application/x-www-form-urlencoded"},
        query="tenant=a%20b&x=1",
    )
    _stream(invoke(event))


def test_plain_text_body_is_accepted_too(aws):
    params = voice_params()
    signature = twilio_signature.sign(AUTH_TOKEN, f"https://{DOMAIN}/twilio/voice", params)
    event = apigw_event(
        "POST",
        "/twilio/voice",
        urlencode(params).encode(),
        {"x-twilio-signature": signature},
        base64_body=False,
    )
    _stream(invoke(event))


def test_custom_domain_validates_against_public_base_url(aws, monkeypatch):
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://voice.example.com")
    params = voice_params()
    good = twilio_post("/twilio/voice", params, signed_url="https://voice.example.com/twilio/voice")
    stream, _ = _stream(good)
    assert stream.get("statusCallback") == "https://voice.example.com/twilio/status"
    # Signed for the execute-api host: not the URL Twilio was given, so rejected.
    from voicebridge.config import reset_settings_cache

    reset_settings_cache()
    assert twilio_post("/twilio/voice", params)["statusCode"] == 403


@pytest.mark.parametrize("signature", [None, "", "bm90IGEgc2lnbmF0dXJl", "x" * 500])
def test_bad_signature_is_403_without_side_effects(aws, capfd, signature):
    result = twilio_post("/twilio/voice", voice_params(), signature=signature)
    assert result["statusCode"] == 403
    assert aws.items() == []
    assert "AuthFailures" in capfd.readouterr().out


def test_tampered_body_is_403(aws):
    params = voice_params()
    url = f"https://{DOMAIN}/twilio/voice"
    signature = twilio_signature.sign(AUTH_TOKEN, url, params)
    tampered = urlencode(voice_params(To="+19005550000")).encode()
    event = apigw_event("POST", "/twilio/voice", tampered, {"x-twilio-signature": signature})
    assert invoke(event)["statusCode"] == 403
    assert aws.items() == []


def test_session_write_failure_still_answers(aws, monkeypatch, capfd, log_lines):
    def broken(*args, **kwargs):
        raise RuntimeError("DynamoDB down")

    monkeypatch.setattr(Store, "put_session", broken)
    _, params = _stream(twilio_post("/twilio/voice", voice_params()))
    assert params["callSid"] == CALL_SID
    out = capfd.readouterr().out
    assert "SessionWriteFailures" in out
    lines = log_lines()
    (failure,) = [line for line in lines if "session write failed" in line["message"]]
    assert failure["level"] == "ERROR"
    assert all(line["callSid"] == CALL_SID for line in lines)  # every line of the call


def test_no_assistant_anywhere_says_so_and_hangs_up(aws, monkeypatch):
    monkeypatch.delenv("VAPI_ASSISTANT_ID")
    result = twilio_post("/twilio/voice", voice_params())
    root = ET.fromstring(response_body(result))
    assert root.find("Say") is not None
    assert root.find("Hangup") is not None
    assert root.find("Connect") is None


def test_malformed_call_sid_is_400(aws):
    assert twilio_post("/twilio/voice", voice_params(CallSid="nope"))["statusCode"] == 400


def test_oversized_body_is_413(aws):
    params = voice_params(Junk="x" * (1024 * 1024))
    assert twilio_post("/twilio/voice", params)["statusCode"] == 413
    assert aws.items() == []


def test_status_callback_is_queued_with_a_stable_key(aws):
    params = voice_params(CallStatus="completed", SequenceNumber="3", CallDuration="42")
    result = twilio_post("/twilio/status", params)
    assert result["statusCode"] == 204
    (envelope,) = aws.queued()
    assert envelope["source"] == "twilio"
    assert envelope["type"] == "call-status"
    assert envelope["callSid"] == CALL_SID
    assert envelope["key"] == f"twilio:{CALL_SID}:completed:3"
    assert envelope["payload"]["CallDuration"] == "42"


def test_stream_status_callback_is_queued(aws):
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": CALL_SID,
        "StreamSid": STREAM_SID,
        "StreamEvent": "stream-started",
        "StreamName": STREAM_SID,
        "Timestamp": "2026-11-21T21:00:00Z",
    }
    assert twilio_post("/twilio/status", params)["statusCode"] == 204
    (envelope,) = aws.queued()
    assert envelope["type"] == "stream-status"
    assert envelope["key"] == f"twilio:{CALL_SID}:{STREAM_SID}:stream-started"


def test_status_with_bad_signature_queues_nothing(aws):
    params = voice_params(CallStatus="completed")
    assert twilio_post("/twilio/status", params, signature="AAAA")["statusCode"] == 403
    assert aws.queued() == []


async def test_local_server_validates_against_the_request_url(aws):
    """Under uvicorn (no API Gateway event, no PUBLIC_BASE_URL) the request URL is the one."""
    from functions.api import app

    params = voice_params()
    signature = twilio_signature.sign(AUTH_TOKEN, "http://testserver/twilio/voice", params)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        headers = {"X-Twilio-Signature": signature}
        ok = await client.post("/twilio/voice", data=params, headers=headers)
        assert ok.status_code == 200
        assert "<Connect><Stream" in ok.text
        assert 'statusCallback="http://testserver/twilio/status"' in ok.text
        bad = await client.post("/twilio/voice", data=params, headers={"X-Twilio-Signature": "x"})
        assert bad.status_code == 403


def test_health(aws):
    result = invoke(apigw_event("GET", "/health"))
    assert result["statusCode"] == 200
    assert json.loads(response_body(result)) == {"status": "ok"}


# Identifiers, account, replays, parameters (issue 10) -----------------------------------------


def test_a_signature_spliced_into_the_call_sid_is_refused(aws):
    """Twilio signs name+value pairs without separators: the signature of
    CallSid=X&CallStatus=ringing also signs a lone CallSid of X + "CallStatusringing"."""
    honest = voice_params()
    url = f"https://{DOMAIN}/twilio/voice"
    signature = twilio_signature.sign(AUTH_TOKEN, url, honest)
    spliced = {k: v for k, v in honest.items() if k != "CallStatus"}
    spliced["CallSid"] = CALL_SID + "CallStatusringing"
    assert twilio_signature.is_valid(AUTH_TOKEN, url, spliced, signature)  # the weakness itself
    result = twilio_post("/twilio/voice", spliced, signature=signature)
    assert result["statusCode"] == 400
    assert aws.items() == []


@pytest.mark.parametrize(
    "call_sid",
    [CALL_SID + "\n", CALL_SID + "0", CALL_SID[:-1], "CA" + "g" * 32, "ca" + "1" * 32, "nope"],
)
def test_call_sid_must_be_a_whole_twilio_sid(aws, call_sid):
    assert twilio_post("/twilio/voice", voice_params(CallSid=call_sid))["statusCode"] == 400
    assert twilio_post("/twilio/status", voice_params(CallSid=call_sid))["statusCode"] == 400
    assert aws.items() == []
    assert aws.queued() == []


@pytest.mark.parametrize("account", ["AC" + "b" * 32, "", None])
def test_requests_for_another_account_are_403(aws, account, log_lines):
    params = voice_params(CallStatus="completed")
    if account is None:
        del params["AccountSid"]
    else:
        params["AccountSid"] = account
    assert twilio_post("/twilio/voice", params)["statusCode"] == 403
    assert twilio_post("/twilio/status", params)["statusCode"] == 403
    assert aws.items() == []
    assert aws.queued() == []
    reasons = [line.get("reason") for line in log_lines()]
    assert reasons == ["another account", "another account"]


def test_a_long_sip_from_is_left_out_of_the_stream_parameters(aws):
    from infra.caller.twiml import parse

    caller = "sip:" + "a" * 600 + "@pbx.example.com"
    result = twilio_post("/twilio/voice", voice_params(From=caller))
    _, params = _stream(result)
    assert "from" not in params
    assert params["callSid"] == CALL_SID
    assert params["to"] == "+18005550199"
    assert parse(response_body(result).decode()).stream is not None  # what Twilio would accept
    session = Store(aws.env["SESSIONS_TABLE"]).get_session(CALL_SID, now=0)
    assert session["from"] == caller  # kept whole where there is no limit


def test_a_replayed_voice_request_keeps_the_first_session_and_the_edge_claim(aws):
    assert twilio_post("/twilio/voice", voice_params())["statusCode"] == 200
    table = aws.env["SESSIONS_TABLE"]
    key = {"pk": {"S": f"CALL#{CALL_SID}"}, "sk": {"S": "SESSION"}}
    aws.dynamodb.update_item(  # what the edge's claim of the stream adds to the session
        TableName=table,
        Key=key,
        UpdateExpression="SET stream_claimed = :s",
        ExpressionAttributeValues={":s": {"S": "MZ" + "3" * 32}},
    )
    replayed = twilio_post("/twilio/voice", voice_params(From="+14155550999"))
    assert replayed["statusCode"] == 200  # answered (the edge refuses the second stream)
    item = aws.dynamodb.get_item(TableName=table, Key=key)["Item"]
    assert item["stream_claimed"]["S"] == "MZ" + "3" * 32
    assert item["from"]["S"] == "+14155550123"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"StreamEvent": "stream-started", "StreamSid": "MZ1"}, "StreamSid"),
        ({"StreamEvent": "stream-started", "StreamSid": STREAM_SID + "\n"}, "StreamSid"),
        ({"StreamEvent": "stream-paused", "StreamSid": STREAM_SID}, "StreamEvent"),
        ({"SequenceNumber": "1e9"}, "SequenceNumber"),
        ({"SequenceNumber": "\u0661"}, "SequenceNumber"),  # ARABIC-INDIC DIGIT ONE
        ({"CallStatus": "x" * 33}, "CallStatus"),
    ],
)
def test_malformed_status_callbacks_are_400(aws, overrides, reason):
    result = twilio_post("/twilio/status", voice_params(**overrides))
    assert result["statusCode"] == 400
    assert reason in response_body(result).decode()
    assert aws.queued() == []


def test_status_payload_keeps_only_documented_fields_bounded(aws):
    params = voice_params(CallStatus="completed", SequenceNumber="4", Junk="x" * 5000)
    params["StreamError"] = "e" * 5000
    assert twilio_post("/twilio/status", params)["statusCode"] == 204
    (envelope,) = aws.queued()
    assert "Junk" not in envelope["payload"]
    assert envelope["payload"]["CallStatus"] == "completed"


def test_a_binding_read_that_fails_serves_the_last_known_one(aws, monkeypatch, capfd):
    from functions import storage

    Store(aws.env["SESSIONS_TABLE"]).put_assistant({"id": "asst-bound"}, ["+18005550199"], 0)
    monkeypatch.setattr(storage, "BINDING_CACHE_SECONDS", 0.0)  # every call reads it again
    _, params = _stream(twilio_post("/twilio/voice", voice_params()))
    assert stream_token.verify(STREAM_SECRET, params["token"], CALL_SID, time.time()).assistant_id

    def down(self, number):
        raise ConnectionError("DynamoDB unreachable")

    monkeypatch.setattr(Store, "get_binding", down)
    _, params = _stream(twilio_post("/twilio/voice", voice_params()))
    grant = stream_token.verify(STREAM_SECRET, params["token"], CALL_SID, now=time.time())
    assert grant.assistant_id == "asst-bound"
    assert "StaleBindings" in capfd.readouterr().out
    # A number this process never read: the default assistant, and an error in the log.
    _, params = _stream(twilio_post("/twilio/voice", voice_params(To="+18005550100")))
    grant = stream_token.verify(STREAM_SECRET, params["token"], CALL_SID, now=time.time())
    assert grant.assistant_id == "asst-default"


def test_without_our_account_sid_configured_any_real_account_sid_passes(aws, monkeypatch):
    monkeypatch.delenv("TWILIO_ACCOUNT_SID")
    assert (
        twilio_post("/twilio/voice", voice_params(AccountSid="AC" + "c" * 32))["statusCode"] == 200
    )
    assert twilio_post("/twilio/voice", voice_params(AccountSid="AC1"))["statusCode"] == 403
