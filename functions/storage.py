"""DynamoDB single-table storage: sessions, phone bindings, assistants and call records.

Keys (table ``SESSIONS_TABLE``, ``pk``/``sk``, TTL attribute ``expires_at``)::

    CALL#{callSid}   SESSION        the live call (from, to, assistant), short TTL
    CALL#{callSid}   RECORD         the call record: final status, Vapi report fields
    CALL#{callSid}   EVENT#{key}    one timeline entry per distinct event (conditional put)
    NUMBER#{e164}    BINDING        which assistant answers this number
    ASSISTANTS       ASSISTANT#{id} assistants created through the admin API

One query on ``CALL#{callSid}`` returns everything about a call. DynamoDB deletes expired items
lazily, so every read filters ``expires_at`` itself. The boto3 client is created on first use:
importing boto3 costs more than the rest of the API's imports, and most cold starts of a webhook
only need it after the signature check.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from functions import aws

BINDING_CACHE_SECONDS = 30.0
MAX_CALL_ITEMS = 1000
MAX_TEXT_CHARS = 100_000  # a DynamoDB item is at most 400 KB

# Twilio CallStatus -> rank; a terminal state outranks every live one, ties break on SequenceNumber.
STATUS_RANK: Mapping[str, int] = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    "completed": 4,
    "busy": 4,
    "failed": 4,
    "no-answer": 4,
    "canceled": 4,
}


def _to_dynamo(value: Any) -> Any:
    """Floats become Decimals (DynamoDB has no float type); containers recursively."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {str(k): _to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


class Store:
    """Typed access to the table; safe to share across requests and threads."""

    def __init__(self, table: str, endpoint_url: str | None = None, client: Any = None) -> None:
        self.table = table
        self._endpoint_url = endpoint_url
        self._client = client
        self._bindings: dict[str, tuple[float, str | None]] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb", self._endpoint_url)
        return self._client

    def _serialize(self, item: Mapping[str, Any]) -> dict[str, Any]:
        from boto3.dynamodb.types import TypeSerializer

        serializer = TypeSerializer()
        return {k: serializer.serialize(v) for k, v in _to_dynamo(dict(item)).items()}

    @staticmethod
    def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
        from boto3.dynamodb.types import TypeDeserializer

        deserializer = TypeDeserializer()
        return _from_dynamo({k: deserializer.deserialize(v) for k, v in item.items()})

    # Sessions ---------------------------------------------------------------------------------

    def put_session(
        self, call_sid: str, caller: str, called: str, assistant_id: str, now: float, ttl: int
    ) -> None:
        item = {
            "pk": f"CALL#{call_sid}",
            "sk": "SESSION",
            "call_sid": call_sid,
            "from": caller,
            "to": called,
            "assistant_id": assistant_id,
            "created_at": int(now),
            "expires_at": int(now) + ttl,
        }
        self.client.put_item(TableName=self.table, Item=self._serialize(item))

    def get_session(self, call_sid: str, now: float) -> dict[str, Any] | None:
        response = self.client.get_item(
            TableName=self.table, Key={"pk": {"S": f"CALL#{call_sid}"}, "sk": {"S": "SESSION"}}
        )
        item = response.get("Item")
        if not item or int(item["expires_at"]["N"]) <= now:
            return None
        return self._deserialize(item)

    def end_session(self, call_sid: str, now: float, linger_seconds: int = 300) -> None:
        """Shorten a live session's TTL (the call is over); no-op if there is none."""
        from botocore.exceptions import ClientError

        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": f"CALL#{call_sid}"}, "sk": {"S": "SESSION"}},
                UpdateExpression="SET expires_at = :end, ended_at = if_not_exists(ended_at, :now)",
                ConditionExpression="attribute_exists(pk) AND expires_at > :end",
                ExpressionAttributeValues={
                    ":end": {"N": str(int(now) + linger_seconds)},
                    ":now": {"N": str(int(now))},
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    # Bindings and assistants -----------------------------------------------------------------

    def get_binding(self, number: str) -> str | None:
        """The assistant bound to ``number``, cached in-process (misses too) for a short time."""
        now = time.monotonic()
        cached = self._bindings.get(number)
        if cached and cached[0] > now:
            return cached[1]
        response = self.client.get_item(
            TableName=self.table,
            Key={"pk": {"S": f"NUMBER#{number}"}, "sk": {"S": "BINDING"}},
            ProjectionExpression="assistant_id",
        )
        item = response.get("Item")
        assistant_id = item["assistant_id"]["S"] if item else None
        self._bindings[number] = (now + BINDING_CACHE_SECONDS, assistant_id)
        return assistant_id

    def put_assistant(self, assistant: Mapping[str, Any], numbers: list[str], now: float) -> None:
        """Store the assistant and bind each number to it (one transaction: all or nothing)."""
        assistant_id = str(assistant["id"])
        items = [
            {
                "pk": "ASSISTANTS",
                "sk": f"ASSISTANT#{assistant_id}",
                **assistant,
                "numbers": numbers,
                "created_at": int(now),
            }
        ]
        items += [
            {
                "pk": f"NUMBER#{n}",
                "sk": "BINDING",
                "assistant_id": assistant_id,
                "bound_at": int(now),
            }
            for n in numbers
        ]
        self.client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": self.table, "Item": self._serialize(i)}} for i in items
            ]
        )
        for number in numbers:
            self._bindings.pop(number, None)

    def put_binding(self, number: str, assistant_id: str, now: float) -> None:
        """Bind ``number`` to an existing assistant (replacing any earlier binding)."""
        item = {
            "pk": f"NUMBER#{number}",
            "sk": "BINDING",
            "assistant_id": assistant_id,
            "bound_at": int(now),
        }
        self.client.put_item(TableName=self.table, Item=self._serialize(item))
        self._bindings.pop(number, None)

    def list_assistants(self, limit: int = 100) -> list[dict[str, Any]]:
        response = self.client.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :sk)",
            ExpressionAttributeValues={":pk": {"S": "ASSISTANTS"}, ":sk": {"S": "ASSISTANT#"}},
            Limit=limit,
        )
        return [self._public(self._deserialize(item)) for item in response.get("Items", [])]

    # Call records ----------------------------------------------------------------------------

    def put_event(
        self,
        call_sid: str,
        key: str,
        at: float,
        kind: str,
        detail: Mapping[str, Any],
        expires_at: int,
    ) -> bool:
        """Add one timeline entry; False if this exact event was already recorded."""
        from botocore.exceptions import ClientError

        item = {
            "pk": f"CALL#{call_sid}",
            "sk": f"EVENT#{key}",
            "at": at,
            "kind": kind,
            "detail": dict(detail),
            "expires_at": expires_at,
        }
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._serialize(item),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def apply_status(
        self, call_sid: str, status: str, sequence: int, at: float, expires_at: int
    ) -> bool:
        """Move the record's status forward; an older or duplicate callback changes nothing."""
        from botocore.exceptions import ClientError

        rank = STATUS_RANK[status]
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": f"CALL#{call_sid}"}, "sk": {"S": "RECORD"}},
                UpdateExpression=(
                    "SET call_status = :st, status_rank = :r, status_seq = :s, status_at = :at,"
                    " call_sid = :sid, expires_at = :exp"
                ),
                ConditionExpression=(
                    "attribute_not_exists(status_rank) OR status_rank < :r"
                    " OR (status_rank = :r AND status_seq < :s)"
                ),
                ExpressionAttributeValues=self._serialize(
                    {
                        ":st": status,
                        ":r": rank,
                        ":s": sequence,
                        ":at": at,
                        ":sid": call_sid,
                        ":exp": expires_at,
                    }
                ),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def apply_report(self, call_sid: str, fields: Mapping[str, Any], expires_at: int) -> None:
        """Set the end-of-call report's fields (setting the same values twice is harmless)."""
        values = {k: v for k, v in fields.items() if v is not None and v != ""}
        values["call_sid"] = call_sid
        values["expires_at"] = expires_at
        names = {f"#f{i}": name for i, name in enumerate(values)}
        self.client.update_item(
            TableName=self.table,
            Key={"pk": {"S": f"CALL#{call_sid}"}, "sk": {"S": "RECORD"}},
            UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(values))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=self._serialize(
                {f":v{i}": value for i, value in enumerate(values.values())}
            ),
        )

    def get_call(self, call_sid: str, now: float) -> dict[str, Any] | None:
        """Session, record and timeline (in time order) of one call, or None if unknown."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"CALL#{call_sid}"}},
        }
        while len(items) < MAX_CALL_ITEMS:
            response = self.client.query(**kwargs)
            items += [self._deserialize(i) for i in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        live = [i for i in items if i.get("expires_at", now + 1) > now]
        if not live:
            return None
        by_sk = {i["sk"]: i for i in live}
        session = by_sk.get("SESSION")
        record = by_sk.get("RECORD", {})
        events = sorted(
            (i for i in live if i["sk"].startswith("EVENT#")), key=lambda i: (i["at"], i["sk"])
        )
        return {
            "callSid": call_sid,
            "session": self._public(session) if session else None,
            **{k: v for k, v in self._public(record).items() if k not in {"status_rank"}},
            "timeline": [{"at": e["at"], "kind": e["kind"], **e.get("detail", {})} for e in events],
        }

    @staticmethod
    def _public(item: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k not in {"pk", "sk"}}


_stores: dict[tuple[str, str | None], Store] = {}


def get_store(table: str, endpoint_url: str | None) -> Store:
    """One Store per table and endpoint for the life of the process (keeps the binding cache)."""
    key = (table, endpoint_url)
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = Store(table, endpoint_url)
    return store
