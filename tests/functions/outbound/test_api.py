"""The outbound routes through the Lambda handler (API Gateway events), on moto."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import httpx
import pytest

from functions import clients
from functions.outbound import routes
from tests.functions.conftest import (
    ACCOUNT_SID,
    ADMIN_KEY,
    CALL_SID,
    DOMAIN,
    STREAM_SECRET,
    FakeContext,
    apigw_event,
    invoke,
    response_body,
    twilio_post,
)
from tests.functions.outbound.fakes import Clock, FakeTwilio
from voicebridge import call_overrides, stream_token, twilio_calls

AUTH = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
TO, FROM = "+14155550123", "+14155550199"


@pytest.fixture
def twilio(monkeypatch):
    fake = FakeTwilio(Clock())
    monkeypatch.setattr(twilio_calls, "new_client", fake.client)
    return fake


@pytest.fixture
def vapi(monkeypatch):
    """Vapi's GET /assistant/{id}: known ids answer 200, others 404."""
    known = {"asst-known"}
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        name = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(200 if name in known else 404, json={"id": name})

    monkeypatch.setattr(
        clients,
        "new_http_client",
        lambda: httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    return seen


def call(method: str, path: str, body=None, headers=AUTH, query: str = ""):
    data = json.dumps(body).encode() if body is not None else b""
    result = invoke(apigw_event(method, path, data, headers, query=query))
    raw = response_body(result)
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode()
    return result["statusCode"], parsed


def dial_id(form) -> str:
    return parse_qs(urlsplit(form["Url"][0]).query)["dial"][0]


# -- POST /calls ---------------------------------------------------------------------------


def test_place_a_call_with_variables_and_machine_detection(aws, twilio, vapi):
    status, body = call(
        "POST",
        "/calls",
        {
            "to": TO,
            "from": FROM,
            "assistantId": "asst-known",
            "variables": {"name": "Ada"},
            "firstMessage": "Hi {{name}}",
            "machineDetection": "message",
            "voicemailMessage": "Please call us back.",
        },
    )
    assert status == 201, body
    assert body["callSid"] in twilio.calls
    assert (body["to"], body["from"], body["assistantId"]) == (TO, FROM, "asst-known")
    (form,) = twilio.created
    assert form["MachineDetection"] == ["DetectMessageEnd"]
    assert form["Url"][0].startswith(f"https://{DOMAIN}/twilio/outbound/answer?dial=call.")
    assert form["StatusCallback"][0].startswith(f"https://{DOMAIN}/twilio/outbound/status?dial=")
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert vapi == ["/assistant/asst-known"]
    # The record exists at once, with the direction.
    status, record = call("GET", f"/calls/{body['callSid']}")
    assert status == 200
    assert (record["direction"], record["to"], record["from"]) == ("outbound-api", TO, FROM)


def test_the_default_from_and_the_assistant_bound_to_it(aws, twilio, vapi, monkeypatch):
    monkeypatch.setenv("OUTBOUND_FROM_NUMBER", FROM)
    status, body = call("POST", "/calls", {"to": TO})
    assert status == 201, body
    assert body["from"] == FROM
    assert body["assistantId"] == "asst-default"  # VAPI_ASSISTANT_ID: no Vapi lookup needed
    assert vapi == []


@pytest.mark.parametrize(
    ("request_body", "expected", "message"),
    [
        ({"to": TO, "from": FROM, "assistantId": "asst-gone"}, 422, "unknown assistant"),
        ({"to": TO}, 422, "OUTBOUND_FROM_NUMBER"),
        ({"to": "4155550123", "from": FROM}, 422, None),
    ],
)
def test_bad_requests_say_what_is_wrong(aws, twilio, vapi, request_body, expected, message):
    status, body = call("POST", "/calls", request_body)
    assert status == expected
    if message:
        assert message in body["error"]
    assert twilio.created == []


def test_a_do_not_call_number_is_refused_and_twilios_refusal_is_passed_on(aws, twilio, vapi):
    assert call("POST", "/dnc", {"numbers": [TO]}) == (200, {"added": 1})
    status, body = call("POST", "/calls", {"to": TO, "from": FROM})
    assert (status, body["error"]) == (409, f"{TO} is on the do-not-call list")
    twilio.answer = lambda form: httpx.Response(
        400, json={"code": 21211, "message": "Invalid 'To' Phone Number"}
    )
    status, body = call("POST", "/calls", {"to": "+14155550124", "from": FROM})
    assert status == 400
    assert "21211" in body["error"]


def test_outbound_routes_need_the_admin_key(aws, twilio):
    for method, path in [("POST", "/calls"), ("POST", "/campaigns"), ("GET", "/dnc")]:
        status, _ = call(method, path, {}, headers={"content-type": "application/json"})
        assert status == 401


# -- Twilio's webhooks for the call ----------------------------------------------------------


def answered(twilio, *, answered_by=None, dial=None, signature="sign"):
    params = {
        "CallSid": CALL_SID,
        "AccountSid": ACCOUNT_SID,
        "From": FROM,
        "To": TO,
        "CallStatus": "in-progress",
        "Direction": "outbound-api",
    }
    if answered_by:
        params["AnsweredBy"] = answered_by
    query = f"dial={dial or dial_id(twilio.created[-1])}"
    return twilio_post("/twilio/outbound/answer", params, query=query, signature=signature)


def stream_parameters(result) -> dict[str, str]:
    root = ElementTree.fromstring(response_body(result))
    stream = root.find("./Connect/Stream")
    assert stream is not None, response_body(result)
    return {p.get("name"): p.get("value") for p in stream.iter("Parameter")}


def test_the_answered_call_streams_to_the_edge_with_its_token_and_signed_options(aws, twilio):
    call(
        "POST",
        "/calls",
        {"to": TO, "from": FROM, "variables": {"name": "Ada"}, "firstMessage": "Hi {{name}}"},
    )
    result = answered(twilio, answered_by="human")
    assert result["statusCode"] == 200
    params = stream_parameters(result)
    grant = stream_token.verify(STREAM_SECRET, params["token"], CALL_SID, now=time.time())
    assert grant.assistant_id == "asst-default"
    options = call_overrides.decode(STREAM_SECRET, CALL_SID, params)
    assert options.customer_number == TO
    assert options.assistant_overrides["firstMessage"] == "Hi {{name}}"
    assert options.assistant_overrides["variableValues"] == {"name": "Ada", "answeredBy": "human"}
    assert (params["from"], params["to"]) == (FROM, TO)
    _, record = call("GET", f"/calls/{CALL_SID}")
    assert record["session"]["assistant_id"] == "asst-default"


def test_a_machine_is_hung_up_on_under_the_hangup_policy(aws, twilio):
    call("POST", "/calls", {"to": TO, "from": FROM, "machineDetection": "hangup"})
    result = answered(twilio, answered_by="machine_start")
    assert response_body(result).endswith(b"<Response><Hangup /></Response>")


def test_a_fax_is_hung_up_on_whatever_the_policy(aws, twilio):
    call("POST", "/calls", {"to": TO, "from": FROM, "machineDetection": "message"})
    result = answered(twilio, answered_by="fax")
    assert response_body(result).endswith(b"<Response><Hangup /></Response>")


def test_a_machine_gets_the_voicemail_message_under_the_message_policy(aws, twilio):
    body = {"to": TO, "from": FROM, "machineDetection": "message"}
    call("POST", "/calls", {**body, "voicemailMessage": "Please call us back."})
    params = stream_parameters(answered(twilio, answered_by="machine_end_beep"))
    overrides = call_overrides.decode(STREAM_SECRET, CALL_SID, params).assistant_overrides
    assert overrides["firstMessage"] == "Please call us back."
    assert 10 <= overrides["maxDurationSeconds"] <= 60


def test_answer_webhook_checks_the_signature_and_the_dial(aws, twilio):
    call("POST", "/calls", {"to": TO, "from": FROM})
    assert answered(twilio, signature="bm9wZQ==")["statusCode"] == 403
    unknown = answered(twilio, dial="call.000000000000")
    assert response_body(unknown).endswith(b"<Hangup /></Response>")
    assert answered(twilio, dial="bad dial!")["statusCode"] == 400


def test_status_callbacks_are_queued_with_their_dial_for_the_worker(aws, twilio):
    call("POST", "/calls", {"to": TO, "from": FROM})
    params = {
        "CallSid": CALL_SID,
        "AccountSid": ACCOUNT_SID,  # every Twilio request carries it; ours or 403
        "CallStatus": "busy",
        "SequenceNumber": "1",
    }
    query = f"dial={dial_id(twilio.created[-1])}"
    assert twilio_post("/twilio/outbound/status", params, query=query)["statusCode"] == 204
    assert (
        twilio_post("/twilio/outbound/status", params, signature=None, query=query)["statusCode"]
        == 403
    )
    (envelope,) = aws.queued()
    assert envelope["payload"]["_dial"] == dial_id(twilio.created[-1])
    assert envelope["key"] == f"twilio:{CALL_SID}:busy:1"  # the same key as /twilio/status


# -- campaigns ------------------------------------------------------------------------------


def campaign_body(**changes):
    body = {
        "from": FROM,
        "maxConcurrent": 4,
        "maxCallsPerSecond": 1,
        "window": {"start": "09:00", "end": "20:00", "timezone": "America/New_York"},
        "retries": {"max": 2, "backoffSeconds": 60},
        "contacts": [
            {"number": "+14155550100", "name": "Ada", "variables": {"slot": "9:30"}},
            {"number": "not a number"},
            {"number": "+14155550101", "timezone": "Europe/Paris"},
            {"number": "+14155550102", "timezone": "Nowhere/Land"},
        ],
    }
    body.update(changes)
    return body


def test_create_reports_bad_rows_and_keeps_the_rest(aws, twilio):
    status, body = call("POST", "/campaigns", campaign_body())
    assert status == 201, body
    assert body["contacts"] == 2
    assert [(r["row"], r["reason"][:20]) for r in body["rejected"]] == [
        (2, "not an E.164 number "),
        (4, "unknown time zone 'N"),
    ]
    status, view = call("GET", f"/campaigns/{body['campaignId']}")
    assert status == 200
    assert view["status"] == "draft"
    assert view["counts"]["total"] == 2
    assert [c["number"] for c in view["contacts"]] == ["+14155550100", "+14155550101"]
    assert view["contacts"][0] == {
        "number": "+14155550100",
        "name": "Ada",
        "state": "pending",
        "outcome": None,
        "attempts": 0,
        "callSids": [],
    }
    assert view["settings"]["window"] == {
        "start": "09:00:00",
        "end": "20:00:00",
        "timezone": "America/New_York",
    }
    assert len(view["rejected"]) == 2


def test_create_from_csv(aws, twilio):
    csv = "number,name,appointment\n+14155550100,Ada,Tue\n+14155550101,Bob\n"
    body = campaign_body(contacts=None, contactsCsv=csv)
    del body["contacts"]
    status, created = call("POST", "/campaigns", body)
    assert status == 201
    assert created["contacts"] == 1
    assert created["rejected"] == [
        {"row": 3, "number": "+14155550101", "reason": "expected 3 fields, got 2"}
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"contacts": [{"number": "x"}]}, "no valid contacts"),
        ({"contacts": None, "contactsCsv": "name\nAda\n"}, "no `number` column"),
        ({"assistantId": "asst-gone"}, "unknown assistant"),
    ],
)
def test_create_refuses_what_cannot_run(aws, twilio, vapi, changes, message):
    body = {k: v for k, v in campaign_body(**changes).items() if v is not None}
    status, result = call("POST", "/campaigns", body)
    assert status == 422
    assert message in result["error"]


def test_actions_follow_the_lifecycle_and_start_wakes_the_dialer(aws, twilio):
    _, created = call("POST", "/campaigns", campaign_body())
    campaign_id = created["campaignId"]
    path = f"/campaigns/{campaign_id}"
    assert call("POST", f"{path}/pause") == (
        409,
        {"error": "cannot pause a campaign that is draft"},
    )
    assert call("POST", f"{path}/start") == (200, {"campaignId": campaign_id, "status": "running"})
    url = aws.env["DIALER_QUEUE_URL"]
    (message,) = aws.sqs.receive_message(QueueUrl=url).get("Messages", [])
    assert json.loads(message["Body"]) == {"v": 1, "campaignId": campaign_id}
    assert call("POST", f"{path}/start")[0] == 409
    assert call("POST", f"{path}/pause")[1]["status"] == "paused"
    assert call("POST", f"{path}/resume")[1]["status"] == "running"
    assert call("POST", f"{path}/cancel")[1]["status"] == "cancelled"
    assert call("POST", f"{path}/resume")[0] == 409
    assert call("POST", f"{path}/explode")[0] == 404
    assert call("GET", "/campaigns/" + "0" * 32)[0] == 404


def test_contacts_are_paged_with_a_cursor(aws, twilio):
    contacts = [{"number": f"+1415555{i:04d}"} for i in range(7)]
    _, created = call("POST", "/campaigns", campaign_body(contacts=contacts))
    seen, cursor = [], None
    while True:
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        _, page = call("GET", f"/campaigns/{created['campaignId']}", query=query)
        seen += [c["number"] for c in page["contacts"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [c["number"] for c in contacts]


def test_do_not_call_list_routes(aws, twilio):
    assert call("POST", "/dnc", {"numbers": [TO, TO, FROM], "reason": "asked"}) == (
        200,
        {"added": 2},
    )
    assert call("POST", "/dnc", {"numbers": ["555"]})[0] == 422
    _, listed = call("GET", "/dnc")
    assert [e["number"] for e in listed["numbers"]] == sorted([TO, FROM])
    assert listed["numbers"][0]["reason"] == "asked"
    assert call("DELETE", f"/dnc/{TO}") == (200, {"removed": TO})
    assert call("DELETE", f"/dnc/{TO}")[0] == 404


def test_the_worker_concludes_a_campaign_dial_and_wakes_the_dialer(aws, twilio):
    """Twilio's final callback -> /twilio/outbound/status -> SQS -> the real worker handler."""
    from functions import worker
    from tests.functions.outbound.fakes import rig

    r = rig(aws)
    _, created = call("POST", "/campaigns", campaign_body())
    campaign_id = created["campaignId"]
    call("POST", f"/campaigns/{campaign_id}/start")
    aws.sqs.purge_queue(QueueUrl=aws.env["DIALER_QUEUE_URL"])
    r.clock.now = 1_800_000_000.0  # a Tuesday, 2027-01-15 08:00 UTC: open in Paris only
    r.pump.run(campaign_id, 30)
    (form,) = r.twilio.created
    assert form["To"] == ["+14155550101"]  # Paris is open; New York is not yet
    sid = next(iter(r.twilio.calls))
    params = {
        "CallSid": sid,
        "AccountSid": ACCOUNT_SID,
        "CallStatus": "no-answer",
        "SequenceNumber": "3",
    }
    query = f"dial={dial_id(form)}"
    assert twilio_post("/twilio/outbound/status", params, query=query)["statusCode"] == 204
    (envelope,) = aws.queued()
    event = {
        "Records": [
            {
                "messageId": "m1",
                "receiptHandle": "r1",
                "body": json.dumps(envelope),
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1",
            }
        ]
    }
    assert worker.handler(event, FakeContext()) == {"batchItemFailures": []}
    _, view = call("GET", f"/campaigns/{campaign_id}")
    paris = view["contacts"][1]
    assert (paris["state"], paris["outcome"], paris["attempts"]) == ("pending", "no-answer", 1)
    assert view["counts"]["retriesScheduled"] == 1
    url = aws.env["DIALER_QUEUE_URL"]
    (message,) = aws.sqs.receive_message(QueueUrl=url).get("Messages", [])
    assert json.loads(message["Body"])["campaignId"] == campaign_id
    _, record = call("GET", f"/calls/{sid}")
    assert record["outcome"] == "no-answer"


def test_routes_answer_503_when_outbound_is_not_configured(aws, twilio, monkeypatch):
    monkeypatch.delenv("OUTBOUND_TABLE")
    status, body = call("POST", "/calls", {"to": TO, "from": FROM})
    assert status == 503
    assert "OUTBOUND_TABLE" in body["error"]
    assert routes.ACTIONS["start"][1] == "running"
