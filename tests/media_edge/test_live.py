"""The edge's live feed (media_edge/io/live.py): events stored and fanned out to the consoles
subscribed, through a management API that answers like API Gateway's (httpx MockTransport),
with moto's DynamoDB holding the template's tables."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws

from infra.local_aws import REGION, create_resources, load_template
from media_edge.io import live as live_module
from media_edge.io.live import LiveHub
from media_edge.io.telemetry import EdgeMetrics, edge_logger
from voicebridge import live
from voicebridge.config import load_settings

CALL = "CA" + "4" * 32
MANAGEMENT = "https://abc123.execute-api.us-east-1.amazonaws.com/live"
EDGE = {  # what every edge needs, beside the live feed's own settings
    "TWILIO_AUTH_TOKEN": "t",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "VAPI_API_KEY": "k",
    "EDGE_PUBLIC_URL": "wss://edge.example.com",
    "STREAM_TOKEN_SECRET": "s",
}


class Gateway:
    """API Gateway's @connections, as far as the hub sees it: a closed socket is 410."""

    def __init__(self) -> None:
        self.posts: dict[str, list[dict[str, Any]]] = {}  # events, batches unpacked
        self.requests = 0
        self.delay_s = 0.0
        self.gone: set[str] = set()
        self.headers: list[httpx.Headers] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        connection = request.url.path.rsplit("/", 1)[1]
        assert request.url.path == f"/live/@connections/{connection}"
        self.headers.append(request.headers)
        self.requests += 1
        await asyncio.sleep(self.delay_s)
        if connection in self.gone:
            return httpx.Response(410, json={"message": "GoneException"})
        message = json.loads(request.content)
        events = message["events"] if message["type"] == "batch" else [message]
        self.posts.setdefault(connection, []).extend(events)
        return httpx.Response(200)


@pytest.fixture
def tables(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        dynamodb = session.client("dynamodb")
        env = create_resources(dynamodb, session.client("sqs"), load_template(), prefix="live")
        yield dynamodb, env


@pytest.fixture
async def hub(tables):
    dynamodb, env = tables
    settings = load_settings(
        "edge",
        {
            **EDGE,
            "SESSIONS_TABLE": env["SESSIONS_TABLE"],
            "CONSOLE_EVENTS_TABLE": env["CONSOLE_EVENTS_TABLE"],
            "CONSOLE_CONNECTIONS_TABLE": env["CONSOLE_CONNECTIONS_TABLE"],
            "CONSOLE_WS_MANAGEMENT_URL": MANAGEMENT,
        },
    )
    gateway = Gateway()
    http = httpx.AsyncClient(transport=httpx.MockTransport(gateway.handle))
    running = LiveHub(settings, http, edge_logger(), EdgeMetrics(lambda: 0))
    await running.start()
    running.test_gateway = gateway  # type: ignore[attr-defined]
    running.test_db = dynamodb  # type: ignore[attr-defined]
    running.test_env = env  # type: ignore[attr-defined]
    yield running
    await running.stop()
    await http.aclose()


def subscribe(hub: LiveHub, topic: str, connection: str, valid_for: int = 600) -> None:
    until = int(time.time()) + valid_for
    hub.test_db.put_item(  # type: ignore[attr-defined]
        TableName=hub.test_env["CONSOLE_CONNECTIONS_TABLE"],  # type: ignore[attr-defined]
        Item={
            "pk": {"S": f"TOPIC#{topic}"},
            "sk": {"S": f"CONN#{connection}"},
            "valid_until": {"N": str(until)},
            "expires_at": {"N": str(until + 60)},
        },
    )


async def settled(hub: LiveHub, seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)


async def test_every_event_is_stored_in_order_as_consoles_receive_it(hub):
    feed = hub.feed(CALL)
    feed.publish("call", {"state": "started", "at": 0})
    feed.publish("caption", {"role": "user", "final": False, "text": "Hi <b>", "at": 10})
    await settled(hub)
    items = hub.test_db.query(  # type: ignore[attr-defined]
        TableName=hub.test_env["CONSOLE_EVENTS_TABLE"],  # type: ignore[attr-defined]
        KeyConditionExpression="call_sid = :c",
        ExpressionAttributeValues={":c": {"S": CALL}},
    )["Items"]
    bodies = [json.loads(item["body"]["S"]) for item in items]
    assert [(b["seq"], b["kind"]) for b in bodies] == [(1, "call"), (2, "caption")]
    assert bodies[1]["data"]["text"] == "Hi <b>"
    assert all(int(i["expires_at"]["N"]) > time.time() + 3000 for i in items)


async def test_subscribers_get_each_event_at_once_signed_and_in_order(hub):
    subscribe(hub, live.call_topic(CALL), "watcher")
    subscribe(hub, live.TOPIC_CALLS, "lister")
    feed = hub.feed(CALL)
    for n in range(5):
        feed.publish("caption", {"role": "user", "final": n == 4, "text": f"w{n}", "at": n})
    feed.publish("speech", {"role": "user", "status": "stopped", "at": 9})
    await settled(hub)
    gateway = hub.test_gateway  # type: ignore[attr-defined]
    assert [e["seq"] for e in gateway.posts["watcher"]] == [1, 2, 3, 4, 5, 6]
    assert [e["kind"] for e in gateway.posts["lister"]] == ["speech"]  # the list: call, speech
    authorization = gateway.headers[0]["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=")
    assert "/us-east-1/execute-api/aws4_request" in authorization


async def test_events_that_queue_up_behind_a_slow_post_go_in_one_batch(hub):
    subscribe(hub, live.call_topic(CALL), "slow")
    gateway = hub.test_gateway  # type: ignore[attr-defined]
    gateway.delay_s = 0.1  # a post takes 100 ms: far more events arrive meanwhile
    feed = hub.feed(CALL)
    for n in range(40):
        feed.publish("caption", {"role": "user", "final": False, "text": f"w{n}", "at": n})
        await asyncio.sleep(0.005)
    await settled(hub, 0.8)
    assert [e["seq"] for e in gateway.posts["slow"]] == list(range(1, 41))  # all, in order
    assert gateway.requests <= 6  # not one round trip per event


async def test_a_gone_socket_is_dropped_at_once(hub):
    subscribe(hub, live.call_topic(CALL), "left")
    subscribe(hub, live.call_topic(CALL), "stays")
    gateway = hub.test_gateway  # type: ignore[attr-defined]
    gateway.gone.add("left")
    feed = hub.feed(CALL)
    feed.publish("call", {"state": "live", "at": 1})
    await settled(hub)
    feed.publish("caption", {"role": "user", "final": True, "text": "x", "at": 2})
    await settled(hub)
    assert [e["seq"] for e in gateway.posts["stays"]] == [1, 2]
    assert len([h for h in gateway.headers if "left" in str(h)]) <= 1
    assert "left" in hub._gone


async def test_a_subscription_past_its_session_is_skipped(hub):
    subscribe(hub, live.call_topic(CALL), "expired", valid_for=-5)
    hub.feed(CALL).publish("call", {"state": "live", "at": 1})
    await settled(hub)
    assert hub.test_gateway.posts == {}  # type: ignore[attr-defined]


async def test_a_new_subscriber_is_found_within_the_refresh(hub, monkeypatch):
    monkeypatch.setattr(live_module, "SUBSCRIBERS_S", 0.2)
    feed = hub.feed(CALL)
    feed.publish("call", {"state": "started", "at": 0})
    await settled(hub)
    subscribe(hub, live.call_topic(CALL), "late")
    await asyncio.sleep(0.25)
    feed.publish("caption", {"role": "user", "final": True, "text": "a", "at": 1})  # refreshes
    await settled(hub)
    feed.publish("caption", {"role": "user", "final": True, "text": "b", "at": 2})
    await settled(hub)
    # seq 1 (and 2, posted before the refresh finished) come from the store: a gap to fetch
    assert [e["seq"] for e in hub.test_gateway.posts["late"]][-1] == 3  # type: ignore[attr-defined]


async def test_a_console_watching_the_list_since_the_last_read_gets_the_next_call(hub, monkeypatch):
    """The calls list has no seq to find a gap by: a "started" sent while the subscriber list
    is being re-read must still reach a console that subscribed since the previous read."""
    monkeypatch.setattr(live_module, "SUBSCRIBERS_S", 0.2)
    hub.feed(CALL).publish("call", {"state": "started", "at": 0})  # reads the list: nobody
    await settled(hub)
    subscribe(hub, live.TOPIC_CALLS, "new-console")
    await asyncio.sleep(0.25)  # the cache is stale: the next event starts a re-read
    other = "CA" + "5" * 32
    hub.feed(other).publish("call", {"state": "started", "at": 0})
    await settled(hub)
    posts = hub.test_gateway.posts["new-console"]  # type: ignore[attr-defined]
    assert [(e["callSid"], e["data"]["state"]) for e in posts] == [(other, "started")]


async def test_an_oversized_event_is_dropped_whole_and_uses_no_seq(hub):
    subscribe(hub, live.call_topic(CALL), "watcher")
    feed = hub.feed(CALL)
    feed.publish("caption", {"role": "user", "final": True, "text": "x" * 40_000, "at": 1})
    feed.publish("caption", {"role": "user", "final": True, "text": "ok", "at": 2})
    await settled(hub)
    (only,) = hub.test_gateway.posts["watcher"]  # type: ignore[attr-defined]
    assert (only["seq"], only["data"]["text"]) == (1, "ok")


async def test_vapis_control_url_is_kept_on_the_session_item(hub, caplog):
    url = "https://phone-call-websocket.vapi.ai/abc/control"
    hub.store_control_url(CALL, url)
    await settled(hub)
    item = hub.test_db.get_item(  # type: ignore[attr-defined]
        TableName=hub.test_env["SESSIONS_TABLE"],  # type: ignore[attr-defined]
        Key={"pk": {"S": f"CALL#{CALL}"}, "sk": {"S": "SESSION"}},
    )["Item"]
    assert item["control_url"]["S"] == url
    assert int(item["expires_at"]["N"]) > time.time()
    assert url not in caplog.text


async def test_without_aws_the_feed_is_off_and_calls_go_on(monkeypatch):
    settings = load_settings(
        "edge",
        {
            **EDGE,
            "SESSIONS_TABLE": "sessions",  # the stream claims' table (required for the edge)
            "CONSOLE_EVENTS_TABLE": "e",
            "CONSOLE_CONNECTIONS_TABLE": "c",
            "CONSOLE_WS_MANAGEMENT_URL": MANAGEMENT,
        },
    )
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    async with httpx.AsyncClient() as http:
        hub = LiveHub(settings, http, edge_logger(), EdgeMetrics(lambda: 0))
        await hub.start()  # no region: boto3 cannot build a client
        assert hub.enabled is False
        hub.feed(CALL).publish("call", {"state": "started", "at": 0})  # a no-op, no error
        await hub.stop()
