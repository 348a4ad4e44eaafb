"""The console's connections and stored live events (keys: ``voicebridge.live``), and posting
to a socket through API Gateway's management API (``POST``/``DELETE /@connections/{id}``).

Used by the gateway's handlers (``functions.console.gateway``) and by the API (tickets, logout).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from typing import Any

from functions import aws
from voicebridge import live

HISTORY_PAGE = 500  # events per query while replaying
HISTORY_MESSAGE_BYTES = 96 * 1024  # one "history" message; API Gateway carries 128 KB at most


class LiveStore:
    """Typed access to the two console tables (thread-safe; the boto3 client is shared)."""

    def __init__(
        self,
        connections_table: str,
        events_table: str | None,
        endpoint_url: str | None,
        budget: aws.Budget = aws.WEBHOOK,
    ) -> None:
        self.connections_table = connections_table
        self.events_table = events_table
        self._endpoint = endpoint_url
        self._budget = budget

    @property
    def client(self) -> Any:
        return aws.client("dynamodb", self._endpoint, self._budget)

    # -- tickets --------------------------------------------------------------------------------

    def mint_ticket(self, session: str, session_expires: int, now: float) -> str:
        """A random single-use ticket for one socket upgrade (stored hashed, valid seconds)."""
        ticket = secrets.token_urlsafe(32)
        key = live.ticket_key(ticket)
        self.client.put_item(
            TableName=self.connections_table,
            Item={
                "pk": {"S": key["pk"]},
                "sk": {"S": key["sk"]},
                "session": {"S": live.session_hash(session)},
                "session_expires": {"N": str(session_expires)},
                "valid_until": {"N": str(int(now) + live.TICKET_SECONDS)},
                "expires_at": {"N": str(int(now) + live.TICKET_SECONDS + 60)},
            },
        )
        return ticket

    def redeem_ticket(self, ticket: str, now: float) -> tuple[str, int] | None:
        """(session hash, session expiry) of a ticket, once: the item is deleted by the same
        request that reads it (a second upgrade with the ticket finds nothing)."""
        if not ticket or len(ticket) > 100:
            return None
        key = live.ticket_key(ticket)
        answer = self.client.delete_item(
            TableName=self.connections_table,
            Key={"pk": {"S": key["pk"]}, "sk": {"S": key["sk"]}},
            ReturnValues="ALL_OLD",
        )
        item = answer.get("Attributes")
        if not item or int(item["valid_until"]["N"]) < now:
            return None
        return str(item["session"]["S"]), int(item["session_expires"]["N"])

    # -- connections ----------------------------------------------------------------------------

    def _put(self, key: dict[str, str], until: int, **extra: str) -> None:
        """An item that lives while the socket may: the session's end, at most API Gateway's
        2 h connection limit (the edge skips subscriptions past ``valid_until``)."""
        item = {name: {"S": value} for name, value in {**key, **extra}.items()}
        item["valid_until"] = {"N": str(until)}
        item["expires_at"] = {"N": str(until + 60)}
        self.client.put_item(TableName=self.connections_table, Item=item)

    def _delete(self, key: dict[str, str]) -> None:
        self.client.delete_item(
            TableName=self.connections_table,
            Key={name: {"S": value} for name, value in key.items()},
        )

    def connect(self, connection_id: str, session: str, session_expires: int, now: float) -> None:
        until = min(session_expires, int(now) + live.CONNECTION_SECONDS)
        self._put(live.connection_key(connection_id), until, session=session)
        self._put(live.session_socket_key(session, connection_id), until)

    def connection(self, connection_id: str) -> dict[str, Any] | None:
        key = live.connection_key(connection_id)
        item = self.client.get_item(
            TableName=self.connections_table,
            Key={name: {"S": value} for name, value in key.items()},
        ).get("Item")
        if not item:
            return None
        return {
            "session": item["session"]["S"],
            "valid_until": int(item["valid_until"]["N"]),
            "topics": sorted(item.get("topics", {}).get("SS", [])),
        }

    def subscribe(self, connection_id: str, topic: str, until: int) -> None:
        self._put(live.subscription_key(topic, connection_id), until)
        key = live.connection_key(connection_id)
        self.client.update_item(
            TableName=self.connections_table,
            Key={name: {"S": value} for name, value in key.items()},
            UpdateExpression="ADD topics :t",
            ExpressionAttributeValues={":t": {"SS": [topic]}},
        )

    def unsubscribe(self, connection_id: str, topic: str) -> None:
        self._delete(live.subscription_key(topic, connection_id))

    def disconnect(self, connection_id: str) -> None:
        """Forget the socket and every subscription it made (TTL catches what this misses)."""
        known = self.connection(connection_id)
        if known is None:
            return
        for topic in known["topics"]:
            self._delete(live.subscription_key(topic, connection_id))
        self._delete(live.session_socket_key(known["session"], connection_id))
        self._delete(live.connection_key(connection_id))

    def session_sockets(self, session: str) -> list[str]:
        answer = self.client.query(
            TableName=self.connections_table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"SESSION#{session}"}},
        )
        return [item["sk"]["S"].removeprefix("CONN#") for item in answer.get("Items", [])]

    # -- events ---------------------------------------------------------------------------------

    def history(self, call_sid: str, since: int, now: float) -> tuple[list[str], int]:
        """Stored events of a call after ``since`` in order (partial captions that a later
        caption of the same role replaced are left out: the page would only overwrite them),
        and the highest seq stored, which the console may take as "everything up to here"."""
        if not self.events_table:
            return [], since
        bodies: list[tuple[int, str]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.events_table,
            "KeyConditionExpression": "call_sid = :c AND seq > :s",
            "ExpressionAttributeValues": {":c": {"S": call_sid}, ":s": {"N": str(since)}},
            "Limit": HISTORY_PAGE,
        }
        while True:
            answer = self.client.query(**kwargs)
            bodies.extend(
                (int(item["seq"]["N"]), item["body"]["S"])
                for item in answer.get("Items", [])
                if int(item.get("expires_at", {}).get("N", now + 1)) > now
            )
            if "LastEvaluatedKey" not in answer:
                break
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        last = bodies[-1][0] if bodies else since
        return _without_replaced_partials([body for _, body in bodies]), last


def _without_replaced_partials(bodies: list[str]) -> list[str]:
    kept: list[str] = []
    open_partial: dict[str, int] = {}  # role -> index in kept of its latest partial
    for body in bodies:
        event = json.loads(body)
        if event.get("kind") == "caption":
            data = event.get("data") or {}
            role = str(data.get("role"))
            replaced = open_partial.pop(role, None)
            if replaced is not None:
                kept[replaced] = ""
            if not data.get("final"):
                open_partial[role] = len(kept)
        kept.append(body)
    return [body for body in kept if body]


def history_messages(topic: str, bodies: list[str], through: int) -> list[str]:
    """The replay as ``history`` messages, each under API Gateway's message size."""
    messages: list[str] = []
    chunk: list[str] = []
    size = 0
    for body in bodies:
        if chunk and size + len(body) > HISTORY_MESSAGE_BYTES:
            messages.append(_history(topic, chunk, None))
            chunk, size = [], 0
        chunk.append(body)
        size += len(body) + 1
    messages.append(_history(topic, chunk, through))
    return messages


def _history(topic: str, chunk: list[str], through: int | None) -> str:
    head = json.dumps({"type": "history", "topic": topic, "through": through})[:-1]
    return f'{head}, "events": [{",".join(chunk)}]}}'


class Sockets:
    """API Gateway's management API for one stage (``https://{api}.execute-api.{region}.
    amazonaws.com/{stage}``): send to a socket, close it. A closed one answers 410 Gone."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url

    @property
    def client(self) -> Any:
        return aws.client("apigatewaymanagementapi", self.endpoint_url)

    def send(self, connection_id: str, text: str) -> bool:
        """False when the socket is gone (410)."""
        try:
            self.client.post_to_connection(ConnectionId=connection_id, Data=text.encode())
        except self.client.exceptions.GoneException:
            return False
        return True

    def close(self, connection_id: str) -> None:
        with contextlib.suppress(self.client.exceptions.GoneException):
            self.client.delete_connection(ConnectionId=connection_id)
