import asyncio
import json
import time
from urllib.parse import parse_qs

import httpx
import pytest

from functions import clients, vapi_auth
from functions.storage import Store
from functions.tools import REGISTRY, ToolError, tool
from tests.functions.conftest import (
    ACCOUNT_SID,
    CALL_SID,
    DOMAIN,
    WEBHOOK_SECRET,
    FakeContext,
    apigw_event,
    invoke,
    response_body,
    vapi_post,
)


def _json(result):
    return json.loads(response_body(result))


def _call(**extra):
    return {"id": "vapi-call-1", "phoneCallProviderId": CALL_SID, **extra}


@pytest.fixture
def twilio_api(monkeypatch):
    """A fake Twilio REST API behind every outbound client the tools create."""
    seen: list[httpx.Request] = []
    answers: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0) if answers else httpx.Response(200, json={"sid": CALL_SID})

    monkeypatch.setattr(
        clients,
        "new_http_client",
        lambda: httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    return seen, answers


# Authentication -----------------------------------------------------------------------------


def _signed(body: bytes, stamp) -> dict[str, str]:
    return vapi_auth.sign(WEBHOOK_SECRET, body, stamp)


def _raw_post(body: bytes, headers: dict[str, str]):
    return invoke(apigw_event("POST", "/vapi/webhook", body, headers))


BODY = json.dumps({"message": {"type": "assistant-request", "call": _call()}}).encode()


def _now_s() -> int:
    return int(time.time())


def _prefixed(body: bytes) -> dict[str, str]:
    headers = _signed(body, _now_s())
    return {**headers, "x-signature": "sha256=" + headers["x-signature"]}


GOOD_AUTH = {
    "secret": lambda: {"x-vapi-secret": WEBHOOK_SECRET},
    "bearer": lambda: {"authorization": f"Bearer {WEBHOOK_SECRET}"},
    "hmac-s": lambda: _signed(BODY, _now_s()),
    "hmac-ms": lambda: _signed(BODY, int(time.time() * 1000)),
    "hmac-prefixed": lambda: _prefixed(BODY),
    "hmac-edge-of-window": lambda: _signed(BODY, _now_s() - 290),
}

BAD_AUTH = {
    "missing": lambda: {},
    "wrong-secret": lambda: {"x-vapi-secret": "wrong"},
    "wrong-bearer": lambda: {"authorization": "Bearer wrong"},
    "no-scheme": lambda: {"authorization": WEBHOOK_SECRET},
    "stale": lambda: _signed(BODY, _now_s() - 301),
    "future": lambda: _signed(BODY, _now_s() + 301),
    "stale-ms": lambda: _signed(BODY, int(time.time() * 1000) - 301_000),
    "other-body": lambda: _signed(BODY + b" ", _now_s()),
    "no-timestamp": lambda: {"x-signature": _signed(BODY, _now_s())["x-signature"]},
    "bad-timestamp": lambda: {**_signed(BODY, _now_s()), "x-timestamp": "soon"},
    "wrong-key": lambda: vapi_auth.sign("another-secret", BODY, _now_s()),
}


@pytest.mark.parametrize("method", GOOD_AUTH)
def test_each_auth_method_is_accepted(aws, method):
    result = _raw_post(BODY, GOOD_AUTH[method]())
    assert result["statusCode"] == 200
    assert _json(result) == {"assistantId": "asst-default"}


@pytest.mark.parametrize("case", BAD_AUTH)
def test_auth_failures_are_401_and_counted(aws, capfd, case):
    result = _raw_post(BODY, BAD_AUTH[case]())
    assert result["statusCode"] == 401
    assert "AuthFailures" in capfd.readouterr().out
    assert aws.queued() == []


CONFIGURED_AUTH = {
    # VAPI_WEBHOOK_AUTH -> (a request Vapi would send, one it would not)
    "hmac-sha512-base64-own-headers": (
        '{"type": "hmac", "algorithm": "sha512", "signatureEncoding": "base64",'
        ' "signatureHeader": "x-vapi-signature", "timestampHeader": "x-vapi-timestamp"}',
        lambda plan: vapi_auth.sign(WEBHOOK_SECRET, BODY, _now_s(), plan),
        lambda plan: _signed(BODY, _now_s()),  # the default HMAC no longer counts
    ),
    "hmac-url-and-method": (
        '{"type": "hmac", "algorithm": "sha256", "payloadFormat": "{method}|{url}|{body}"}',
        lambda plan: vapi_auth.sign(
            WEBHOOK_SECRET, BODY, 0, plan, url=f"https://{DOMAIN}/vapi/webhook"
        ),
        lambda plan: vapi_auth.sign(WEBHOOK_SECRET, BODY, 0, plan, url="https://evil/vapi/webhook"),
    ),
    "bearer-own-header-no-prefix": (
        '{"type": "bearer", "headerName": "x-api-key", "bearerPrefixEnabled": false}',
        lambda plan: {"x-api-key": WEBHOOK_SECRET},
        lambda plan: {"authorization": f"Bearer {WEBHOOK_SECRET}"},
    ),
    "legacy-only": (
        "x-vapi-secret",
        lambda plan: {"x-vapi-secret": WEBHOOK_SECRET},
        lambda plan: _signed(BODY, _now_s()),
    ),
}


@pytest.mark.parametrize("name", CONFIGURED_AUTH)
def test_configured_credential_plan_through_the_api(aws, monkeypatch, name):
    from voicebridge.vapi_credentials import parse_plans

    value, valid, forged = CONFIGURED_AUTH[name]
    monkeypatch.setenv("VAPI_WEBHOOK_AUTH", value)
    (plan,) = parse_plans(value)
    assert _raw_post(BODY, valid(plan))["statusCode"] == 200
    assert _raw_post(BODY, forged(plan))["statusCode"] == 401


def test_tampered_body_with_a_valid_signature_is_401(aws):
    headers = _signed(BODY, int(time.time()))
    tampered = BODY.replace(b"assistant-request", b"status-update")
    assert _raw_post(tampered, headers)["statusCode"] == 401


# Malformed input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested 100000 levels deep"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "message"),
        (b'{"message": {}}', "message"),
        (b'{"message": {"type": 7}}', "message"),
        (b'{"message": "tool-calls"}', "message"),
    ],
)
def test_malformed_json_or_missing_type_is_400(aws, body, reason):
    result = _raw_post(body, {"x-vapi-secret": WEBHOOK_SECRET})
    assert result["statusCode"] == 400
    assert reason in _json(result)["error"]


def test_body_over_one_mib_is_413_by_header(aws):
    body = b'{"message":{"type":"transcript","x":"' + b"a" * (1024 * 1024) + b'"}}'
    assert _raw_post(body, {"x-vapi-secret": WEBHOOK_SECRET})["statusCode"] == 413


def test_body_over_one_mib_is_413_by_actual_size(aws):
    body = b'{"message":{"type":"transcript","x":"' + b"a" * (1024 * 1024) + b'"}}'
    event = apigw_event("POST", "/vapi/webhook", body, {"x-vapi-secret": WEBHOOK_SECRET})
    event["headers"]["content-length"] = "100"  # a lying header must not let it through
    assert invoke(event)["statusCode"] == 413
    assert aws.queued() == []


# assistant-request --------------------------------------------------------------------------


def test_assistant_request_uses_number_binding(aws):
    Store(aws.env["SESSIONS_TABLE"]).put_assistant({"id": "asst-sales"}, ["+18005550199"], 0)
    message = {"type": "assistant-request", "phoneNumber": {"number": "+18005550199"}}
    assert _json(vapi_post(message)) == {"assistantId": "asst-sales"}
    overrides = {"metadata": {"to": "+18005550199"}}
    edge = {"type": "assistant-request", "call": _call(assistantOverrides=overrides)}
    assert _json(vapi_post(edge)) == {"assistantId": "asst-sales"}


def test_assistant_request_binding_is_cached_in_process(aws, monkeypatch):
    table = aws.env["SESSIONS_TABLE"]
    Store(table).put_assistant({"id": "asst-sales"}, ["+18005550199"], 0)
    message = {"type": "assistant-request", "phoneNumber": {"number": "+18005550199"}}
    assert _json(vapi_post(message)) == {"assistantId": "asst-sales"}
    aws.dynamodb.delete_table(TableName=table)  # a second read would now fail
    assert _json(vapi_post(message)) == {"assistantId": "asst-sales"}


def test_assistant_request_without_any_assistant_speaks_an_error(aws, monkeypatch):
    monkeypatch.delenv("VAPI_ASSISTANT_ID")
    result = vapi_post({"type": "assistant-request", "phoneNumber": {"number": "+18005550100"}})
    assert result["statusCode"] == 200
    assert "not set up" in _json(result)["error"]


# tool-calls ---------------------------------------------------------------------------------


def _tool_calls(*calls, shape="current"):
    if shape == "with-list":
        return {
            "type": "tool-calls",
            "call": _call(),
            "toolWithToolCallList": [
                {
                    "name": c[1],
                    "toolCall": {"id": c[0], "function": {"name": c[1], "arguments": c[2]}},
                }
                for c in calls
            ],
        }
    items = []
    for call_id, name, arguments in calls:
        if shape == "flat":
            items.append({"id": call_id, "name": name, "parameters": arguments})
        else:
            items.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
    return {"type": "tool-calls", "call": _call(), "toolCallList": items}


@pytest.mark.parametrize("shape", ["current", "flat", "with-list"])
def test_tool_results_in_order_with_same_ids(aws, shape):
    message = _tool_calls(
        ("t1", "order_status", {"order_id": "1001"}),
        ("t2", "no_such_tool", {}),
        ("t3", "order_status", json.dumps({"order_id": "1003"})),
        ("t4", "order_status", {"order_id": "abc"}),
        shape=shape,
    )
    result = vapi_post(message)
    assert result["statusCode"] == 200
    results = _json(result)["results"]
    assert [r["toolCallId"] for r in results] == ["t1", "t2", "t3", "t4"]
    assert results[0]["result"] == "Order 1001 is shipped on Monday."
    assert "unknown tool" in results[1]["error"]
    assert results[2]["result"] == "Order 1003 is delivered."
    assert results[3]["error"] == "I need the order number, digits only."
    assert all("\n" not in (r.get("result") or r.get("error")) for r in results)


@pytest.fixture
def scratch_tools():
    added: list[str] = []

    def register(name, func):
        tool(name, "test tool", {"type": "object"})(func)
        added.append(name)

    yield register
    for name in added:
        REGISTRY.pop(name, None)


def test_tool_exception_and_timeout_become_errors(aws, monkeypatch, capfd, scratch_tools):
    monkeypatch.setenv("TOOL_TIMEOUT_SECONDS", "1")

    async def slow(ctx, args):
        await asyncio.sleep(30)
        return "never"

    async def broken(ctx, args):
        raise KeyError("secret internals")

    async def polite(ctx, args):
        raise ToolError("The shop is closed.\nTry tomorrow.")

    async def structured(ctx, args):
        return {"open": True, "hours": "9-17"}

    for name, func in [
        ("slow", slow),
        ("broken", broken),
        ("polite", polite),
        ("data", structured),
    ]:
        scratch_tools(name, func)
    message = _tool_calls(
        ("a", "slow", {}),
        ("b", "broken", {}),
        ("c", "polite", {}),
        ("d", "data", "{}"),
        ("e", "data", "not json"),
    )
    results = _json(vapi_post(message))["results"]
    assert results[0] == {
        "toolCallId": "a",
        "name": "slow",
        "error": "tool slow timed out after 1 s",
    }
    assert results[1]["error"] == "tool broken failed (KeyError)"
    assert "secret internals" not in json.dumps(results)
    assert results[2]["error"] == "The shop is closed. Try tomorrow."
    assert json.loads(results[3]["result"]) == {"open": True, "hours": "9-17"}
    assert results[4]["error"] == "arguments are not valid JSON"
    out = capfd.readouterr().out
    assert "ToolLatency" in out
    assert "ToolErrors" in out


def test_legacy_function_call(aws):
    message = {
        "type": "function-call",
        "call": _call(),
        "functionCall": {"name": "order_status", "parameters": {"order_id": "1002"}},
    }
    assert _json(vapi_post(message)) == {"result": "Order 1002 is being packed."}
    message["functionCall"] = {"name": "nope", "parameters": {}}
    assert "unknown tool" in _json(vapi_post(message))["error"]


def test_transfer_call_dials_an_allow_listed_number(aws, twilio_api):
    seen, _ = twilio_api
    message = _tool_calls(("t1", "transfer_call", {"destination": "Sales"}))
    (result,) = _json(vapi_post(message))["results"]
    assert result == {
        "toolCallId": "t1",
        "name": "transfer_call",
        "result": "Transferring the call to sales.",
    }
    (request,) = seen
    assert (
        str(request.url)
        == f"https://twilio.test/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json"
    )
    twiml = parse_qs(request.content.decode())["Twiml"][0]
    assert "<Dial>+14155550100</Dial>" in twiml


EDGE_SID = "CA" + "9" * 32


@pytest.mark.parametrize(
    "where",
    [
        {"call": {"id": "ws", "assistantOverrides": {"metadata": {"callSid": EDGE_SID}}}},
        {"call": {"id": "ws", "assistantOverrides": {"variableValues": {"callSid": EDGE_SID}}}},
        {"call": {"id": "ws"}, "assistant": {"metadata": {"callSid": EDGE_SID}}},
        {"call": {"id": "ws", "metadata": {"callSid": EDGE_SID}}},
    ],
    ids=["overrides-metadata", "variable-values", "assistant-metadata", "call-metadata"],
)
def test_transfer_finds_the_call_sid_our_edge_attached(aws, twilio_api, where):
    seen, _ = twilio_api
    message = _tool_calls(("t1", "transfer_call", {"destination": "+14155550111"})) | where
    (result,) = _json(vapi_post(message))["results"]
    assert "result" in result
    assert f"/Calls/{EDGE_SID}.json" in str(seen[0].url)


@pytest.mark.parametrize("sid", ["../../x", "CA" + "1" * 40, "CA" + "z" * 32, CALL_SID + "\n"])
def test_a_call_sid_that_is_not_one_is_ignored(aws, twilio_api, sid):
    seen, _ = twilio_api
    message = _tool_calls(("t1", "end_call", {}))
    message["call"] = {"id": "ws", "assistantOverrides": {"metadata": {"callSid": sid}}}
    (result,) = _json(vapi_post(message))["results"]
    assert "no Twilio CallSid" in result["error"]
    assert seen == []


def test_edge_call_report_is_queued_under_the_call_sid(aws):
    message = {
        "type": "end-of-call-report",
        "call": {"id": "ws", "assistantOverrides": {"metadata": {"callSid": EDGE_SID, "to": "+1"}}},
        "assistant": {"metadata": {"callSid": EDGE_SID}, "model": {"messages": ["big"] * 100}},
        "artifact": {"transcript": "AI: Hello"},
    }
    assert vapi_post(message)["statusCode"] == 200
    (envelope,) = aws.queued()
    assert envelope["callSid"] == EDGE_SID
    assert "assistant" not in envelope["payload"]
    assert envelope["payload"]["call"]["metadata"]["callSid"] == EDGE_SID


def test_transfer_outside_the_allow_list_is_refused_without_a_request(aws, twilio_api):
    seen, _ = twilio_api
    message = _tool_calls(("t1", "transfer_call", {"destination": "+19005550000"}))
    (result,) = _json(vapi_post(message))["results"]
    assert "cannot transfer" in result["error"]
    assert "sales" in result["error"]
    assert seen == []


def test_end_call_completes_the_call_and_20404_counts_as_done(aws, twilio_api):
    seen, answers = twilio_api
    answers.append(httpx.Response(404, json={"code": 20404, "message": "not found"}))
    (result,) = _json(vapi_post(_tool_calls(("t1", "end_call", {}))))["results"]
    assert result["result"] == "The call has ended."
    assert parse_qs(seen[0].content.decode()) == {"Status": ["completed"]}


@pytest.mark.parametrize(
    ("tool_call", "said"),
    [
        (("t1", "end_call", {}), "The call has ended."),
        (("t1", "transfer_call", {"destination": "sales"}), "The call had already ended."),
    ],
)
def test_a_call_no_longer_in_progress_is_done_not_an_error(
    aws, twilio_api, capfd, log_lines, tool_call, said
):
    _, answers = twilio_api
    # Twilio's answer for a known call that is over (https://www.twilio.com/docs/api/errors/21220)
    answers.append(httpx.Response(400, json={"code": 21220, "message": "Call is not in-progress"}))
    (result,) = _json(vapi_post(_tool_calls(tool_call)))["results"]
    assert result == {"toolCallId": "t1", "name": tool_call[1], "result": said}
    assert "ToolErrors" not in capfd.readouterr().out
    assert [line for line in log_lines() if line["level"] in ("WARNING", "ERROR")] == []


def test_end_call_twilio_refusal_is_an_error_result(aws, twilio_api):
    _, answers = twilio_api
    answers.append(httpx.Response(401, json={"code": 20003, "message": "Authenticate"}))
    result = vapi_post(_tool_calls(("t1", "end_call", {})))
    assert result["statusCode"] == 200
    assert "refused" in _json(result)["results"][0]["error"]


def test_end_call_without_call_sid_is_an_error(aws, twilio_api):
    message = _tool_calls(("t1", "end_call", {}))
    message["call"] = {"id": "web-call"}
    (result,) = _json(vapi_post(message))["results"]
    assert "no Twilio CallSid" in result["error"]


# transfer-destination-request ---------------------------------------------------------------


def test_transfer_destination_from_allow_list(aws):
    message = {"type": "transfer-destination-request", "call": _call()}
    assert _json(vapi_post(message)) == {
        "destination": {"type": "number", "number": "+14155550100"}
    }
    message["destination"] = {"type": "number", "number": "+14155550111"}
    assert _json(vapi_post(message))["destination"]["number"] == "+14155550111"
    message["destination"] = {"type": "number", "number": "+19005550000"}
    assert "error" in _json(vapi_post(message))


def test_transfer_destination_without_allow_list(aws, monkeypatch):
    monkeypatch.setenv("TRANSFER_ALLOWLIST", "")
    result = vapi_post({"type": "transfer-destination-request", "call": _call()})
    assert result["statusCode"] == 200
    assert "error" in _json(result)


# Informational messages go to the queue -----------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"type": "status-update", "status": "in-progress", "timestamp": 1795290000000},
        {
            "type": "end-of-call-report",
            "endedReason": "customer-ended-call",
            "artifact": {},
            "analysis": {},
        },
        {"type": "conversation-update", "messages": [{"role": "user", "message": "hi"}] * 50},
        {"type": "transcript", "role": "user", "transcriptType": "final", "transcript": "hello"},
        {"type": "hang"},
        {"type": "speech-update", "status": "started", "role": "user"},
        {"type": "user-interrupted"},
        {"type": "model-output", "output": "Hi"},
        {"type": "some-future-type", "anything": {"goes": True}},
    ],
    ids=lambda m: m["type"],
)
def test_informational_messages_are_queued(aws, message):
    message = {**message, "call": _call()}
    result = vapi_post(message)
    assert result["statusCode"] == 200
    (envelope,) = aws.queued()
    assert envelope["source"] == "vapi"
    assert envelope["type"] == message["type"]
    assert envelope["callSid"] == CALL_SID
    assert "messages" not in envelope["payload"]  # history is never needed downstream


def test_huge_report_is_compacted_to_fit_sqs(aws):
    message = {
        "type": "end-of-call-report",
        "call": _call(),
        "endedReason": "customer-ended-call",
        "artifact": {"transcript": "word " * 180_000, "messages": [{"m": "x" * 1000}] * 100},
        "analysis": {"summary": "short"},
    }
    assert vapi_post(message)["statusCode"] == 200
    (envelope,) = aws.queued()
    payload = envelope["payload"]
    assert payload["truncated"] is True
    assert payload["analysis"]["summary"] == "short"
    assert 0 < len(payload["artifact"]["transcript"]) < 240_000


@pytest.mark.parametrize(
    "message",
    [
        {"type": "assistant-request", "call": "not-an-object", "phoneNumber": ["x"]},
        {"type": "assistant-request", "call": {"metadata": "x", "phoneNumber": 5}},
        {"type": "tool-calls", "toolCallList": {"not": "a list"}},
        {"type": "tool-calls", "toolWithToolCallList": 7, "call": []},
        {"type": "tool-calls", "toolCallList": [None, 3, {"function": "x"}]},
        {"type": "function-call", "functionCall": "order_status"},
        {"type": "transfer-destination-request", "destination": "sales"},
        {"type": "status-update", "call": "x", "timestamp": "yesterday"},
        {"type": "end-of-call-report", "artifact": [], "analysis": "none", "call": {"id": 5}},
    ],
)
def test_odd_shapes_never_cause_a_server_error(aws, message):
    result = vapi_post(message)
    assert result["statusCode"] == 200


def test_odd_shapes_are_processed_by_the_worker_without_errors(aws):
    from functions import worker

    for message in (
        {"type": "status-update", "call": {"id": "v9"}, "timestamp": "yesterday", "status": 3},
        {"type": "end-of-call-report", "artifact": [], "analysis": "x", "call": {"id": "v9"}},
    ):
        assert vapi_post(message)["statusCode"] == 200
    (first, second) = aws.queued()
    records = [
        {"messageId": f"m{i}", "receiptHandle": "r", "body": json.dumps(body), "attributes": {}}
        for i, body in enumerate((first, second))
    ]
    assert worker.handler({"Records": records}, FakeContext()) == {"batchItemFailures": []}
    assert Store(aws.env["SESSIONS_TABLE"]).get_call("v9", time.time())["timeline"]


async def test_concurrent_calls_keep_their_own_call_sid_on_log_lines(aws, scratch_tools, log_lines):
    """Under uvicorn requests interleave in one process: each line must name its own call."""
    from functions.api import app

    async def slow_fail(ctx, args):
        await asyncio.sleep(0.05)
        raise ToolError(f"failed for {args['who']}")

    scratch_tools("slow_fail", slow_fail)
    sids = ["CA" + str(n) * 32 for n in (3, 4, 5)]

    async def post(client, sid):
        message = _tool_calls(("t", "slow_fail", {"who": sid}))
        message["call"] = {"id": sid, "phoneCallProviderId": sid}
        body = {"message": message}
        headers = {"x-vapi-secret": WEBHOOK_SECRET}
        return await client.post("/vapi/webhook", json=body, headers=headers)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answers = await asyncio.gather(*(post(client, sid) for sid in sids))
    assert [a.status_code for a in answers] == [200, 200, 200]
    failures = [line for line in log_lines() if line["message"] == "tool failed"]
    assert len(failures) == 3
    assert all(line["error"] == f"failed for {line['callSid']}" for line in failures)


# phone-call-control (#/components/schemas/ServerMessagePhoneCallControl) ----------------------


def _control(request, destination=None, call=None):
    message = {"type": "phone-call-control", "request": request, "call": call or _call()}
    if destination is not None:
        message["destination"] = destination
    return message


def _warnings(log_lines):
    return [line for line in log_lines() if line["level"] == "WARNING"]


def test_phone_call_control_hang_up_completes_the_call_and_is_recorded(aws, twilio_api, log_lines):
    seen, _ = twilio_api
    result = vapi_post(_control("hang-up"))
    assert result["statusCode"] == 200
    (request,) = seen
    assert f"/Calls/{CALL_SID}.json" in str(request.url)
    assert parse_qs(request.content.decode()) == {"Status": ["completed"]}
    (envelope,) = aws.queued()
    assert envelope["type"] == "phone-call-control"
    assert envelope["payload"]["request"] == "hang-up"
    assert _warnings(log_lines) == []


@pytest.mark.parametrize(
    ("destination", "dial"),
    [
        ({"type": "number", "number": "+14155550100"}, "<Number>+14155550100</Number>"),
        (
            {"type": "number", "number": "+14155550111", "extension": "42"},
            '<Number sendDigits="ww42">+14155550111</Number>',
        ),
    ],
)
def test_phone_call_control_forward_dials_an_allow_listed_number(
    aws, twilio_api, destination, dial
):
    seen, _ = twilio_api
    assert vapi_post(_control("forward", destination))["statusCode"] == 200
    (request,) = seen
    twiml = parse_qs(request.content.decode())["Twiml"][0]
    assert f"<Dial>{dial}</Dial>" in twiml


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (_control("forward", {"type": "number", "number": "+19005550000"}), "TRANSFER_ALLOWLIST"),
        (_control("forward", {"type": "sip", "sipUri": "sip:x@evil.example"}), "'sip'"),
        (_control("forward"), "allow-listed number"),
        (
            _control("forward", {"type": "number", "number": "+14155550100", "extension": "1;2"}),
            "extension",
        ),
        (_control("transfer"), "unknown request"),
        (_control("hang-up", call={"id": "web-call"}), "no Twilio CallSid"),
    ],
    ids=["not-allow-listed", "sip", "no-destination", "bad-extension", "unknown", "no-call-sid"],
)
def test_phone_call_control_refusals_are_logged_and_touch_nothing(
    aws, twilio_api, capfd, log_lines, message, reason
):
    seen, _ = twilio_api
    assert vapi_post(message)["statusCode"] == 200  # informational: Vapi ignores the answer
    assert seen == []
    (warning,) = _warnings(log_lines)
    assert warning["message"] == "phone-call-control not carried out"
    assert reason in warning["detail"]
    assert "ToolErrors" in capfd.readouterr().out
    assert [e["type"] for e in aws.queued()] == ["phone-call-control"]


def test_phone_call_control_on_a_call_already_over_is_not_a_failure(aws, twilio_api, log_lines):
    _, answers = twilio_api
    answers.append(httpx.Response(400, json={"code": 21220, "message": "not in-progress"}))
    assert vapi_post(_control("hang-up"))["statusCode"] == 200
    assert _warnings(log_lines) == []
    (info,) = [line for line in log_lines() if line["message"] == "phone-call-control carried out"]
    assert info["detail"] == "the call had already ended"


def test_phone_call_control_twilio_refusal_is_logged(aws, twilio_api, log_lines):
    _, answers = twilio_api
    answers.append(httpx.Response(401, json={"code": 20003, "message": "Authenticate"}))
    assert vapi_post(_control("hang-up"))["statusCode"] == 200
    (warning,) = _warnings(log_lines)
    assert "20003" in warning["detail"]


def test_a_replayed_phone_call_control_is_carried_out_once(aws, twilio_api):
    """A transfer or hang-up replayed byte for byte (within the auth window, on another
    instance) must not reach Twilio a second time."""
    from functions import replay

    seen, _ = twilio_api
    message = _control("forward", {"type": "number", "number": "+14155550100"})
    assert vapi_post(message)["statusCode"] == 200
    replay._nonces = replay._Memory()  # another Lambda instance: only DynamoDB remembers
    replay._tool_calls = replay._Memory()
    assert vapi_post(message)["statusCode"] == 200
    assert len(seen) == 1
    assert [e["type"] for e in aws.queued()] == ["phone-call-control"]
