"""DynamoDB single-table storage: sessions, phone bindings, assistants and call records.

Keys (table ``SESSIONS_TABLE``, ``pk``/``sk``, TTL attribute ``expires_at``)::

    CALL#{callSid}   SESSION        the live call (from, to, assistant), short TTL; first write
                                    wins, so a replayed /twilio/voice never overwrites it (nor
                                    the edge's claim of its stream, made on the same item)
    CALL#{callSid}   RECORD         the call record: final status, Vapi report fields
    CALL#{callSid}   EVENT#{key}    one timeline entry per distinct event (conditional put)
    CALL#{callSid}   PICTURE        the call's picture, written by the edge at the end
                                    (``voicebridge.call_records``; the edge also links the
                                    recording from RECORD)
    NUMBER#{e164}    BINDING        which assistant answers this number
    ASSISTANTS       ASSISTANT#{id} assistants created through the admin API
    NONCE#{digest}   NONCE          a Vapi webhook body already accepted (replay.py), short TTL
    VAPI#{callId}    TOOL#{id}      one tool call's claim, then its answer (replay.py)

Keys are built only from validated identifiers: full-match Twilio SIDs and E.164 numbers
(``voicebridge.identifiers``), Vapi ids bounded in length before they get here.

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
from voicebridge.call_records import PICTURE_ATTRIBUTE, PICTURE_SK, decode_picture
from voicebridge.identifiers import is_call_sid, is_e164

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


def _condition_failed(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return (
        isinstance(exc, ClientError)
        and exc.response["Error"]["Code"] == "ConditionalCheckFailedException"
    )


class Store:
    """Typed access to the table; safe to share across requests and threads."""

    def __init__(
        self,
        table: str,
        endpoint_url: str | None = None,
        client: Any = None,
        budget: aws.Budget = aws.WEBHOOK,
    ) -> None:
        self.table = table
        self.dependency = aws.Dependency("dynamodb", endpoint_url)
        self._budget = budget
        self._client = client
        # number -> (fresh until, assistant id or None): kept past expiry as the last known value
        self._bindings: dict[str, tuple[float, str | None]] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb", self.dependency.endpoint_url, self._budget)
        return self._client

    def _serialize(self, item: Mapping[str, Any]) -> dict[str, Any]:
        from boto3.dynamodb.types import TypeSerializer

        serializer = TypeSerializer()
        return {k: serializer.serialize(v) for k, v in _to_dynamo(dict(item)).items()}

    @staticmethod
    def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
        from boto3.dynamodb.types import TypeDeserializer

        deserializer = TypeDeserializer()
        return {k: _from_dynamo(deserializer.deserialize(v)) for k, v in item.items()}

    # Sessions ---------------------------------------------------------------------------------

    def put_session(
        self, call_sid: str, caller: str, called: str, assistant_id: str, now: float, ttl: int
    ) -> bool:
        """Write the live call's session; False if a live one exists already (a replayed or
        retried /twilio/voice, or the edge claimed the stream first): the first write wins."""
        if not is_call_sid(call_sid):
            raise ValueError("not a Twilio CallSid")
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
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._serialize(item),
                ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
                ExpressionAttributeValues={":now": {"N": str(int(now))}},
            )
        except Exception as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

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

    def cached_binding(self, number: str, *, stale: bool = False) -> tuple[bool, str | None]:
        """(known, assistant id) from the in-process cache: entries read in the last
        ``BINDING_CACHE_SECONDS``, or with ``stale`` the last value ever read (served when a
        fresh read fails: the number's own assistant beats the default one)."""
        cached = self._bindings.get(number)
        if cached is None or (not stale and cached[0] <= time.monotonic()):
            return False, None
        return True, cached[1]

    def get_binding(self, number: str) -> str | None:
        """The assistant bound to ``number``, cached in-process (misses too) for a short time."""
        known, assistant_id = self.cached_binding(number)
        if known:
            return assistant_id
        if not is_e164(number):
            return None
        now = time.monotonic()
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
        fresh_until = time.monotonic() + BINDING_CACHE_SECONDS
        for number in numbers:
            self._bindings[number] = (fresh_until, assistant_id)

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

    # Replay protection (functions/replay.py) --------------------------------------------------

    def _claim(self, key: Mapping[str, str], now: float, expires_at: int) -> dict[str, Any] | None:
        """Create the item ``key`` unless a live one exists: None if created now, else the
        existing item (an expired one that TTL has not deleted yet is taken over)."""
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._serialize({**key, "created_at": int(now), "expires_at": expires_at}),
                ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
                ExpressionAttributeValues={":now": {"N": str(int(now))}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as exc:
            if not _condition_failed(exc):
                raise
            return self._deserialize(getattr(exc, "response", {}).get("Item") or {})
        return None

    def claim_nonce(self, digest: str, now: float, ttl: int) -> bool:
        """Record a request as seen for ``ttl`` seconds; False if it was seen already."""
        key = {"pk": f"NONCE#{digest}", "sk": "NONCE"}
        return self._claim(key, now, int(now) + ttl) is None

    def forget_nonce(self, digest: str) -> None:
        self.client.delete_item(
            TableName=self.table, Key={"pk": {"S": f"NONCE#{digest}"}, "sk": {"S": "NONCE"}}
        )

    def claim_tool_call(
        self, call_id: str, tool_call_id: str, now: float, ttl: int
    ) -> dict[str, Any] | None:
        """Claim one tool call for running: None if this request claimed it, else the existing
        claim (with ``answer``, a JSON string, once the first run has finished)."""
        key = {"pk": f"VAPI#{call_id}", "sk": f"TOOL#{tool_call_id}"}
        return self._claim(key, now, int(now) + ttl)

    def finish_tool_call(self, call_id: str, tool_call_id: str, answer: str) -> None:
        """Store the answer of a claimed tool call (what a replay or a retry gets back)."""
        self.client.update_item(
            TableName=self.table,
            Key={"pk": {"S": f"VAPI#{call_id}"}, "sk": {"S": f"TOOL#{tool_call_id}"}},
            UpdateExpression="SET answer = :a",
            ExpressionAttributeValues={":a": {"S": answer}},
        )

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
        picture = by_sk.get(PICTURE_SK, {}).get(PICTURE_ATTRIBUTE)
        events = sorted(
            (i for i in live if i["sk"].startswith("EVENT#")), key=lambda i: (i["at"], i["sk"])
        )
        return {
            "callSid": call_sid,
            "session": self._public(session) if session else None,
            **{k: v for k, v in self._public(record).items() if k not in {"status_rank"}},
            "timeline": [{"at": e["at"], "kind": e["kind"], **e.get("detail", {})} for e in events],
            "picture": decode_picture(picture) if isinstance(picture, str) else None,
        }

    @staticmethod
    def _public(item: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k not in {"pk", "sk"}}


_stores: dict[tuple[str, str | None, aws.Budget], Store] = {}


def get_store(table: str, endpoint_url: str | None, budget: aws.Budget = aws.WEBHOOK) -> Store:
    """One Store per table, endpoint and budget for the life of the process (keeps the binding
    cache)."""
    key = (table, endpoint_url, budget)
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = Store(table, endpoint_url, budget=budget)
    return store
