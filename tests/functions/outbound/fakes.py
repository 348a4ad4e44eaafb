"""Fakes for the outbound tests: a Twilio Calls API (httpx MockTransport), a clock to drive."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

import httpx

from functions.outbound.campaign import CampaignSettings
from functions.outbound.policy import Retries
from functions.outbound.pump import Pump, TwilioAccount
from functions.outbound.queue import DialerQueue
from functions.outbound.results import Sinks
from functions.outbound.store import RUNNING, OutboundStore
from functions.outbound.windows import CallingWindow
from functions.storage import Store
from tests.functions.conftest import ACCOUNT_SID, AUTH_TOKEN

START = 1_800_000_000.0
OUR_NUMBER = "+14155550199"


class Clock:
    """Wall time that moves only when told (or when the pump sleeps)."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class FakeTwilio:
    """Calls.create / fetch / list. ``answer`` may return an httpx.Response to refuse a create
    or raise to simulate a crash; by default every create succeeds with status "queued"."""

    clock: Clock
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: list[dict[str, list[str]]] = field(default_factory=list)  # the forms, in order
    created_at: list[float] = field(default_factory=list)  # clock time of each create
    forms: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # by CallSid
    answer: Callable[[dict[str, list[str]]], httpx.Response | None] = lambda form: None

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"].startswith("Basic ")
        path = request.url.path
        base = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls"
        if request.method == "POST" and path == base + ".json":
            form = parse_qs(request.content.decode(), keep_blank_values=True)
            refusal = self.answer(form)  # may raise: the request "got lost"
            if refusal is not None:
                return refusal
            sid = f"CA{uuid.uuid4().hex}"
            call = {
                "sid": sid,
                "to": form["To"][0],
                "from": form["From"][0],
                "status": "queued",
                "date_created": formatdate(self.clock(), usegmt=True),
            }
            self.calls[sid] = call
            self.forms[sid] = form
            self.created.append(form)
            self.created_at.append(self.clock())
            return httpx.Response(201, json=call)
        if request.method == "GET" and path == base + ".json":
            to, from_ = request.url.params.get("To"), request.url.params.get("From")
            found = [
                c for c in reversed(self.calls.values()) if c["to"] == to and c["from"] == from_
            ]
            return httpx.Response(200, json={"calls": found})
        if request.method == "GET" and path.startswith(base + "/"):
            sid = path.rsplit("/", 1)[1].removesuffix(".json")
            if sid in self.calls:
                return httpx.Response(200, json=self.calls[sid])
            return httpx.Response(404, json={"code": 20404, "message": "not found"})
        return httpx.Response(500)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))

    def dialled(self) -> list[str]:
        return [form["To"][0] for form in self.created]


def settings(**changes: Any) -> CampaignSettings:
    values: dict[str, Any] = {
        "assistant_id": "asst-1",
        "from_number": OUR_NUMBER,
        "api_base": "https://api.example.com",
        "max_concurrent": 10,
        "max_calls_per_second": 100.0,
        "ring_timeout_seconds": 20,
        "retries": Retries(),
    }
    values.update(changes)
    return CampaignSettings(**values)


def create_campaign(
    store: OutboundStore,
    numbers: list[str],
    *,
    status: str = RUNNING,
    now: float = START,
    timezone: str | None = None,
    **changes: Any,
) -> str:
    campaign_id = uuid.uuid4().hex
    meta = {
        "campaign_id": campaign_id,
        "status": status,
        "created_at": int(now),
        "expires_at": int(now) + 86_400,
        "settings": settings(**changes).to_item(),
    }
    rows = [{"number": n, "timezone": timezone, "variables": {}} for n in numbers]
    store.create_campaign(campaign_id, meta, rows)
    return campaign_id


@dataclass
class Rig:
    """A pump on moto with the fake Twilio and a driven clock."""

    store: OutboundStore
    records: Store
    queue: DialerQueue
    twilio: FakeTwilio
    clock: Clock
    pump: Pump
    sent: list[dict[str, Any]] = field(default_factory=list)

    def ticks(self) -> list[dict[str, Any]]:
        """Ticks sent to the dialer queue since the last call (delayed ones too)."""
        found, self.sent[:] = list(self.sent), []
        return found


def rig(aws: Any, check_after_s: int = 60) -> Rig:
    env = aws.env
    clock = Clock()
    store = OutboundStore(env["OUTBOUND_TABLE"], client=aws.dynamodb)
    records = Store(env["SESSIONS_TABLE"], client=aws.dynamodb)
    queue = DialerQueue(env["DIALER_QUEUE_URL"], client=aws.sqs)
    twilio = FakeTwilio(clock)
    sent: list[dict[str, Any]] = []
    original = queue.tick

    def tick(campaign_id: str, delay_s: float = 0, at: float | None = None) -> None:
        sent.append({"campaignId": campaign_id, "delay": delay_s, "at": at})
        original(campaign_id, delay_s, at)

    queue.tick = tick  # type: ignore[method-assign]
    account = TwilioAccount(twilio.client(), "https://twilio.test", ACCOUNT_SID, AUTH_TOKEN)
    pump = Pump(
        store=store,
        twilio=account,
        sinks=Sinks(store, records, queue),
        check_after_s=check_after_s,
        logger=logging.getLogger("tests.dialer"),
        clock=clock,
        sleep=clock.sleep,
    )
    return Rig(store, records, queue, twilio, clock, pump, sent)


def window_closed_now(now: float) -> CallingWindow:
    """A UTC window that opens an hour after ``now`` and lasts two hours."""
    from datetime import UTC, datetime, timedelta

    start = datetime.fromtimestamp(now, UTC) + timedelta(hours=1)
    end = start + timedelta(hours=2)
    return CallingWindow.parse(start.strftime("%H:%M:%S"), end.strftime("%H:%M:%S"))


def end_call(rig: Rig, call_sid: str, status: str, answered_by: str | None = None) -> str:
    """Twilio's final status callback for ``call_sid``, through the worker's outbound part."""
    from urllib.parse import parse_qs as query
    from urllib.parse import urlsplit

    from functions.events import twilio_event
    from functions.outbound import status as outbound_status
    from functions.outbound.dial import DIAL_PARAM
    from voicebridge.config import load_settings

    form = rig.twilio.forms[call_sid]
    dial_id = query(urlsplit(form["StatusCallback"][0]).query)["dial"][0]
    rig.twilio.calls[call_sid]["status"] = status
    params = {"CallSid": call_sid, "CallStatus": status, "SequenceNumber": "3"}
    if answered_by:
        params["AnsweredBy"] = answered_by
    envelope = twilio_event(params, rig.clock(), {DIAL_PARAM: dial_id})
    return outbound_status.apply(envelope, rig.records, load_settings("worker"), rig.clock())
