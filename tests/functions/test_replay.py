"""Replayed Vapi webhooks: a tool runs once per toolCallId, an event is queued once."""

import json
import time

import pytest

from functions import replay, vapi_auth
from functions.storage import Store
from functions.tools import REGISTRY, tool
from tests.functions.conftest import (
    CALL_SID,
    WEBHOOK_SECRET,
    apigw_event,
    invoke,
    response_body,
)


@pytest.fixture
def counted_tool():
    """A tool with a side effect we can count (think: end the call, transfer it)."""
    runs: list[dict] = []

    async def hang_up(ctx, args):
        runs.append(args)
        return f"done {len(runs)}"

    tool("hang_up_test", "test tool", {"type": "object"})(hang_up)
    yield runs
    REGISTRY.pop("hang_up_test", None)


def _signed_post(message: dict, stamp: int | None = None) -> dict:
    """What Vapi sends with an HMAC credential; the same bytes replayed give the same request."""
    body = json.dumps({"message": message}).encode()
    headers = vapi_auth.sign(WEBHOOK_SECRET, body, stamp if stamp is not None else int(time.time()))
    headers["content-type"] = "application/json"
    return invoke(apigw_event("POST", "/vapi/webhook", body, headers))


def _tool_message(*ids: str) -> dict:
    return {
        "type": "tool-calls",
        "call": {"id": "vapi-call-7", "phoneCallProviderId": CALL_SID},
        "toolCallList": [
            {"id": i, "type": "function", "function": {"name": "hang_up_test", "arguments": {}}}
            for i in ids
        ],
    }


def _results(result: dict) -> list[dict]:
    assert result["statusCode"] == 200
    return json.loads(response_body(result))["results"]


def _forget_process_memory() -> None:
    """Another Lambda instance: only DynamoDB remembers."""
    replay._nonces = replay._Memory()
    replay._tool_calls = replay._Memory()


def test_a_replayed_tool_call_runs_once(aws, counted_tool, capfd):
    stamp = int(time.time())
    first = _results(_signed_post(_tool_message("call_a"), stamp))
    _forget_process_memory()
    replayed = _results(_signed_post(_tool_message("call_a"), stamp))  # byte for byte
    assert len(counted_tool) == 1
    assert (
        replayed == first == [{"toolCallId": "call_a", "name": "hang_up_test", "result": "done 1"}]
    )
    assert "WebhookReplays" in capfd.readouterr().out


def test_a_retry_signed_again_gets_the_first_answer(aws, counted_tool):
    first = _results(_signed_post(_tool_message("call_b"), int(time.time()) - 5))
    retried = _results(_signed_post(_tool_message("call_b")))  # new timestamp, same toolCallId
    assert retried == first
    assert len(counted_tool) == 1


def test_only_the_new_tool_calls_of_a_message_run(aws, counted_tool):
    _results(_signed_post(_tool_message("call_c")))
    answers = _results(_signed_post(_tool_message("call_c", "call_d")))
    assert len(counted_tool) == 2
    assert [a["toolCallId"] for a in answers] == ["call_c", "call_d"]
    assert [a["result"] for a in answers] == ["done 1", "done 2"]


def test_a_tool_call_still_running_is_not_run_twice(aws, counted_tool):
    Store(aws.env["SESSIONS_TABLE"]).claim_tool_call("vapi-call-7", "call_e", time.time(), 600)
    (answer,) = _results(_signed_post(_tool_message("call_e")))
    assert answer["error"] == replay.RUNNING
    assert counted_tool == []


def test_a_legacy_function_call_replay_runs_once(aws, counted_tool):
    message = {
        "type": "function-call",
        "call": {"id": "vapi-call-8"},
        "functionCall": {"name": "hang_up_test", "parameters": {}},
    }
    stamp = int(time.time())
    first = json.loads(response_body(_signed_post(message, stamp)))
    _forget_process_memory()
    again = json.loads(response_body(_signed_post(message, stamp)))
    assert first == again == {"result": "done 1"}
    assert len(counted_tool) == 1


def test_with_dynamodb_down_tools_run_and_this_process_still_catches_replays(
    aws, counted_tool, monkeypatch
):
    def down(*args, **kwargs):
        raise ConnectionError("DynamoDB unreachable")

    monkeypatch.setattr(Store, "claim_tool_call", down)
    monkeypatch.setattr(Store, "finish_tool_call", down)
    stamp = int(time.time())
    first = _results(_signed_post(_tool_message("call_f"), stamp))
    assert first[0]["result"] == "done 1"  # fail open: the call goes on
    assert _results(_signed_post(_tool_message("call_f"), stamp)) == first
    assert len(counted_tool) == 1


def test_a_replayed_event_is_queued_once(aws, capfd):
    message = {"type": "end-of-call-report", "call": {"id": "v9"}, "endedReason": "hangup"}
    stamp = int(time.time())
    assert _signed_post(message, stamp)["statusCode"] == 200
    _forget_process_memory()
    replayed = _signed_post(message, stamp)
    assert replayed["statusCode"] == 200  # answered as the first one was
    assert len(aws.queued()) == 1
    assert "WebhookReplays" in capfd.readouterr().out


def test_with_the_nonce_store_down_events_are_still_accepted(aws, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("DynamoDB unreachable")

    monkeypatch.setattr(Store, "claim_nonce", down)
    message = {"type": "hang", "call": {"id": "v10"}, "timestamp": 1}
    assert _signed_post(message)["statusCode"] == 200
    assert len(aws.queued()) == 1


def test_an_event_not_accepted_is_not_taken_for_a_replay_when_retried(aws, monkeypatch):
    from functions import outbox
    from functions.events import EventQueue

    def refused(self, body):
        raise ConnectionError("SQS unreachable")

    def full(self, body):
        raise outbox.NotAccepted("spool full")

    message = {"type": "end-of-call-report", "call": {"id": "v11"}, "endedReason": "hangup"}
    stamp = int(time.time())
    with monkeypatch.context() as broken:
        broken.setattr(EventQueue, "send", refused)
        broken.setattr(outbox.Spool, "put", full)
        assert _signed_post(message, stamp)["statusCode"] == 503
    _forget_process_memory()
    assert _signed_post(message, stamp)["statusCode"] == 200  # Vapi's retry (backoffPlan)
    assert len(aws.queued()) == 1
