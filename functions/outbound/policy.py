"""What a call's end means for its contact, and what to do with a lease nobody released.

Pure decisions over plain values (the shell reads and writes DynamoDB and Twilio):

- :func:`outcome`: a final Twilio ``CallStatus`` and ``AnsweredBy`` -> the contact's outcome;
- :func:`retry_at`: busy / no-answer / failed are retried with exponential back-off
  (``backoffSeconds`` x 2^(n-1) after the n-th attempt) until ``max`` retries are spent;
- :func:`lease_until`: a dial holds one of the campaign's concurrency slots until its final status
  callback releases it; if that never comes, the lease expires and the dialer asks Twilio;
- :func:`reconcile`: the decision once it has Twilio's answer (finish, keep waiting, adopt a call
  the crashed dialer did not record, or dial again because Twilio never got the request).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final

# Twilio CallStatus values (https://www.twilio.com/docs/voice/api/call-resource#call-status-values)
FINAL_STATUSES: Final = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
LIVE_STATUSES: Final = frozenset({"queued", "initiated", "ringing", "in-progress"})
# AnsweredBy values of answering machine detection
# (https://www.twilio.com/docs/voice/answering-machine-detection): all but human and unknown.
MACHINE_ANSWERS: Final = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
)
RETRYABLE: Final = frozenset({"busy", "no-answer", "failed"})
OUTCOMES: Final = (
    "answered",
    "machine",
    "busy",
    "no-answer",
    "failed",
    "canceled",
    "do-not-call",
)
MAX_BACKOFF_SECONDS: Final = 7 * 86_400
CREATE_SKEW_SECONDS: Final = 5.0  # Twilio's clock vs ours (both NTP) when matching a lost call
# Twilio may ring up to 5 s past Timeout ("we will add a 5-second buffer", Calls.create docs).
RING_BUFFER_SECONDS: Final = 5


def outcome(call_status: str, answered_by: str | None) -> str:
    """The contact outcome of a final status ("completed" = someone or something answered)."""
    if call_status == "completed":
        return "machine" if answered_by in MACHINE_ANSWERS else "answered"
    if call_status in FINAL_STATUSES:
        return call_status
    raise ValueError(f"{call_status!r} is not a final call status")


@dataclass(frozen=True, slots=True)
class Retries:
    max: int = 0
    backoff_seconds: int = 300


def retry_at(result: str, attempts: int, retries: Retries, now: float) -> float | None:
    """When to dial again after attempt number ``attempts`` ended with ``result``, or None."""
    if result not in RETRYABLE or attempts > retries.max:
        return None
    delay: int = retries.backoff_seconds * 2 ** (attempts - 1)
    return now + min(delay, MAX_BACKOFF_SECONDS)


def lease_until(now: float, ring_timeout_s: int, check_after_s: int) -> float:
    """When an unreleased lease is checked with Twilio: ``check_after_s`` after the phone has
    stopped ringing. A call still on then keeps its slot (the lease is extended)."""
    return now + ring_timeout_s + RING_BUFFER_SECONDS + check_after_s


@dataclass(frozen=True, slots=True)
class Finish:
    """The call is over: apply ``outcome`` as if its final callback had come."""

    call_sid: str
    outcome: str


@dataclass(frozen=True, slots=True)
class KeepWaiting:
    """The call is still live (a long conversation): extend the lease."""

    call_sid: str


@dataclass(frozen=True, slots=True)
class DialAgain:
    """Twilio never created the call: put the contact back, the attempt did not happen."""


Reconciliation = Finish | KeepWaiting | DialAgain


def _from_call(call: Mapping[str, Any]) -> Reconciliation:
    sid, status = str(call.get("sid")), str(call.get("status"))
    if status in FINAL_STATUSES:
        answered_by = call.get("answered_by")
        return Finish(sid, outcome(status, answered_by if isinstance(answered_by, str) else None))
    return KeepWaiting(sid)


def reconcile_known(call_sid: str, call: Mapping[str, Any] | None) -> Reconciliation:
    """The dial recorded ``call_sid``; ``call`` is Twilio's resource (None: Twilio says 404)."""
    if call is None:
        return Finish(call_sid, "failed")
    return _from_call(call)


def _created_at(call: Mapping[str, Any]) -> float | None:
    try:
        return parsedate_to_datetime(str(call.get("date_created"))).timestamp()
    except (TypeError, ValueError):
        return None


def reconcile_unknown(
    dialing_at: float, recent: Sequence[Mapping[str, Any]], earlier_sids: frozenset[str]
) -> Reconciliation:
    """The dialer claimed the contact at ``dialing_at`` but never recorded a call (it crashed, or
    Twilio did not answer): ``recent`` are Twilio's latest calls from our number to the contact.
    A call created since the claim, and not one of the contact's earlier attempts, is ours; none
    means the request never reached Twilio."""
    for call in recent:
        if call.get("sid") in earlier_sids:
            continue
        created = _created_at(call)
        if created is not None and created >= dialing_at - CREATE_SKEW_SECONDS:
            return _from_call(call)
    return DialAgain()
