"""Outcomes, the retry schedule and the decisions about leases nobody released."""

from email.utils import formatdate

import pytest

from functions.outbound import policy
from functions.outbound.policy import DialAgain, Finish, KeepWaiting, Retries


@pytest.mark.parametrize(
    ("status", "answered_by", "expected"),
    [
        ("completed", None, "answered"),
        ("completed", "human", "answered"),
        ("completed", "unknown", "answered"),
        ("completed", "machine_start", "machine"),
        ("completed", "machine_end_beep", "machine"),
        ("completed", "fax", "machine"),
        ("busy", None, "busy"),
        ("no-answer", None, "no-answer"),
        ("failed", None, "failed"),
        ("canceled", None, "canceled"),
    ],
)
def test_outcome_of_a_final_status(status, answered_by, expected):
    assert policy.outcome(status, answered_by) == expected


@pytest.mark.parametrize("status", ["ringing", "in-progress", "queued", "bogus"])
def test_a_live_status_has_no_outcome(status):
    with pytest.raises(ValueError, match="not a final"):
        policy.outcome(status, None)


def test_busy_no_answer_failed_retry_with_doubling_backoff_up_to_the_cap():
    retries = Retries(max=3, backoff_seconds=60)
    assert [policy.retry_at("busy", n, retries, 1000) for n in (1, 2, 3, 4)] == [
        1060,
        1120,
        1240,
        None,  # the fourth attempt was the third retry: done
    ]
    assert policy.retry_at("no-answer", 1, retries, 0) == 60
    assert policy.retry_at("failed", 1, retries, 0) == 60


@pytest.mark.parametrize("result", ["answered", "machine", "canceled", "do-not-call"])
def test_other_outcomes_are_final(result):
    assert policy.retry_at(result, 1, Retries(max=5, backoff_seconds=1), 0) is None


def test_no_retries_by_default_and_backoff_is_capped_at_a_week():
    assert policy.retry_at("busy", 1, Retries(), 0) is None
    assert policy.retry_at("busy", 10, Retries(max=10, backoff_seconds=86_400), 0) == 7 * 86_400


def test_a_lease_is_checked_after_the_phone_stopped_ringing():
    assert policy.lease_until(1000, ring_timeout_s=30, check_after_s=120) == 1000 + 30 + 5 + 120


def test_a_known_call_is_finished_kept_or_failed_by_what_twilio_says():
    sid = "CA" + "1" * 32
    assert policy.reconcile_known(sid, {"sid": sid, "status": "in-progress"}) == KeepWaiting(sid)
    assert policy.reconcile_known(sid, {"sid": sid, "status": "busy"}) == Finish(sid, "busy")
    done = {"sid": sid, "status": "completed", "answered_by": "machine_start"}
    assert policy.reconcile_known(sid, done) == Finish(sid, "machine")
    assert policy.reconcile_known(sid, None) == Finish(sid, "failed")  # Twilio: 404


def _call(sid: str, created: float, status: str = "completed") -> dict:
    return {"sid": sid, "status": status, "date_created": formatdate(created, usegmt=True)}


def test_an_unrecorded_dial_is_adopted_if_twilio_created_it_since_the_claim():
    claimed_at = 1_800_000_000.0
    recent = [_call("CAnew", claimed_at + 1, "ringing"), _call("CAold", claimed_at - 600)]
    assert policy.reconcile_unknown(claimed_at, recent, frozenset()) == KeepWaiting("CAnew")
    assert policy.reconcile_unknown(claimed_at, recent[1:], frozenset()) == DialAgain()
    assert policy.reconcile_unknown(claimed_at, [], frozenset()) == DialAgain()


def test_an_earlier_attempt_is_never_taken_for_the_lost_one():
    claimed_at = 1_800_000_000.0
    earlier = _call("CAearlier", claimed_at - 2, "busy")  # within the clock skew allowance
    assert policy.reconcile_unknown(claimed_at, [earlier], frozenset({"CAearlier"})) == DialAgain()
    assert policy.reconcile_unknown(claimed_at, [earlier], frozenset()) == Finish(
        "CAearlier", "busy"
    )
