"""The console's WebSocket API handler (functions.console.gateway) with API Gateway's events and
moto's DynamoDB: the ticket authorizer, connect/disconnect, subscribe with replay, routing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from functions.console import gateway
from functions.console.live import LiveStore, Sockets, history_messages
from voicebridge import live

CALL = "CA" + "5" * 32
ARN = "arn:aws:execute-api:us-east-1:123456789012:abc123/live/$connect"


@pytest.fixture
def store(aws) -> LiveStore:
    return LiveStore(aws.env["CONSOLE_CONNECTIONS_TABLE"], aws.env["CONSOLE_EVENTS_TABLE"], None)


@pytest.fixture
def sent(monkeypatch) -> dict[str, list[Any]]:
    """What the handler sent through the management API, per connection (and closes)."""
    seen: dict[str, list[Any]] = {"closed": []}
    gone: set[str] = set()

    def send(self: Sockets, connection_id: str, text: str) -> bool:
        assert self.endpoint_url == "https://abc123.execute-api.us-east-1.amazonaws.com/live"
        if connection_id in gone:
            return False
        seen.setdefault(connection_id, []).append(json.loads(text))
        return True

    monkeypatch.setattr(Sockets, "send", send)
    monkeypatch.setattr(Sockets, "close", lambda self, cid: seen["closed"].append(cid))
    seen["gone"] = gone  # type: ignore[assignment]
    return seen


def _context(route: str, connection: str, **extra: Any) -> dict[str, Any]:
    return {
        "routeKey": route,
        "eventType": {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE"),
        "connectionId": connection,
        "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
        "stage": "live",
        **extra,
    }


def authorize(ticket: str | None) -> dict[str, Any]:
    query = {"ticket": ticket} if ticket is not None else {}
    event = {
        "type": "REQUEST",
        "methodArn": ARN,
        "queryStringParameters": query,
        "requestContext": _context("$connect", "c1"),
    }
    return gateway.handler(event, None)


def connect(connection: str, decision: dict[str, Any]) -> dict[str, Any]:
    context = {**decision["context"], "principalId": decision["principalId"]}
    return gateway.handler(
        {"requestContext": _context("$connect", connection, authorizer=context)}, None
    )


def message(connection: str, body: Any, route: str | None = None) -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    if route is None:
        route = body.get("action", "$default") if isinstance(body, dict) else "$default"
    return gateway.handler({"requestContext": _context(route, connection), "body": text}, None)


def opened(store: LiveStore, connection: str = "c1") -> None:
    ticket = store.mint_ticket("session-1", int(time.time()) + 600, time.time())
    decision = authorize(ticket)
    assert decision["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert connect(connection, decision)["statusCode"] == 200


def stored(aws, events: list[tuple[str, dict[str, Any]]], call_sid: str = CALL) -> None:
    for seq, (kind, data) in enumerate(events, start=1):
        body = live.envelope(call_sid, seq, 1_000 + seq, kind, data)
        aws.dynamodb.put_item(
            TableName=aws.env["CONSOLE_EVENTS_TABLE"],
            Item={
                "call_sid": {"S": call_sid},
                "seq": {"N": str(seq)},
                "body": {"S": body},
                "expires_at": {"N": str(int(time.time()) + 3600)},
            },
        )


def caption(role: str, text: str, final: bool) -> tuple[str, dict[str, Any]]:
    return "caption", {"role": role, "final": final, "text": text, "at": 0}


# -- the authorizer ---------------------------------------------------------------------------


def test_a_ticket_opens_one_socket_once(store):
    ticket = store.mint_ticket("session-1", int(time.time()) + 600, time.time())
    decision = authorize(ticket)
    (statement,) = decision["policyDocument"]["Statement"]
    assert statement == {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": ARN}
    assert decision["context"]["session"] == live.session_hash("session-1")
    assert "session-1" not in json.dumps(decision)  # only its hash travels
    again = authorize(ticket)
    assert again["policyDocument"]["Statement"][0]["Effect"] == "Deny"


@pytest.mark.parametrize("ticket", [None, "", "made-up", "x" * 500])
def test_no_or_a_made_up_ticket_is_denied(store, ticket):
    assert authorize(ticket)["policyDocument"]["Statement"][0]["Effect"] == "Deny"


def test_a_ticket_lives_seconds(store):
    ticket = store.mint_ticket("s", int(time.time()) + 600, time.time() - live.TICKET_SECONDS - 1)
    assert authorize(ticket)["policyDocument"]["Statement"][0]["Effect"] == "Deny"


def test_connect_without_the_authorizer_context_is_refused(store):
    event = {"requestContext": _context("$connect", "c9", authorizer={})}
    assert gateway.handler(event, None)["statusCode"] == 403


# -- subscribe and replay --------------------------------------------------------------------------


def test_subscribe_replays_the_call_so_far_without_replaced_partials(aws, store, sent):
    stored(
        aws,
        [
            ("call", {"state": "started", "at": 0}),
            caption("assistant", "Hel", False),
            caption("assistant", "Hello there", True),
            caption("user", "I", False),
            caption("user", "I need", False),
            ("speech", {"role": "user", "status": "started", "at": 5}),
        ],
    )
    opened(store)
    message("c1", {"action": "subscribe", "topic": f"call:{CALL}", "since": 0})
    (history,) = sent["c1"]
    assert history["type"] == "history"
    assert history["through"] == 6
    assert [e["seq"] for e in history["events"]] == [1, 3, 5, 6]  # "Hel" and "I" replaced
    assert history["events"][2]["data"]["text"] == "I need"  # the open partial is kept
    message("c1", {"action": "subscribe", "topic": f"call:{CALL}", "since": 5})
    assert [e["seq"] for e in sent["c1"][1]["events"]] == [6]


def test_a_subscription_is_what_the_edge_reads_until_disconnect(aws, store, sent):
    opened(store)
    message("c1", {"action": "subscribe", "topic": "calls"})
    message("c1", {"action": "subscribe", "topic": f"call:{CALL}"})
    subs = aws.dynamodb.query(
        TableName=aws.env["CONSOLE_CONNECTIONS_TABLE"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"TOPIC#call:{CALL}"}},
    )["Items"]
    assert [item["sk"]["S"] for item in subs] == ["CONN#c1"]
    assert int(subs[0]["valid_until"]["N"]) <= int(time.time()) + 600  # the session's end
    gateway.handler({"requestContext": _context("$disconnect", "c1")}, None)
    left = aws.dynamodb.scan(TableName=aws.env["CONSOLE_CONNECTIONS_TABLE"])["Items"]
    assert [item["pk"]["S"] for item in left] == []  # socket, subscriptions, session link


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"action": "subscribe", "topic": "call:CA1"}, "topic"),
        ({"action": "subscribe", "topic": "everything"}, "topic"),
        ({"action": "subscribe", "topic": "calls", "since": -1}, "since"),
        ({"action": "subscribe", "topic": "calls", "since": "3"}, "since"),
        ("not json", "JSON"),
        ({"action": "dance"}, "unknown action"),
    ],
)
def test_bad_messages_get_an_error_back(store, sent, body, error):
    opened(store)
    message("c1", body)
    (answer,) = sent["c1"]
    assert answer["type"] == "error"
    assert error in answer["message"]


def test_a_socket_whose_session_ended_is_closed_on_subscribe(aws, store, sent):
    ticket = store.mint_ticket("s", int(time.time()) + 1, time.time())
    decision = authorize(ticket)
    connect("c2", decision)
    time.sleep(1.1)
    message("c2", {"action": "subscribe", "topic": "calls"})
    assert sent["c2"][0]["type"] == "error"
    assert sent["closed"] == ["c2"]


def test_ping_answers_pong(store, sent):
    opened(store)
    message("c1", {"action": "ping"})
    assert sent["c1"] == [{"type": "pong"}]


def test_history_is_cut_into_messages_under_api_gateways_limit():
    bodies = [live.envelope(CALL, n, 0, "caption", {"text": "x" * 2000}) for n in range(200)]
    messages = history_messages(f"call:{CALL}", bodies, 200)
    assert len(messages) > 1
    assert all(len(m.encode()) <= live.MAX_MESSAGE_BYTES for m in messages)
    parsed = [json.loads(m) for m in messages]
    assert [p["through"] for p in parsed[:-1]] == [None] * (len(parsed) - 1)
    assert parsed[-1]["through"] == 200
    assert [e["seq"] for p in parsed for e in p["events"]] == list(range(200))
