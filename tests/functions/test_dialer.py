"""functions.dialer.handler: SQS ticks in, one run per campaign per batch, partial failures."""

from __future__ import annotations

import json
import time

import pytest

from functions import dialer
from functions.outbound.queue import Tick
from functions.outbound.store import OutboundStore
from tests.functions.conftest import FakeContext
from tests.functions.outbound.fakes import Clock, FakeTwilio, create_campaign

NUMBERS = [f"+1415555{i:04d}" for i in range(4)]


def sqs_event(*bodies: str) -> dict:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"r{i}",
                "body": body,
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:dialer",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


@pytest.fixture
def twilio(monkeypatch):
    fake = FakeTwilio(Clock(time.time()))
    monkeypatch.setattr(dialer, "_http", fake.client)
    return fake


@pytest.fixture
def store(aws):
    return OutboundStore(aws.env["OUTBOUND_TABLE"], client=aws.dynamodb)


def test_a_redelivered_batch_dials_each_contact_once(aws, twilio, store):
    campaign_id = create_campaign(store, NUMBERS, now=time.time())
    tick = Tick(campaign_id).to_json()
    event = sqs_event(tick, tick, tick)  # three ticks of one campaign: one run
    assert dialer.handler(event, FakeContext()) == {"batchItemFailures": []}
    assert dialer.handler(event, FakeContext()) == {"batchItemFailures": []}  # redelivered
    assert twilio.dialled() == NUMBERS


def test_a_tick_for_later_than_sqs_can_delay_is_sent_on(aws, twilio, store):
    campaign_id = create_campaign(store, NUMBERS, now=time.time())
    later = int(time.time()) + 3600
    event = sqs_event(Tick(campaign_id, later).to_json(), "not a tick")
    assert dialer.handler(event, FakeContext()) == {"batchItemFailures": []}
    assert twilio.created == []  # not woken yet
    url = aws.env["DIALER_QUEUE_URL"]
    attributes = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"


def test_a_failed_run_leaves_its_ticks_for_redelivery(aws, twilio, store, monkeypatch):
    good = create_campaign(store, NUMBERS[:1], now=time.time())
    bad = create_campaign(store, NUMBERS[1:2], now=time.time())
    original = dialer.Pump.run

    def run(self, campaign_id, budget_s):
        if campaign_id == bad:
            raise RuntimeError("DynamoDB throttled")
        return original(self, campaign_id, budget_s)

    monkeypatch.setattr(dialer.Pump, "run", run)
    event = sqs_event(Tick(good).to_json(), Tick(bad).to_json())
    assert dialer.handler(event, FakeContext()) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert twilio.dialled() == NUMBERS[:1]


def test_the_run_budget_leaves_room_before_the_lambda_timeout():
    class Context(FakeContext):
        def get_remaining_time_in_millis(self) -> int:
            return 60_000

    assert dialer._budget(Context()) == 40.0
    assert dialer._budget(None) == 40.0

    class Late(FakeContext):
        def get_remaining_time_in_millis(self) -> int:
            return 10_000

    assert dialer._budget(Late()) == 0.0


def test_ticks_are_strict():
    assert Tick.from_json('{"v":1,"campaignId":"c1","at":5}') == Tick("c1", 5)
    for body in ('{"v":2,"campaignId":"c"}', '{"v":1}', '{"v":1,"campaignId":"c","at":1.5}', "[]"):
        with pytest.raises(ValueError, match="tick"):
            Tick.from_json(body)
    assert json.loads(Tick("c1").to_json()) == {"v": 1, "campaignId": "c1"}
