"""Outbound calls and campaigns on the whole local stack: the API places calls with the Twilio
emulator, which rings the number, plays the phone that answers (or is busy, or a machine) and
streams the answered calls to the edge and the Vapi emulator; the dialer and the worker run as
their own processes. Limits are measured from the emulator's own log of what it received."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import boto3
import httpx
import pytest

from tests.e2e.helpers import eventually, record_when

pytestmark = pytest.mark.e2e


@pytest.fixture
def outbound(clean_stack):
    """The stack with the emulator's outbound side reset (log, account CPS)."""
    emulator = clean_stack.twilio.outbound
    emulator.log.clear()
    emulator.by_sid.clear()
    emulator.cps = 10.0
    yield clean_stack
    eventually(
        lambda: all(c.task is None or c.task.done() for c in emulator.log),
        limit_s=30,
        what="every emulated call ended",
    )


def admin(stack, method, path, body=None):
    response = httpx.request(
        method, f"{stack.api_url}{path}", json=body, headers=stack.admin_headers(), timeout=30
    )
    return response.status_code, response.json()


def campaign(stack, campaign_id):
    return admin(stack, "GET", f"/campaigns/{campaign_id}?limit=1000")[1]


def new_campaign(stack, numbers, **settings):
    """Create a campaign calling ``numbers`` with ``settings`` (API names); its id."""
    body = {**settings, "contacts": [{"number": n} for n in numbers]}
    status, created = admin(stack, "POST", "/campaigns", body)
    assert status == 201, created
    return created["campaignId"]


def wait_for_status(stack, campaign_id, wanted, limit_s):
    found = {}

    def check():
        found["view"] = campaign(stack, campaign_id)
        return found["view"]["status"] == wanted

    try:
        eventually(check, limit_s, f"campaign {wanted}")
    except AssertionError:
        dialer = stack.logs("dialer")[-30:]
        raise AssertionError(f"{found.get('view')}\ndialer log: {dialer}") from None
    return found["view"]


def creates_by_number(stack):
    return Counter(call.to for call in stack.twilio.outbound.log)


def vapi_call_for(stack, call_sid):
    for emulated in stack.vapi.calls.values():
        metadata = (emulated.record.get("assistantOverrides") or {}).get("metadata") or {}
        if metadata.get("callSid") == call_sid:
            return emulated
    return None


def test_one_call_streams_to_the_assistant_and_is_recorded_like_an_inbound_one(outbound):
    stack = outbound
    status, body = admin(
        stack,
        "POST",
        "/calls",
        {"to": "+15550170001", "variables": {"name": "Ada"}, "firstMessage": "Hi {{name}}"},
    )
    assert status == 201, body
    sid = body["callSid"]
    record = record_when(stack, sid, lambda r: r.get("outcome") and r.get("transcript"), 20)
    assert (record["direction"], record["outcome"], record["call_status"]) == (
        "outbound-api",
        "answered",
        "completed",
    )
    assert (record["to"], record["from"]) == ("+15550170001", "+15550100002")
    assert record["session"]["to"] == "+15550170001"
    assert record["transcript"].startswith("AI: ")
    statuses = [e["status"] for e in record["timeline"] if e["kind"] == "twilio.call-status"]
    assert sorted(statuses) == sorted(["initiated", "ringing", "in-progress", "completed"])
    assert {e.get("event") for e in record["timeline"]} >= {"stream-started", "stream-stopped"}
    # The callee heard the assistant; the Vapi call carried the variables and first message.
    callee = stack.twilio.outbound.by_sid[sid].report
    assert callee.protocol_errors == []
    assert callee.heard_speech_ms() >= 500
    vapi = vapi_call_for(stack, sid)
    overrides = vapi.record["assistantOverrides"]
    assert overrides["firstMessage"] == "Hi {{name}}"
    assert overrides["variableValues"]["name"] == "Ada"
    assert vapi.record["customer"] == {"number": "+15550170001"}
    # An unknown assistant is refused before anything is dialled.
    status, body = admin(stack, "POST", "/calls", {"to": "+15550170002", "assistantId": "nope"})
    assert (status, body["error"]) == (422, "unknown assistant 'nope' (Vapi has no such id)")
    assert len(stack.twilio.outbound.log) == 1


def test_answering_machines_are_hung_up_on_or_get_the_message(outbound):
    stack = outbound
    _, hangup = admin(stack, "POST", "/calls", {"to": "+15550170094", "machineDetection": "hangup"})
    _, message = admin(
        stack,
        "POST",
        "/calls",
        {
            "to": "+15550170194",
            "machineDetection": "message",
            "voicemailMessage": "Hello, this is Acme: please call us back.",
        },
    )
    for body in (hangup, message):
        record_when(stack, body["callSid"], lambda r: r.get("outcome") == "machine", 20)
    hung_up = stack.twilio.outbound.by_sid[hangup["callSid"]]
    assert hung_up.answered_by == "machine_start"
    assert hung_up.report is None  # <Hangup/>: never streamed
    assert vapi_call_for(stack, hangup["callSid"]) is None
    left = stack.twilio.outbound.by_sid[message["callSid"]]
    assert left.answered_by == "machine_end_beep"  # DetectMessageEnd: after the beep
    vapi = vapi_call_for(stack, message["callSid"])
    assert vapi.record["assistantOverrides"]["firstMessage"] == (
        "Hello, this is Acme: please call us back."
    )
    record = record_when(stack, message["callSid"], lambda r: r.get("answered_by"), 10)
    assert record["answered_by"] == "machine_end_beep"


def test_a_forty_contact_campaign_keeps_its_limits_retries_and_skips_do_not_call(outbound):
    stack = outbound
    stack.twilio.outbound.cps = 1.0  # the account's CPS, Twilio's default
    humans = [f"+1555020{i:04d}" for i in range(30)]
    late = [f"+1555021{i:04d}" for i in range(4)]  # their window opens 10 s after the start
    busy, silent = ["+15550220091", "+15550221091"], ["+15550220092", "+15550221092"]
    blocked = ["+15550230001", "+15550230002"]
    assert admin(stack, "POST", "/dnc", {"numbers": blocked})[0] == 200
    now = datetime.now(UTC)
    opening = now + timedelta(seconds=10)
    contacts = [{"number": n} for n in humans + busy + silent + blocked]
    contacts += [{"number": n, "timezone": "UTC"} for n in late]
    contacts += [{"number": "555-0100"}, {"number": humans[0]}]  # two bad rows
    status, created = admin(
        stack,
        "POST",
        "/campaigns",
        {
            "name": "e2e forty",
            "maxConcurrent": 4,
            "maxCallsPerSecond": 1,
            "ringTimeoutSeconds": 5,
            "retries": {"max": 2, "backoffSeconds": 2},
            "window": {
                "start": opening.strftime("%H:%M:%S"),
                "end": (now + timedelta(hours=3)).strftime("%H:%M:%S"),
                "timezone": "Etc/GMT-1",  # UTC+1: open now, while UTC opens in 10 s
            },
            "contacts": contacts,
        },
    )
    assert status == 201, created
    assert created["contacts"] == 40
    assert [(r["row"], r["number"]) for r in created["rejected"]] == [
        (41, "555-0100"),
        (42, humans[0]),
    ]
    campaign_id = created["campaignId"]
    assert admin(stack, "POST", f"/campaigns/{campaign_id}/start", None)[0] == 200
    for _ in range(10):  # redelivered ticks: each is a full dialer run
        stack_sqs_tick(stack, campaign_id)
    view = wait_for_status(stack, campaign_id, "completed", limit_s=120)

    emulator = stack.twilio.outbound
    assert emulator.max_per_second() <= 1  # any one-second window, as Twilio received them
    assert emulator.max_concurrent() <= 4
    by_number = {c["number"]: c for c in view["contacts"]}
    assert all(c["state"] == "done" and c["outcome"] for c in view["contacts"])
    assert {n: by_number[n]["outcome"] for n in busy + silent + blocked} == {
        **dict.fromkeys(busy, "busy"),
        **dict.fromkeys(silent, "no-answer"),
        **dict.fromkeys(blocked, "do-not-call"),
    }
    assert {by_number[n]["outcome"] for n in humans + late} == {"answered"}
    counts = view["counts"]
    assert counts["outcomes"] == {
        "answered": 34,
        "machine": 0,
        "busy": 2,
        "no-answer": 2,
        "failed": 0,
        "canceled": 0,
        "do-not-call": 2,
    }
    # Every dial Twilio saw is one attempt of its contact: nothing dialled twice, DNC never.
    dialled = creates_by_number(stack)
    assert dialled == {n: c["attempts"] for n, c in by_number.items() if c["attempts"]}
    assert all(dialled[n] == 3 for n in busy + silent)  # 1 + 2 retries
    assert not set(blocked) & set(dialled)
    # Out-of-window contacts waited for their window.
    first_late = min(c.requested_at for c in emulator.log if c.to in late)
    assert first_late >= opening.timestamp()
    # Retries came after the back-off: 2 s, then 4 s after the previous attempt ended.
    for number in busy + silent:
        calls = sorted((c for c in emulator.log if c.to == number), key=lambda c: c.requested_at)
        for (before, after), backoff in zip(itertools.pairwise(calls), (2, 4), strict=True):
            assert after.requested_at - before.ended_at >= backoff - 0.05


def stack_sqs(stack):
    return boto3.session.Session().client(
        "sqs", endpoint_url=stack.env["AWS_ENDPOINT_URL"], region_name="us-east-1"
    )


def stack_sqs_tick(stack, campaign_id):
    """Put a tick in the dialer queue exactly as the API does (a redelivery of the start)."""
    body = json.dumps({"v": 1, "campaignId": campaign_id})
    stack_sqs(stack).send_message(QueueUrl=stack.env["DIALER_QUEUE_URL"], MessageBody=body)


def test_a_tick_a_killed_dialer_had_received_comes_back_and_the_campaign_completes(outbound):
    """The campaign's only tick (the start's) is received by a dialer that dies before it is done:
    nothing else will wake the campaign, so SQS's redelivery after the visibility timeout must
    (the e2e stack's QUEUE_VISIBILITY: 15 s instead of 360)."""
    stack = outbound
    numbers = [f"+1555027{i:04d}" for i in range(3)]
    campaign_id = new_campaign(stack, numbers, maxConcurrent=2)
    sqs = stack_sqs(stack)

    def start_and_die_holding_its_tick() -> None:
        assert admin(stack, "POST", f"/campaigns/{campaign_id}/start")[0] == 200
        # We receive the tick and never delete it, unless the killed loop's last long poll, still
        # open in SQS for up to a second, took it first: either way a dead consumer holds it.
        sqs.receive_message(QueueUrl=stack.env["DIALER_QUEUE_URL"], WaitTimeSeconds=2)
        counts = sqs.get_queue_attributes(
            QueueUrl=stack.env["DIALER_QUEUE_URL"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        assert counts == {
            "ApproximateNumberOfMessages": "0",
            "ApproximateNumberOfMessagesNotVisible": "1",
        }
        assert not stack.twilio.outbound.log  # nothing dialled: the tick is held, not run

    stack.restart("dialer", while_down=start_and_die_holding_its_tick)
    view = wait_for_status(stack, campaign_id, "completed", limit_s=60)
    assert view["counts"]["outcomes"]["answered"] == len(numbers)
    assert creates_by_number(stack) == dict.fromkeys(numbers, 1)


def test_out_of_window_contacts_wait_for_their_window(outbound):
    stack = outbound
    start = datetime.now(UTC) + timedelta(hours=2)
    window = {
        "start": start.strftime("%H:%M"),
        "end": (start + timedelta(hours=1)).strftime("%H:%M"),
        "timezone": "UTC",
    }
    campaign_id = new_campaign(stack, ["+15550240001", "+15550240002"], window=window)
    admin(stack, "POST", f"/campaigns/{campaign_id}/start")
    eventually(
        lambda: all("nextAttemptAt" in c for c in campaign(stack, campaign_id)["contacts"]),
        limit_s=10,
        what="contacts rescheduled to their window",
    )
    view = campaign(stack, campaign_id)
    assert view["status"] == "running"
    for contact in view["contacts"]:
        assert contact["state"] == "pending"
        assert abs(contact["nextAttemptAt"] - start.replace(second=0).timestamp()) < 61
    assert stack.twilio.outbound.log == []
    assert admin(stack, "POST", f"/campaigns/{campaign_id}/cancel")[1]["status"] == "cancelled"


def test_pause_stops_new_dials_while_live_calls_finish_and_resume_completes(outbound):
    stack = outbound
    numbers = [f"+1555025{i:04d}" for i in range(10)]
    campaign_id = new_campaign(stack, numbers, maxConcurrent=2, maxCallsPerSecond=5)
    admin(stack, "POST", f"/campaigns/{campaign_id}/start")
    log = stack.twilio.outbound.log
    eventually(lambda: len(log) >= 3, limit_s=20, what="three calls placed")
    assert admin(stack, "POST", f"/campaigns/{campaign_id}/pause")[1]["status"] == "paused"
    paused_at = time.time()
    live = [c for c in log if c.ended_at is None]
    eventually(
        lambda: campaign(stack, campaign_id)["counts"]["inProgress"] == 0,
        limit_s=20,
        what="live calls finished",
    )
    time.sleep(2)  # a dialer woken by those calls' ends must still not dial
    view = campaign(stack, campaign_id)
    assert view["status"] == "paused"
    # A dial past its last check when the pause landed (one HTTP request) may still arrive.
    assert all(c.requested_at <= paused_at + 0.5 for c in log)
    placed = len(log)
    assert placed < len(numbers)
    assert {c.to for c in live} <= {c["number"] for c in view["contacts"] if c["outcome"]}
    assert view["counts"]["outcomes"]["answered"] == placed
    assert admin(stack, "POST", f"/campaigns/{campaign_id}/resume")[1]["status"] == "running"
    view = wait_for_status(stack, campaign_id, "completed", limit_s=40)
    assert view["counts"]["outcomes"]["answered"] == len(numbers)
    assert creates_by_number(stack) == dict.fromkeys(numbers, 1)


def test_a_killed_dialer_loses_no_contact_and_dials_none_twice(outbound):
    stack = outbound
    numbers = [f"+1555026{i:04d}" for i in range(12)]
    campaign_id = new_campaign(
        stack, numbers, maxConcurrent=3, maxCallsPerSecond=4, ringTimeoutSeconds=5
    )
    admin(stack, "POST", f"/campaigns/{campaign_id}/start")
    eventually(lambda: len(stack.twilio.outbound.log) >= 4, limit_s=20, what="four calls placed")
    stack.restart("dialer")  # SIGKILL mid-campaign, then a fresh process (a new Lambda)
    view = wait_for_status(stack, campaign_id, "completed", limit_s=60)
    assert view["counts"]["outcomes"]["answered"] == len(numbers)
    assert creates_by_number(stack) == dict.fromkeys(numbers, 1)
    assert all(c["attempts"] == 1 for c in view["contacts"])
