"""The emulated API Gateway WebSocket API (infra/ws_gateway.py) is as strict as API Gateway:
authorizer before $connect, route selection on the body's action, @connections with 410 for a
socket not (or no longer) open, SigV4 required, the documented size and time limits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from infra.ws_gateway import WsGateway

SIGNED = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261201/us-east-1/execute-api/"
    "aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
    "X-Amz-Date": "20261201T000000Z",
}


class Handler:
    """A stand-in Lambda: allows ticket "good", records every event, can post during $connect."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.gateway: WsGateway | None = None
        self.connect_status = 200
        self.posted_during_connect: int | None = None

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        if event.get("type") == "REQUEST":
            effect = "Allow" if event["queryStringParameters"].get("ticket") == "good" else "Deny"
            statement = {"Action": "execute-api:Invoke", "Effect": effect}
            statement["Resource"] = event["methodArn"]
            return {
                "principalId": "p",
                "policyDocument": {"Version": "2012-10-17", "Statement": [statement]},
                "context": {"session": "s1"},
            }
        context_ = event["requestContext"]
        if context_["routeKey"] == "$connect":
            assert self.gateway is not None
            url = f"{self.gateway.management_url}/@connections/{context_['connectionId']}"
            self.posted_during_connect = httpx.post(
                url, content=b"early", headers=SIGNED
            ).status_code
            return {"statusCode": self.connect_status}
        return {"statusCode": 200}

    def routes(self) -> list[str]:
        return [e["requestContext"]["routeKey"] for e in self.events if "type" not in e]


@pytest.fixture
async def gateway():
    handler = Handler()
    running = WsGateway(handler, idle_seconds=1.0)
    handler.gateway = running
    await running.start()
    running.test_handler = handler  # type: ignore[attr-defined]
    yield running
    await running.stop()


def url(gateway: WsGateway, ticket: str | None = "good") -> str:
    return gateway.url + (f"?ticket={ticket}" if ticket is not None else "")


async def manage(method: str, gateway: WsGateway, connection: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.request(
            method, f"{gateway.management_url}/@connections/{connection}", **kwargs
        )


def connection_id(gateway: WsGateway) -> str:
    handler = gateway.test_handler  # type: ignore[attr-defined]
    return handler.events[-1]["requestContext"]["connectionId"]


@pytest.mark.parametrize(("ticket", "status"), [(None, 401), ("bad", 403)])
async def test_the_authorizer_decides_before_connect(gateway, ticket, status):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url(gateway, ticket)):
            pass
    assert refused.value.response.status_code == status
    handler = gateway.test_handler
    assert handler.routes() == []  # $connect never ran
    assert len(handler.events) == (0 if ticket is None else 1)  # no identity: no authorizer


async def test_a_connect_route_that_refuses_refuses_the_upgrade(gateway):
    gateway.test_handler.connect_status = 403
    with pytest.raises(InvalidStatus):
        async with connect(url(gateway)):
            pass


async def test_messages_route_on_the_action_and_posts_reach_the_socket(gateway):
    handler = gateway.test_handler
    async with connect(url(gateway)) as socket:
        connection = connection_id(gateway)
        assert handler.posted_during_connect == 410  # not open before $connect returns
        assert handler.events[-1]["requestContext"]["authorizer"]["session"] == "s1"
        await socket.send(json.dumps({"action": "subscribe", "topic": "calls"}))
        await socket.send("not json")
        await socket.send(json.dumps({"action": "launch"}))
        answer = await manage("POST", gateway, connection, content=b'{"hi":1}', headers=SIGNED)
        assert answer.status_code == 200
        assert await socket.recv() == '{"hi":1}'
        unsigned = await manage("POST", gateway, connection, content=b"x")
        assert unsigned.status_code == 403
        big = await manage(
            "POST", gateway, connection, content=b"x" * (128 * 1024 + 1), headers=SIGNED
        )
        assert big.status_code == 413
        about = await manage("GET", gateway, connection, headers=SIGNED)
        assert set(about.json()) == {"ConnectedAt", "Identity", "LastActiveAt"}
        await asyncio.sleep(0.1)
        assert handler.routes() == ["$connect", "subscribe", "$default", "$default"]
        closed = await manage("DELETE", gateway, connection, headers=SIGNED)
        assert closed.status_code == 204
        with pytest.raises(ConnectionClosed):
            await socket.recv()
    await asyncio.sleep(0.1)
    assert handler.routes()[-1] == "$disconnect"
    assert (
        await manage("POST", gateway, connection, content=b"x", headers=SIGNED)
    ).status_code == 410


async def test_a_frame_over_32_kb_closes_the_socket_with_1009(gateway):
    async with connect(url(gateway), max_size=None) as socket:
        await socket.send("x" * (32 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd.code == 1009


async def test_an_idle_socket_is_closed(gateway):
    async with connect(url(gateway)) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 3)
    assert closed.value.rcvd.code == 1001
