"""DynamoDB single-table storage: sessions, phone bindings, assistants and call records.

Keys (table ``SESSIONS_TABLE``, ``pk``/``sk``, TTL attribute ``expires_at``)::

    CALL#{callSid}   SESSION        the live call (from, to, assistant), short TTL; first write
                                    wins, so a replayed /twilio/voice never overwrites it (nor
                                    the edge's claim of its stream, made on the same item)
    CALL#{callSid}   RECORD         the call record: final status, Vapi report fields; also the
                                    calls list's entry (below)
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

The calls list (``GET /calls``, newest first) is the GSI ``calls-by-time`` over the RECORD items:
partition ``list_pk`` = ``CALLS#{yyyy-mm}`` of the call's creation (UTC), sort ``list_sk`` =
``{created ms, 13 digits}#{callSid}``. A month per partition keeps any one partition's writes
far below DynamoDB's per-partition limit at any call rate a Twilio account reaches, and a page
needs at most one query per month of retention. The worker writes the entry, off the webhooks'
path (``/twilio/voice`` stays one write): at ``stream-started`` from the session (who, which
assistant, when), at the final call status from Twilio's callback (any call, also one whose
session write failed or that was placed elsewhere).

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

CALLS_INDEX = "calls-by-time"
_PRIVATE = frozenset({"pk", "sk", "list_pk", "list_sk", "control_url", "status_rank"})
LIVE_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress"})

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


def _list_key(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Where a calls-list query resumes after this item (the index's and the table's keys)."""
    return {k: raw[k] for k in ("pk", "sk", "list_pk", "list_sk")}


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
        self,
        call_sid: str,
        caller: str,
        called: str,
        assistant_id: str,
        now: float,
        ttl: int,
        *,
        direction: str = "inbound",
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
            "direction": direction,
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

    def ensure_listed(
        self, call_sid: str, fields: Mapping[str, Any], created: float, expires_at: int
    ) -> None:
        """Give the call record its calls-list entry and summary fields (idempotent, in any
        order): each summary field is kept once set; the entry's position is the earliest
        start anyone reported (a condition), so redelivered or reordered callbacks converge."""
        summary = {k: v for k, v in fields.items() if v not in (None, "")}
        names = {f"#f{i}": name for i, name in enumerate(summary)}
        sets = [f"#f{i} = if_not_exists(#f{i}, :v{i})" for i in range(len(summary))]
        key = {"pk": {"S": f"CALL#{call_sid}"}, "sk": {"S": "RECORD"}}
        self.client.update_item(
            TableName=self.table,
            Key=key,
            UpdateExpression=", ".join(
                ["SET call_sid = :sid, expires_at = if_not_exists(expires_at, :exp)", *sets]
            ),
            **({"ExpressionAttributeNames": names} if names else {}),
            ExpressionAttributeValues=self._serialize(
                {
                    ":sid": call_sid,
                    ":exp": expires_at,
                    **{f":v{i}": value for i, value in enumerate(summary.values())},
                }
            ),
        )
        created_ms = int(created * 1000)
        month = time.strftime("%Y-%m", time.gmtime(created))
        try:
            self.client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET list_pk = :lpk, list_sk = :lsk, created_at = :c",
                ConditionExpression="attribute_not_exists(list_sk) OR list_sk > :lsk",
                ExpressionAttributeValues=self._serialize(
                    {
                        ":lpk": f"CALLS#{month}",
                        ":lsk": f"{created_ms:013d}#{call_sid}",
                        ":c": int(created),
                    }
                ),
            )
        except Exception as exc:
            if not _condition_failed(exc):
                raise

    def list_calls(
        self,
        *,
        limit: int,
        months: list[str],
        start: tuple[str, dict[str, Any]] | None,
        number: str | None,
        status: str | None,
        now: float,
        max_evaluated: int = 1000,
    ) -> tuple[list[dict[str, Any]], tuple[str, dict[str, Any]] | None]:
        """Newest calls first, filtered by number (from or to) and status (a Twilio status,
        ``live`` or ``ended``): (calls, where the next page starts or None). ``months`` are the
        list partitions to read, newest first; ``start`` resumes inside one of them. At most
        ``max_evaluated`` items are read per page, so a rare filter cannot make one request
        scan the whole list: the page is then short and the cursor goes on from there."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        filters: list[str] = []
        if number:
            names |= {"#from": "from", "#to": "to"}
            values[":n"] = {"S": number}
            filters.append("(#from = :n OR #to = :n)")
        if status:
            names["#st"] = "call_status"
            group = sorted(LIVE_STATUSES) if status in ("live", "ended") else [status]
            for i, name in enumerate(group):
                values[f":s{i}"] = {"S": name}
            inside = f"#st IN ({', '.join(f':s{i}' for i in range(len(group)))})"
            filters.append(f"NOT {inside}" if status == "ended" else inside)
        calls: list[dict[str, Any]] = []
        last: Mapping[str, Any] = {}
        last_month = ""
        evaluated = 0
        first = months.index(start[0]) if start else 0
        for month in months[first:]:
            exclusive = start[1] if start and month == start[0] else None
            while True:
                query: dict[str, Any] = {
                    "TableName": self.table,
                    "IndexName": CALLS_INDEX,
                    "KeyConditionExpression": "list_pk = :m",
                    "ExpressionAttributeValues": {":m": {"S": f"CALLS#{month}"}, **values},
                    "ScanIndexForward": False,
                    "Limit": (
                        min(100, max(1, max_evaluated - evaluated))
                        if filters
                        else limit - len(calls) + 1
                    ),
                }
                if names:
                    query["ExpressionAttributeNames"] = names
                if filters:
                    query["FilterExpression"] = " AND ".join(filters)
                if exclusive:
                    query["ExclusiveStartKey"] = exclusive
                answer = self.client.query(**query)
                evaluated += int(answer.get("ScannedCount", 0))
                for raw in answer.get("Items", []):
                    if int(raw.get("expires_at", {}).get("N", now + 1)) <= now:
                        continue
                    if len(calls) == limit:  # one more exists: the next page starts after last
                        return calls, (last_month, _list_key(last))
                    calls.append(self._public(self._deserialize(raw)))
                    last, last_month = raw, month
                exclusive = answer.get("LastEvaluatedKey")
                if not exclusive:
                    break
                if evaluated >= max_evaluated:
                    return calls, (month, exclusive)
        return calls, None

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
        """What the admin API shows of an item: no keys, and never the session's Vapi control
        URL (a capability: whoever holds it controls the call)."""
        return {k: v for k, v in item.items() if k not in _PRIVATE}


_stores: dict[tuple[str, str | None, aws.Budget], Store] = {}


def get_store(table: str, endpoint_url: str | None, budget: aws.Budget = aws.WEBHOOK) -> Store:
    """One Store per table, endpoint and budget for the life of the process (keeps the binding
    cache)."""
    key = (table, endpoint_url, budget)
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = Store(table, endpoint_url, budget=budget)
    return store
