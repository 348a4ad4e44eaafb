"""DynamoDB for outbound calling: campaigns, their contacts, the do-not-call list, dial requests.

Table ``OUTBOUND_TABLE`` (``pk``/``sk``, TTL ``expires_at``, sparse GSI ``queue`` on
``q_pk``/``q_sk``)::

    CAMPAIGN#{id}  META             settings, status, counters (the concurrency counter c_live)
    CAMPAIGN#{id}  CONTACT#{n:07d}  one contact: state, attempts, outcome, calls
    CAMPAIGN#{id}  RATE             next_free_ms: the campaign's calls-per-second pacing
    DNC            NUMBER#{e164}    a number never to call
    DIAL#{id}      DIAL             one placed call: what its TwiML webhook needs (overrides, AMD
                                    policy) and which contact it is for; written before Calls.create

A contact is ``pending`` (GSI ``DUE#{id}``, sorted by when it is due), ``dialing`` / ``calling``
(GSI ``LIVE#{id}``, sorted by when its lease expires) or ``done`` (out of the index). Every change
of state is one conditional write, and each change that moves a contact between pending, live
and done is a transaction with the campaign's counters, so the counters cannot drift from the
contacts, and the concurrency limit is ``c_live < maxConcurrent`` checked in the same
transaction that claims a contact. A redelivered message or a second dialer racing for the same
contact fails the condition and does nothing: that is the exactly-once of every effect here.
Pending-side changes are guarded by the contact's ``version``; live-side ones by its ``dial_id``
(a fresh id per attempt), so a late callback of an earlier attempt cannot touch a newer one.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final, Literal

from functions import aws
from functions.outbound import rate
from functions.storage import _from_dynamo, _to_dynamo

QUEUE_INDEX: Final = "queue"
PENDING, DIALING, CALLING, DONE = "pending", "dialing", "calling", "done"
RUNNING, PAUSED, DRAFT, CANCELLED, COMPLETED = (
    "running",
    "paused",
    "draft",
    "cancelled",
    "completed",
)
_FAR: Final = "~"  # sorts after every digit: "<= {t}#~" takes every contact due at second t
TRANSACTION_ATTEMPTS: Final = 4

ClaimResult = Literal["claimed", "stale", "blocked"]
_NAME = re.compile(r"#[a-z_]+")  # attribute-name placeholders: #state -> state, #status -> status


@dataclass(frozen=True, slots=True)
class _Update:
    """One Update of a transaction, before serialisation."""

    key: dict[str, Any]
    expression: str
    condition: str | None
    values: Mapping[str, Any]


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def campaign_pk(campaign_id: str) -> str:
    return f"CAMPAIGN#{campaign_id}"


def contact_sk(index: int) -> str:
    return f"CONTACT#{index:07d}"


def _slot(at: float, index: int) -> str:
    return f"{int(at):010d}#{index:07d}"


def outcome_counter(outcome: str) -> str:
    """The META attribute counting contacts that ended with ``outcome``."""
    return "o_" + outcome.replace("-", "_")


@dataclass(frozen=True, slots=True)
class ContactItem:
    campaign_id: str
    index: int
    number: str
    state: str
    version: int
    attempts: int
    name: str | None = None
    timezone: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    outcome: str | None = None
    next_at: float = 0.0
    dial_id: str | None = None
    call_sid: str | None = None
    dialing_at: float | None = None
    calls: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> ContactItem:
        return cls(
            campaign_id=str(item["pk"]).removeprefix("CAMPAIGN#"),
            index=int(item["index"]),
            number=str(item["number"]),
            state=str(item["state"]),
            version=int(item.get("version", 0)),
            attempts=int(item.get("attempts", 0)),
            name=item.get("name"),
            timezone=item.get("timezone"),
            variables=dict(item.get("variables") or {}),
            outcome=item.get("outcome"),
            next_at=float(item.get("next_at", 0)),
            dial_id=item.get("dial_id"),
            call_sid=item.get("call_sid"),
            dialing_at=float(item["dialing_at"]) if item.get("dialing_at") is not None else None,
            calls=tuple(item.get("calls") or ()),
        )


def wake_on_its_way(meta: Mapping[str, Any], at: float, now: float) -> bool:
    """Whether the campaign item ``meta`` records a tick sent for no later than ``at`` and not
    yet due (``record_wake``'s condition, read before sending rather than written)."""
    wake = meta.get("wake_at")
    return wake is not None and int(now) <= int(wake) <= int(at)


class OutboundStore:
    """Typed access to the outbound table; safe to share across requests and threads."""

    def __init__(self, table: str, endpoint_url: str | None = None, client: Any = None) -> None:
        self.table = table
        self._endpoint_url = endpoint_url
        self._client = client
        self.dependency = aws.Dependency("dynamodb", endpoint_url)  # for aws.call's deadline

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb", self._endpoint_url)
        return self._client

    @staticmethod
    def _values(values: Mapping[str, Any]) -> dict[str, Any]:
        from boto3.dynamodb.types import TypeSerializer

        serializer = TypeSerializer()
        return {k: serializer.serialize(_to_dynamo(v)) for k, v in values.items()}

    @staticmethod
    def _item(values: Mapping[str, Any]) -> dict[str, Any]:
        from boto3.dynamodb.types import TypeSerializer

        serializer = TypeSerializer()
        return {k: serializer.serialize(v) for k, v in _to_dynamo(dict(values)).items()}

    @staticmethod
    def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
        from boto3.dynamodb.types import TypeDeserializer

        deserializer = TypeDeserializer()
        plain: dict[str, Any] = _from_dynamo(
            {k: deserializer.deserialize(v) for k, v in item.items()}
        )
        return plain

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        response = self.client.get_item(TableName=self.table, Key=_key(pk, sk), ConsistentRead=True)
        item = response.get("Item")
        return self._plain(item) if item else None

    def _request(
        self,
        key: dict[str, Any],
        expression: str,
        condition: str | None,
        values: Mapping[str, Any],
    ) -> dict[str, Any]:
        """An Update request: ``#name`` placeholders resolved, ``:name`` values serialised."""
        request: dict[str, Any] = {"TableName": self.table, "Key": key}
        request["UpdateExpression"] = expression
        if condition:
            request["ConditionExpression"] = condition
        names = set(_NAME.findall(expression + " " + (condition or "")))
        if names:
            request["ExpressionAttributeNames"] = {n: n[1:] for n in names}
        if values:
            request["ExpressionAttributeValues"] = self._values(
                {f":{k}": v for k, v in values.items()}
            )
        return request

    def _update(
        self, pk: str, sk: str, expression: str, condition: str | None, **values: Any
    ) -> bool:
        """One UpdateItem; False when ``condition`` does not hold."""
        from botocore.exceptions import ClientError

        try:
            self.client.update_item(**self._request(_key(pk, sk), expression, condition, values))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _transact(self, updates: Sequence[_Update]) -> list[str] | None:
        """TransactWriteItems of updates; None on success, else each item's reason code.

        A conflict with another transaction on the same items (two calls ending at once both
        move the campaign's counters) is not a decision: it is retried a few times, jittered."""
        from botocore.exceptions import ClientError

        items = [
            {"Update": self._request(u.key, u.expression, u.condition, u.values)} for u in updates
        ]
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                self.client.transact_write_items(TransactItems=items)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                reasons = exc.response.get("CancellationReasons") or []
                codes = [str(r.get("Code", "None")) for r in reasons]
                if codes and all(c in ("None", "ConditionalCheckFailed") for c in codes):
                    return codes
                if "TransactionConflict" not in codes or attempt == TRANSACTION_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0, 0.05 * 2**attempt))
            else:
                return None
        raise AssertionError("unreachable")  # pragma: no cover

    # Campaigns -------------------------------------------------------------------------------

    def create_campaign(
        self, campaign_id: str, meta: Mapping[str, Any], contacts: Sequence[Mapping[str, Any]]
    ) -> None:
        """Write the contacts, then the campaign (it exists only once all its contacts do)."""
        pk = campaign_pk(campaign_id)
        expires_at = int(meta["expires_at"])
        items = [
            {
                "pk": pk,
                "sk": contact_sk(index),
                "index": index,
                **contact,
                "state": PENDING,
                "version": 0,
                "attempts": 0,
                "next_at": 0,
                "q_pk": f"DUE#{campaign_id}",
                "q_sk": _slot(0, index),
                "expires_at": expires_at,
            }
            for index, contact in enumerate(contacts)
        ]
        for start in range(0, len(items), 25):
            self._batch_put(items[start : start + 25])
        counters = {
            "c_total": len(items),
            "c_pending": len(items),
            "c_live": 0,
            "c_done": 0,
            "c_retries": 0,
        }
        self.client.put_item(
            TableName=self.table,
            Item=self._item({"pk": pk, "sk": "META", **meta, **counters}),
            ConditionExpression="attribute_not_exists(pk)",
        )

    def _batch_put(self, items: Sequence[Mapping[str, Any]]) -> None:
        requests = [{"PutRequest": {"Item": self._item(item)}} for item in items]
        for attempt in range(8):
            response = self.client.batch_write_item(RequestItems={self.table: requests})
            requests = response.get("UnprocessedItems", {}).get(self.table, [])
            if not requests:
                return
            time.sleep(min(1.0, 0.05 * 2**attempt))
        raise RuntimeError("DynamoDB kept throttling the contacts' batch write")

    def get_campaign(self, campaign_id: str) -> dict[str, Any] | None:
        return self._get(campaign_pk(campaign_id), "META")

    def set_status(
        self,
        campaign_id: str,
        allowed_from: Iterable[str],
        status: str,
        now: float,
        reason: str | None = None,
    ) -> bool:
        """Move the campaign to ``status`` if it is in one of ``allowed_from``."""
        allowed = list(allowed_from)
        names = ", ".join(f":f{i}" for i in range(len(allowed)))
        expression = "SET #status = :to, updated_at = :now"
        values: dict[str, Any] = {"to": status, "now": int(now)}
        if reason:
            expression += ", status_reason = :why"
            values["why"] = reason
        else:
            expression += " REMOVE status_reason"
        values.update({f"f{i}": s for i, s in enumerate(allowed)})
        return self._update(
            campaign_pk(campaign_id), "META", expression, f"#status IN ({names})", **values
        )

    def complete_if_done(self, campaign_id: str, now: float) -> bool:
        """running -> completed once no contact is pending or live."""
        return self._update(
            campaign_pk(campaign_id),
            "META",
            "SET #status = :done, updated_at = :now, completed_at = :now",
            "#status = :running AND c_pending = :zero AND c_live = :zero",
            done=COMPLETED,
            now=int(now),
            running=RUNNING,
            zero=0,
        )

    def record_wake(self, campaign_id: str, at: float, now: float) -> bool:
        """Record that a tick for ``at`` has been sent (after sending it: a run killed in between
        leaves a duplicate tick, harmless, never a recorded wake-up no message will bring);
        False if one no later than that was already on its way."""
        return self._update(
            campaign_pk(campaign_id),
            "META",
            "SET wake_at = :at",
            "attribute_not_exists(wake_at) OR wake_at > :at OR wake_at < :now",
            at=int(at),
            now=int(now),
        )

    def take_rate_slot(self, campaign_id: str, interval: int, now_ms: int) -> rate.Slot:
        """Take the campaign's next dial slot if it is free (one conditional write)."""
        from botocore.exceptions import ClientError

        wanted = rate.take(None, now_ms, interval)
        try:
            self.client.update_item(
                TableName=self.table,
                Key=_key(campaign_pk(campaign_id), "RATE"),
                UpdateExpression="SET next_free_ms = :next",
                ConditionExpression="attribute_not_exists(next_free_ms) OR next_free_ms <= :now",
                ExpressionAttributeValues=self._values(
                    {":next": wanted.next_free_ms, ":now": now_ms}
                ),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            current = self._get(campaign_pk(campaign_id), "RATE") or {}
            held = current.get("next_free_ms")
            return rate.take(int(held) if held is not None else None, now_ms, interval)
        return wanted

    def push_rate_slot(self, campaign_id: str, next_free_ms: int) -> None:
        """Move the next slot to ``next_free_ms`` unless it is already later."""
        self._update(
            campaign_pk(campaign_id),
            "RATE",
            "SET next_free_ms = :next",
            "attribute_not_exists(next_free_ms) OR next_free_ms < :next",
            next=next_free_ms,
        )

    # Contacts --------------------------------------------------------------------------------

    def get_contact(self, campaign_id: str, index: int) -> ContactItem | None:
        item = self._get(campaign_pk(campaign_id), contact_sk(index))
        return ContactItem.from_item(item) if item else None

    def contacts_page(
        self, campaign_id: str, limit: int, after: int | None
    ) -> tuple[list[ContactItem], int | None]:
        """Contacts in list order, ``limit`` at a time; the cursor is the last index returned."""
        start = contact_sk(after) if after is not None else "CONTACT#"
        response = self.client.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :from AND :to",
            ExpressionAttributeValues={
                ":pk": {"S": campaign_pk(campaign_id)},
                ":from": {"S": start + ("~" if after is not None else "")},
                ":to": {"S": "CONTACT#~"},
            },
            Limit=limit,
        )
        contacts = [ContactItem.from_item(self._plain(i)) for i in response.get("Items", [])]
        more = "LastEvaluatedKey" in response and contacts
        return contacts, contacts[-1].index if more else None

    def _queue(self, partition: str, upto: float | None, limit: int) -> list[dict[str, Any]]:
        condition = "q_pk = :p"
        values: dict[str, Any] = {":p": {"S": partition}}
        if upto is not None:
            condition += " AND q_sk <= :s"
            values[":s"] = {"S": f"{int(upto):010d}#{_FAR}"}
        response = self.client.query(
            TableName=self.table,
            IndexName=QUEUE_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            Limit=limit,
        )
        return [self._plain(i) for i in response.get("Items", [])]

    def due_contacts(self, campaign_id: str, now: float, limit: int) -> list[ContactItem]:
        """Pending contacts due by ``now``, earliest first (the index lags writes a little:
        the conditional claim is what decides)."""
        return [ContactItem.from_item(i) for i in self._queue(f"DUE#{campaign_id}", now, limit)]

    def next_due_at(self, campaign_id: str) -> float | None:
        items = self._queue(f"DUE#{campaign_id}", None, 1)
        return float(items[0]["next_at"]) if items else None

    def expired_leases(self, campaign_id: str, now: float, limit: int) -> list[ContactItem]:
        return [ContactItem.from_item(i) for i in self._queue(f"LIVE#{campaign_id}", now, limit)]

    def next_lease_expiry(self, campaign_id: str) -> float | None:
        items = self._queue(f"LIVE#{campaign_id}", None, 1)
        return float(str(items[0]["q_sk"]).split("#", 1)[0]) if items else None

    @staticmethod
    def _meta_update(
        campaign_id: str, expression: str, condition: str | None = None, **values: Any
    ) -> _Update:
        return _Update(_key(campaign_pk(campaign_id), "META"), expression, condition, values)

    @staticmethod
    def _contact_update(
        contact: ContactItem | tuple[str, int], expression: str, condition: str, **values: Any
    ) -> _Update:
        campaign_id, index = (
            (contact.campaign_id, contact.index) if isinstance(contact, ContactItem) else contact
        )
        return _Update(
            _key(campaign_pk(campaign_id), contact_sk(index)), expression, condition, values
        )

    def claim(
        self, contact: ContactItem, max_live: int, dial_id: str, now: float, lease_until: float
    ) -> ClaimResult:
        """pending -> dialing, taking one of the campaign's ``max_live`` slots (one transaction)."""
        codes = self._transact(
            [
                self._contact_update(
                    contact,
                    "SET #state = :dialing, version = :next, attempts = attempts + :one,"
                    " dial_id = :dial, dialing_at = :now, q_pk = :live, q_sk = :lease"
                    " REMOVE call_sid",
                    "#state = :pending AND version = :version",
                    dialing=DIALING,
                    next=contact.version + 1,
                    one=1,
                    dial=dial_id,
                    now=now,
                    live=f"LIVE#{contact.campaign_id}",
                    lease=_slot(lease_until, contact.index),
                    pending=PENDING,
                    version=contact.version,
                ),
                self._meta_update(
                    contact.campaign_id,
                    "SET c_live = c_live + :one, c_pending = c_pending - :one",
                    "#status = :running AND c_live < :max",
                    one=1,
                    running=RUNNING,
                    max=max_live,
                ),
            ]
        )
        if codes is None:
            return "claimed"
        return "stale" if codes[0] == "ConditionalCheckFailed" else "blocked"

    def dialed(
        self, campaign_id: str, index: int, dial_id: str, call_sid: str, lease_until: float
    ) -> bool:
        """dialing -> calling: Twilio accepted the call (False: a callback already finished it)."""
        return self._update(
            campaign_pk(campaign_id),
            contact_sk(index),
            "SET #state = :calling, call_sid = :sid, q_sk = :lease",
            "dial_id = :dial AND #state = :dialing",
            calling=CALLING,
            sid=call_sid,
            lease=_slot(lease_until, index),
            dial=dial_id,
            dialing=DIALING,
        )

    def extend_lease(
        self, contact: ContactItem, lease_until: float, call_sid: str | None = None
    ) -> bool:
        """Keep a live call's slot (Twilio says it is still on); adopt ``call_sid`` if given."""
        expression = "SET q_sk = :lease"
        values: dict[str, Any] = {"lease": _slot(lease_until, contact.index)}
        if call_sid:
            expression += ", call_sid = :sid, #state = :calling"
            values.update(sid=call_sid, calling=CALLING)
        return self._update(
            campaign_pk(contact.campaign_id),
            contact_sk(contact.index),
            expression,
            "dial_id = :dial AND #state IN (:dialing, :calling_state)",
            dial=contact.dial_id,
            dialing=DIALING,
            calling_state=CALLING,
            **values,
        )

    def finish(
        self,
        campaign_id: str,
        index: int,
        dial_id: str,
        outcome: str,
        retry_at: float | None,
        now: float,
        call_sid: str | None,
        error: str | None = None,
    ) -> bool:
        """dialing/calling -> pending again (``retry_at``) or done, releasing the slot.
        False when this attempt was already finished (a duplicate callback)."""
        call = {"sid": call_sid, "outcome": outcome, "at": int(now)}
        if error:
            call["error"] = error[:300]
        common: dict[str, Any] = {
            "out": outcome,
            "call": [call],
            "empty": [],
            "dial": dial_id,
            "dialing": DIALING,
            "calling": CALLING,
            "one": 1,
        }
        condition = "dial_id = :dial AND #state IN (:dialing, :calling)"
        if retry_at is not None:
            contact = self._contact_update(
                (campaign_id, index),
                "SET #state = :pending, version = version + :one, outcome = :out,"
                " next_at = :at, q_pk = :due, q_sk = :slot,"
                " calls = list_append(if_not_exists(calls, :empty), :call)"
                " REMOVE dial_id, dialing_at",
                condition,
                pending=PENDING,
                at=retry_at,
                due=f"DUE#{campaign_id}",
                slot=_slot(retry_at, index),
                **common,
            )
            meta = self._meta_update(
                campaign_id,
                "SET c_live = c_live - :one, c_pending = c_pending + :one,"
                " c_retries = c_retries + :one",
                one=1,
            )
        else:
            contact = self._contact_update(
                (campaign_id, index),
                "SET #state = :done, version = version + :one, outcome = :out,"
                " calls = list_append(if_not_exists(calls, :empty), :call)"
                " REMOVE q_pk, q_sk, dial_id",
                condition,
                done=DONE,
                **common,
            )
            counter = outcome_counter(outcome)
            meta = self._meta_update(
                campaign_id,
                f"SET c_live = c_live - :one, c_done = c_done + :one ADD {counter} :one",
                one=1,
            )
        return self._transact([contact, meta]) is None

    def undial(self, contact: ContactItem, at: float) -> bool:
        """dialing -> pending: the call was never created, so the attempt does not count."""
        update = self._contact_update(
            contact,
            "SET #state = :pending, version = version + :one, attempts = attempts - :one,"
            " next_at = :at, q_pk = :due, q_sk = :slot REMOVE dial_id, dialing_at",
            "dial_id = :dial AND #state = :dialing",
            pending=PENDING,
            one=1,
            at=at,
            due=f"DUE#{contact.campaign_id}",
            slot=_slot(at, contact.index),
            dial=contact.dial_id,
            dialing=DIALING,
        )
        meta = self._meta_update(
            contact.campaign_id, "SET c_live = c_live - :one, c_pending = c_pending + :one", one=1
        )
        return self._transact([update, meta]) is None

    def reschedule(self, contact: ContactItem, at: float) -> bool:
        """A pending contact is not due before ``at`` (its calling window is closed)."""
        return self._update(
            campaign_pk(contact.campaign_id),
            contact_sk(contact.index),
            "SET next_at = :at, q_sk = :slot, version = :next",
            "#state = :pending AND version = :version",
            at=at,
            slot=_slot(at, contact.index),
            next=contact.version + 1,
            pending=PENDING,
            version=contact.version,
        )

    def skip(self, contact: ContactItem, outcome: str) -> bool:
        """pending -> done without a call (the number is on the do-not-call list)."""
        update = self._contact_update(
            contact,
            "SET #state = :done, version = :next, outcome = :out REMOVE q_pk, q_sk",
            "#state = :pending AND version = :version",
            done=DONE,
            next=contact.version + 1,
            out=outcome,
            pending=PENDING,
            version=contact.version,
        )
        meta = self._meta_update(
            contact.campaign_id,
            f"SET c_pending = c_pending - :one, c_done = c_done + :one"
            f" ADD {outcome_counter(outcome)} :one",
            one=1,
        )
        return self._transact([update, meta]) is None

    # Dial requests ---------------------------------------------------------------------------

    def put_dial(self, dial_id: str, fields: Mapping[str, Any]) -> None:
        self.client.put_item(
            TableName=self.table, Item=self._item({"pk": f"DIAL#{dial_id}", "sk": "DIAL", **fields})
        )

    def get_dial(self, dial_id: str) -> dict[str, Any] | None:
        return self._get(f"DIAL#{dial_id}", "DIAL")

    def answered(
        self, dial_id: str, call_sid: str, answered_by: str | None
    ) -> dict[str, Any] | None:
        """Record what the TwiML webhook learnt (the CallSid, AMD's verdict) and return the dial
        request, in one write; None if there is no such dial."""
        from botocore.exceptions import ClientError

        expression = "SET call_sid = :sid"
        values: dict[str, Any] = {"sid": call_sid}
        if answered_by:
            expression += ", answered_by = :by"
            values["by"] = answered_by
        request = self._request(
            _key(f"DIAL#{dial_id}", "DIAL"), expression, "attribute_exists(pk)", values
        )
        try:
            response = self.client.update_item(**request, ReturnValues="ALL_NEW")
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise
        return self._plain(response["Attributes"])

    # Do-not-call -----------------------------------------------------------------------------

    def dnc_add(self, numbers: Sequence[str], now: float, reason: str | None) -> None:
        items = [
            {"pk": "DNC", "sk": f"NUMBER#{n}", "number": n, "added_at": int(now), "reason": reason}
            for n in dict.fromkeys(numbers)
        ]
        for start in range(0, len(items), 25):
            self._batch_put(items[start : start + 25])

    def dnc_remove(self, number: str) -> bool:
        response = self.client.delete_item(
            TableName=self.table, Key=_key("DNC", f"NUMBER#{number}"), ReturnValues="ALL_OLD"
        )
        return bool(response.get("Attributes"))

    def dnc_contains(self, number: str) -> bool:
        return self._get("DNC", f"NUMBER#{number}") is not None

    def dnc_page(self, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": "DNC"}},
            "Limit": limit,
        }
        if after:
            request["ExclusiveStartKey"] = _key("DNC", f"NUMBER#{after}")
        response = self.client.query(**request)
        entries = [
            {k: v for k, v in self._plain(i).items() if k in ("number", "added_at", "reason")}
            for i in response.get("Items", [])
        ]
        more = "LastEvaluatedKey" in response and entries
        return entries, entries[-1]["number"] if more else None


@cache
def get_outbound_store(table: str, endpoint_url: str | None) -> OutboundStore:
    """One per table and endpoint for the process (its client is made on first use)."""
    return OutboundStore(table, endpoint_url)
