"""The dialer on moto with a fake Twilio and a driven clock: limits, exactly-once, crashes."""

from __future__ import annotations

import dataclasses
import itertools
import json

import httpx
import pytest

from functions.outbound import rate
from functions.outbound.policy import Retries
from functions.outbound.store import CALLING, DIALING, DONE, PAUSED, PENDING, RUNNING
from tests.functions.outbound.fakes import (
    OUR_NUMBER,
    create_campaign,
    end_call,
    rig,
    window_closed_now,
)

NUMBERS = [f"+1415555{i:04d}" for i in range(6)]


def contacts(r, campaign_id):
    items, _ = r.store.contacts_page(campaign_id, 100, None)
    return items


def sids(r, campaign_id):
    return [c.call_sid for c in contacts(r, campaign_id) if c.call_sid]


def queued(aws):
    """Ticks waiting in the dialer queue now (received and deleted)."""
    url = aws.env["DIALER_QUEUE_URL"]
    found = []
    while got := aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for message in got:
            found.append(json.loads(message["Body"]))
            aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


def test_dials_up_to_max_concurrent_and_the_next_when_a_call_ends(aws):
    r = rig(aws)
    campaign_id = create_campaign(r.store, NUMBERS, max_concurrent=2)
    assert r.pump.run(campaign_id, 30) == "full"
    assert r.twilio.dialled() == NUMBERS[:2]
    meta = r.store.get_campaign(campaign_id)
    assert (meta["c_live"], meta["c_pending"]) == (2, 4)
    assert r.pump.run(campaign_id, 30) == "full"  # nothing freed: nothing dialled
    assert len(r.twilio.created) == 2
    queued(aws)
    first = sids(r, campaign_id)[0]
    assert end_call(r, first, "completed") == "answered"
    assert [t["campaignId"] for t in queued(aws)] == [campaign_id]  # the freed slot wakes us
    r.pump.run(campaign_id, 30)
    assert r.twilio.dialled() == NUMBERS[:3]
    assert r.store.get_campaign(campaign_id)["c_live"] == 2


def test_calls_are_paced_to_the_calls_per_second_cap(aws):
    r = rig(aws)
    campaign_id = create_campaign(r.store, NUMBERS, max_calls_per_second=2.0)
    r.pump.run(campaign_id, 30)
    assert len(r.twilio.created) == len(NUMBERS)
    gaps = [b - a for a, b in zip(r.twilio.created_at, r.twilio.created_at[1:], strict=False)]
    assert min(gaps) >= rate.interval_ms(2.0) / 1000 - 1e-6
    assert max(gaps) < 0.6  # and no slower than the cap needs


def test_pacing_counts_from_when_the_previous_request_was_answered(aws):
    """Twilio counts arrivals: a request slow on the way must not bring the next one closer."""
    r = rig(aws)
    campaign_id = create_campaign(r.store, NUMBERS[:3], max_calls_per_second=1.0)
    slow = {"first": True}

    def travel(form):
        if slow.pop("first", False):
            r.clock.now += 0.3  # this request reaches Twilio 300 ms after it was sent
        return None

    r.twilio.answer = travel
    r.pump.run(campaign_id, 30)
    arrivals = r.twilio.created_at
    assert len(arrivals) == 3
    assert min(b - a for a, b in itertools.pairwise(arrivals)) >= 1.0


def test_a_redelivered_tick_or_a_racing_dialer_dials_nothing_twice(aws):
    r = rig(aws)
    campaign_id = create_campaign(r.store, NUMBERS, max_concurrent=3)
    stale = r.store.due_contacts(campaign_id, r.clock(), 10)  # what a second run listed
    r.pump.run(campaign_id, 30)
    r.pump.run(campaign_id, 30)  # the same tick again
    assert r.twilio.dialled() == NUMBERS[:3]
    # A racing run holding the old listing cannot claim what the first one took.
    settings = json.loads(json.dumps(r.store.get_campaign(campaign_id)["settings"]))
    from functions.outbound.campaign import CampaignSettings

    parsed = CampaignSettings.from_item(settings)
    assert [r.pump._attempt(c, parsed, r.clock() + 30) for c in stale[:3]] == ["stale"] * 3
    assert len(r.twilio.created) == 3


class Crash(BaseException):
    """The Lambda dies mid-dial (a timeout or an OOM kill: nothing of ours runs after it)."""


@pytest.mark.parametrize("reached_twilio", [False, True])
def test_a_crash_between_claim_and_create_is_reconciled_before_redialing(aws, reached_twilio):
    r = rig(aws, check_after_s=60)
    campaign_id = create_campaign(r.store, NUMBERS[:1])

    def crash(form):
        if reached_twilio:
            r.twilio.answer = lambda form: None
            r.twilio.handler(_create_request(form))  # Twilio created it; our process died
        raise Crash

    r.twilio.answer = crash
    with pytest.raises(Crash):
        r.pump.run(campaign_id, 30)
    (contact,) = contacts(r, campaign_id)
    assert (contact.state, contact.call_sid, contact.attempts) == (DIALING, None, 1)
    r.twilio.answer = lambda form: None
    r.pump.run(campaign_id, 30)  # the lease has not expired: nobody dials it again
    assert len(r.twilio.created) == (1 if reached_twilio else 0)
    r.clock.now += 20 + 5 + 60 + 1  # ring timeout + Twilio's buffer + the check delay
    r.pump.run(campaign_id, 30)
    (contact,) = contacts(r, campaign_id)
    if reached_twilio:  # adopted: the call Twilio created is this attempt
        assert len(r.twilio.created) == 1
        assert (contact.state, contact.call_sid, contact.attempts) == (
            CALLING,
            next(iter(r.twilio.calls)),
            1,
        )
    else:  # never created: dialled again, still the first attempt
        assert len(r.twilio.created) == 1
        assert (contact.state, contact.attempts) == (CALLING, 1)


def _create_request(form) -> httpx.Request:
    from tests.functions.conftest import ACCOUNT_SID

    return httpx.Request(
        "POST",
        f"https://twilio.test/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
        data=form,
        headers={"authorization": "Basic x"},
    )


def test_an_ambiguous_create_is_never_retried_blindly(aws):
    r = rig(aws, check_after_s=30)
    campaign_id = create_campaign(r.store, NUMBERS[:2], max_concurrent=1)
    r.twilio.answer = lambda form: httpx.Response(503, json={"code": 20503, "message": "busy"})
    assert r.pump.run(campaign_id, 30) == "full"
    (first, second) = contacts(r, campaign_id)
    assert (first.state, second.state) == (DIALING, PENDING)  # the slot stays taken
    r.twilio.answer = lambda form: None
    r.pump.run(campaign_id, 30)  # the lease holds: nothing is dialled, not even the next one
    assert r.twilio.created == []
    r.clock.now += 60
    r.pump.run(campaign_id, 30)  # lease expired; Twilio has no such call: it goes back
    first, second = contacts(r, campaign_id)
    assert (first.state, first.attempts) == (PENDING, 0)  # the attempt never happened
    assert r.twilio.dialled() == [NUMBERS[1]]  # the freed slot went to the one due earlier
    end_call(r, second.call_sid, "completed")
    r.pump.run(campaign_id, 30)
    assert r.twilio.dialled() == [NUMBERS[1], NUMBERS[0]]


def test_a_live_call_keeps_its_slot_and_a_finished_one_is_concluded_when_no_callback_came(aws):
    r = rig(aws, check_after_s=30)
    campaign_id = create_campaign(
        r.store, NUMBERS[:2], max_concurrent=1, retries=Retries(max=1, backoff_seconds=600)
    )
    r.pump.run(campaign_id, 30)
    (sid,) = sids(r, campaign_id)
    r.twilio.calls[sid]["status"] = "in-progress"
    r.clock.now += 60
    r.pump.run(campaign_id, 30)  # still on: the lease is extended, nothing else dialled
    assert len(r.twilio.created) == 1
    assert contacts(r, campaign_id)[0].state == CALLING
    r.twilio.calls[sid]["status"] = "busy"  # ended, and its callback was lost
    r.clock.now += 31
    r.pump.run(campaign_id, 30)
    first, second = contacts(r, campaign_id)
    assert (first.state, first.outcome, first.next_at) == (
        PENDING,
        "busy",
        pytest.approx(r.clock() + 600, abs=2),
    )
    assert second.state == CALLING  # the freed slot went to the next contact


def test_credentials_refused_pause_the_campaign_with_a_reason(aws):
    r = rig(aws)
    campaign_id = create_campaign(r.store, NUMBERS[:2])
    r.twilio.answer = lambda form: httpx.Response(
        401, json={"code": 20003, "message": "Authenticate"}
    )
    assert r.pump.run(campaign_id, 30) == "stopped"
    meta = r.store.get_campaign(campaign_id)
    assert meta["status"] == PAUSED
    assert "TWILIO_AUTH_TOKEN" in meta["status_reason"]
    assert [(c.state, c.attempts) for c in contacts(r, campaign_id)] == [(PENDING, 0)] * 2
    assert (meta["c_live"], meta["c_pending"]) == (0, 2)


def test_a_number_twilio_refuses_fails_that_contact_only(aws):
    r = rig(aws)
    campaign_id = create_campaign(r.store, NUMBERS[:3], retries=Retries(max=3, backoff_seconds=1))

    def refuse(form):
        if form["To"][0] == NUMBERS[1]:
            return httpx.Response(400, json={"code": 21211, "message": "Invalid 'To' Phone Number"})
        return None

    r.twilio.answer = refuse
    r.pump.run(campaign_id, 30)
    states = [(c.state, c.outcome) for c in contacts(r, campaign_id)]
    assert states == [(CALLING, None), (DONE, "failed"), (CALLING, None)]
    assert "21211" in contacts(r, campaign_id)[1].calls[0]["error"]


def test_do_not_call_numbers_are_never_dialled(aws):
    r = rig(aws)
    r.store.dnc_add([NUMBERS[1]], r.clock(), "asked us")
    campaign_id = create_campaign(r.store, NUMBERS[:3])
    r.pump.run(campaign_id, 30)
    assert r.twilio.dialled() == [NUMBERS[0], NUMBERS[2]]
    assert contacts(r, campaign_id)[1].outcome == "do-not-call"
    assert r.store.get_campaign(campaign_id)["o_do_not_call"] == 1


def test_a_closed_window_reschedules_to_its_opening_and_wakes_the_dialer_then(aws):
    r = rig(aws)
    window = window_closed_now(r.clock())
    campaign_id = create_campaign(r.store, NUMBERS[:2], window=window, timezone="UTC")
    r.ticks()
    assert r.pump.run(campaign_id, 30) == "nothing due"
    assert r.twilio.created == []
    opening = r.clock() + 3600
    assert [c.next_at for c in contacts(r, campaign_id)] == [pytest.approx(opening, abs=1)] * 2
    (tick,) = r.ticks()  # one wake-up for the opening, however many contacts wait for it
    assert tick["at"] == pytest.approx(opening, abs=1)
    assert tick["delay"] == pytest.approx(3600, abs=1)  # the queue sends it in 900 s, then again
    r.pump.run(campaign_id, 30)  # a second run schedules no second wake-up
    assert r.ticks() == []
    r.clock.now = opening + 1
    r.pump.run(campaign_id, 30)
    assert r.twilio.dialled() == NUMBERS[:2]


def test_a_run_killed_while_sending_its_wake_up_does_not_silence_the_campaign(aws):
    # The wake-up is recorded only once its tick is sent: a run killed in between must not leave
    # a recorded wake-up that no message brings (later runs would schedule none: stalled).
    r = rig(aws)
    window = window_closed_now(r.clock())
    campaign_id = create_campaign(r.store, NUMBERS[:2], window=window, timezone="UTC")
    sending = r.queue.tick

    def killed(campaign_id: str, delay_s: float = 0, at: float | None = None) -> None:
        raise Crash

    r.queue.tick = killed  # type: ignore[method-assign]
    with pytest.raises(Crash):
        r.pump.run(campaign_id, 30)
    r.queue.tick = sending  # type: ignore[method-assign]
    r.clock.now += 5  # the next run: a callback, a redelivered tick
    assert r.pump.run(campaign_id, 30) == "nothing due"
    (tick,) = r.ticks()
    assert tick["at"] == pytest.approx(r.clock() + 3600 - 5, abs=1)
    r.pump.run(campaign_id, 30)  # and once on its way, no second one
    assert r.ticks() == []


def test_busy_is_retried_after_the_backoff_and_the_campaign_completes(aws):
    r = rig(aws)
    campaign_id = create_campaign(r.store, NUMBERS[:1], retries=Retries(max=2, backoff_seconds=30))
    for attempt, (status, outcome) in enumerate(
        [("busy", "busy"), ("no-answer", "no-answer"), ("completed", "answered")], start=1
    ):
        r.pump.run(campaign_id, 30)
        assert len(r.twilio.created) == attempt
        (sid,) = [c.call_sid for c in contacts(r, campaign_id)]
        assert end_call(r, sid, status) == outcome
        if attempt < 3:
            r.pump.run(campaign_id, 30)
            assert len(r.twilio.created) == attempt  # not before the back-off
            r.clock.now += 30 * 2 ** (attempt - 1)
    assert r.pump.run(campaign_id, 30) == "completed"
    (contact,) = contacts(r, campaign_id)
    assert (contact.outcome, contact.attempts, len(contact.calls)) == ("answered", 3, 3)
    assert r.store.get_campaign(campaign_id)["status"] == "completed"


def test_a_duplicate_final_callback_changes_nothing(aws):
    r = rig(aws)
    campaign_id = create_campaign(r.store, NUMBERS[:1], retries=Retries(max=1, backoff_seconds=5))
    r.pump.run(campaign_id, 30)
    (sid,) = sids(r, campaign_id)
    assert end_call(r, sid, "busy") == "busy"
    assert end_call(r, sid, "busy") == "busy (already applied)"
    meta = r.store.get_campaign(campaign_id)
    assert (meta["c_live"], meta["c_pending"], meta["c_retries"]) == (0, 1, 1)


def test_a_pause_while_waiting_for_the_rate_slot_stops_the_dial(aws):
    r = rig(aws)
    campaign_id = create_campaign(r.store, NUMBERS[:3], max_calls_per_second=1.0)

    def sleep(seconds):
        r.store.set_status(campaign_id, [RUNNING], PAUSED, r.clock())  # paused meanwhile
        r.clock.now += seconds

    r.pump.sleep = sleep
    assert r.pump.run(campaign_id, 30) == "stopped"
    assert r.twilio.dialled() == NUMBERS[:1]  # dialled before the pause
    meta = r.store.get_campaign(campaign_id)
    assert (meta["c_live"], meta["c_pending"]) == (1, 2)  # the second one was put back


def test_machine_outcome_from_the_answer_webhook_when_the_callback_has_no_answered_by(aws):
    r = rig(aws)
    campaign_id = create_campaign(r.store, NUMBERS[:1], machine_detection="hangup")
    r.pump.run(campaign_id, 30)
    (sid,) = sids(r, campaign_id)
    form = r.twilio.forms[sid]
    assert form["MachineDetection"] == ["Enable"]
    dial_id = form["Url"][0].split("dial=")[1]
    r.store.answered(dial_id, sid, "machine_start")  # what /twilio/outbound/answer records
    assert end_call(r, sid, "completed") == "machine"
    assert contacts(r, campaign_id)[0].outcome == "machine"


def test_the_create_request_asks_for_every_callback_and_points_at_our_webhooks(aws):
    r = rig(aws)
    campaign_id = create_campaign(r.store, NUMBERS[:1], ring_timeout_seconds=25)
    r.pump.run(campaign_id, 30)
    (form,) = r.twilio.created
    assert form["To"] == [NUMBERS[0]]
    assert form["From"] == [OUR_NUMBER]
    assert form["Url"][0].startswith("https://api.example.com/twilio/outbound/answer?dial=")
    assert form["StatusCallback"][0].startswith(
        "https://api.example.com/twilio/outbound/status?dial="
    )
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert form["StatusCallbackMethod"] == ["POST"]
    assert form["Timeout"] == ["25"]
    assert "MachineDetection" not in form


def test_contacts_of_other_campaigns_and_pending_state_survive_a_crash_mid_run(aws):
    # A crash after some dials leaves every contact either dialled or pending: none lost.
    r = rig(aws)
    campaign_id = create_campaign(r.store, NUMBERS, max_concurrent=10)
    calls = {"n": 0}

    def crash_on_fourth(form):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Crash
        return None

    r.twilio.answer = crash_on_fourth
    with pytest.raises(Crash):
        r.pump.run(campaign_id, 30)
    states = [c.state for c in contacts(r, campaign_id)]
    assert states == [CALLING] * 3 + [DIALING] + [PENDING] * 2
    r.twilio.answer = lambda form: None
    r.pump.run(campaign_id, 30)
    assert [c.state for c in contacts(r, campaign_id)] == [CALLING] * 3 + [DIALING] + [CALLING] * 2
    meta = r.store.get_campaign(campaign_id)
    assert (meta["c_live"], meta["c_pending"]) == (6, 0)
    assert dataclasses.asdict(contacts(r, campaign_id)[3])["call_sid"] is None
