"""One run of a campaign's dialer: reclaim expired leases, dial what is due, schedule the next run.

A run is started by a tick (campaign started or resumed, a call ended, a timer) and is safe to run
twice at once or twice in a row: every effect is a conditional write (see ``store``), so two runs
split the due contacts between them and a redelivered tick finds nothing left to claim. Per due
contact, in this order: the calling window (closed: reschedule to its opening), the do-not-call
list (listed: done, never dialled), the concurrency slot (the claim, atomically with the counter),
the calls-per-second slot (sleeping for it: under a second at 1 CPS), then ``Calls.create``.

A crash anywhere leaves the contact either pending (nothing happened) or live with a lease; an
expired lease is checked with Twilio before anything is dialled again (``policy.reconcile_*``).
The clock and the sleep are injected, so the tests drive time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx

from functions.outbound import policy, rate, windows
from functions.outbound.campaign import CampaignSettings
from functions.outbound.dial import DialPlan, create_params, new_dial_id
from functions.outbound.results import Sinks, conclude
from functions.outbound.store import (
    DIALING,
    PAUSED,
    RUNNING,
    ContactItem,
    OutboundStore,
    wake_on_its_way,
)
from voicebridge import twilio_calls
from voicebridge.twilio_calls import TwilioCallError

DUE_BATCH: Final = 25
DIAL_RESERVE_S: Final = 12.0  # one dial may take this long (claim, pacing, Twilio's answer)
RETRY_UNREACHABLE_S: Final = 5.0  # Twilio could not be reached: come back to the contact then
NOT_RUNNING_REASON: Final = (
    "Twilio refused our credentials ({status}): check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN,"
    " then resume the campaign"
)

# What one contact's attempt did: progress ("dialed", "skipped", "rescheduled"), nothing
# ("stale": taken meanwhile), or why this run stops dialing: "full" (no concurrency slot; a
# call's end wakes us), "late" (out of time), "later" (Twilio unreachable), "stop" (paused).
Attempt = Literal["dialed", "skipped", "rescheduled", "stale", "full", "late", "later", "stop"]


@dataclass(frozen=True, slots=True)
class TwilioAccount:
    """Twilio REST for one account (the dialer's Calls.create, fetch and list)."""

    client: httpx.Client
    api_base: str
    account_sid: str
    auth_token: str

    def create(self, params: list[tuple[str, str]]) -> dict[str, Any]:
        return twilio_calls.create_call(
            self.client, self.api_base, self.account_sid, self.auth_token, params
        )

    def fetch(self, call_sid: str) -> dict[str, Any] | None:
        return twilio_calls.fetch_call(
            self.client, self.api_base, self.account_sid, self.auth_token, call_sid
        )

    def recent(self, to: str, from_: str) -> list[dict[str, Any]]:
        return twilio_calls.list_calls(
            self.client, self.api_base, self.account_sid, self.auth_token, to=to, from_=from_
        )


@dataclass
class Pump:
    store: OutboundStore
    twilio: TwilioAccount
    sinks: Sinks  # for results learnt here (no tick: this run schedules its own follow-up)
    check_after_s: int  # DIALER_RECONCILE_SECONDS
    logger: logging.Logger | Any
    on_dial: Callable[[], None] = lambda: None
    on_dial_error: Callable[[str], None] = lambda reason: None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def run(self, campaign_id: str, budget_s: float) -> str:
        """Dial what is due for up to ``budget_s``; returns why the run stopped (for the log)."""
        deadline = self.clock() + budget_s
        meta = self.store.get_campaign(campaign_id)
        if meta is None:
            return "unknown campaign"
        if meta.get("status") != RUNNING:
            return f"campaign {meta.get('status')}"
        settings = CampaignSettings.from_item(meta["settings"])
        self._reclaim(campaign_id, settings)
        result: Attempt = "stale"
        while result not in ("full", "late", "later"):
            due = self.store.due_contacts(campaign_id, self.clock(), DUE_BATCH)
            progressed = False
            for contact in due:
                result = "late"
                if self.clock() > deadline - DIAL_RESERVE_S:
                    break
                result = self._attempt(contact, settings, deadline)
                if result == "stop":
                    return "stopped"
                if result in ("full", "late", "later"):
                    break
                progressed = progressed or result != "stale"
            if not progressed:
                break  # nothing due, or all of it taken meanwhile (the index lags the table)
        return self._follow_up(campaign_id, full=result == "full", late=result == "late")

    # -- one contact ---------------------------------------------------------------------------

    def _attempt(
        self, contact: ContactItem, settings: CampaignSettings, deadline: float
    ) -> Attempt:
        now = self.clock()
        zone = windows.zone(contact.timezone or settings.timezone)
        if not windows.is_open(settings.window, zone, now):
            opening = windows.next_open(settings.window, zone, now)
            return "rescheduled" if self.store.reschedule(contact, opening) else "stale"
        if self.store.dnc_contains(contact.number):
            return "skipped" if self.store.skip(contact, "do-not-call") else "stale"
        dial_id = new_dial_id(contact.campaign_id, contact.index)
        lease = policy.lease_until(now, settings.ring_timeout_seconds, self.check_after_s)
        claimed = self.store.claim(contact, settings.max_concurrent, dial_id, now, lease)
        if claimed != "claimed":
            return "full" if claimed == "blocked" else "stale"
        live = dataclasses.replace(
            contact, state=DIALING, dial_id=dial_id, attempts=contact.attempts + 1
        )
        plan = self._plan(live, settings)
        self.store.put_dial(dial_id, plan.to_item(now))
        if not self._pace(contact.campaign_id, settings, deadline):
            self.store.undial(live, self.clock())
            return "late"
        current = self.store.get_campaign(contact.campaign_id) or {}
        if current.get("status") != RUNNING:  # paused or cancelled while we waited
            self.store.undial(live, self.clock())
            return "stop"
        try:
            call = self.twilio.create(create_params(plan))
        except TwilioCallError as error:
            return self._refused(live, plan, error)
        finally:  # the request has arrived, if ever: the next one waits a spacing from now
            answered_ms = math.ceil(self.clock() * 1000)
            self.store.push_rate_slot(
                contact.campaign_id, rate.after_request(answered_ms, settings.max_calls_per_second)
            )
        call_sid = str(call["sid"])
        self.store.dialed(contact.campaign_id, contact.index, dial_id, call_sid, lease)
        self._record(plan, call_sid)
        self.on_dial()
        self.logger.info(
            "dialed",
            extra={
                "campaignId": contact.campaign_id,
                "contact": contact.index,
                "callSid": call_sid,
            },
        )
        return "dialed"

    def _plan(self, contact: ContactItem, settings: CampaignSettings) -> DialPlan:
        variables = {**settings.variables, **contact.variables}
        if contact.name:
            variables.setdefault("name", contact.name)
        return DialPlan(
            dial_id=str(contact.dial_id),
            to=contact.number,
            from_number=settings.from_number,
            assistant_id=settings.assistant_id,
            api_base=settings.api_base,
            ring_timeout_seconds=settings.ring_timeout_seconds,
            machine_detection=settings.machine_detection,
            first_message=settings.first_message,
            voicemail_message=settings.voicemail_message,
            variables=variables,
            campaign_id=contact.campaign_id,
            contact_index=contact.index,
            attempt=contact.attempts,
        )

    def _pace(self, campaign_id: str, settings: CampaignSettings, deadline: float) -> bool:
        """Wait for the campaign's next calls-per-second slot; False if the run is out of time."""
        interval = rate.interval_ms(settings.max_calls_per_second)
        while self.clock() < deadline:
            slot = self.store.take_rate_slot(campaign_id, interval, int(self.clock() * 1000))
            if slot.granted:
                return True
            self.sleep(slot.wait_ms / 1000)
        return False

    def _refused(self, contact: ContactItem, plan: DialPlan, error: TwilioCallError) -> Attempt:
        reason = f"{error.status or 'unreachable'}:{error.code or ''}"
        self.on_dial_error(reason)
        self.logger.warning(
            "Calls.create failed",
            extra={
                "campaignId": contact.campaign_id,
                "contact": contact.index,
                "error": str(error),
            },
        )
        now = self.clock()
        if error.credentials:
            self.store.undial(contact, now)
            self.store.set_status(
                contact.campaign_id,
                [RUNNING],
                PAUSED,
                now,
                NOT_RUNNING_REASON.format(status=error.status),
            )
            return "stop"
        if error.transient:
            self.store.undial(contact, now + RETRY_UNREACHABLE_S)
            return "later"
        if error.created is None:
            return "dialed"  # maybe created: the lease's reconciliation will find out
        conclude(self.sinks, plan, None, "failed", now, error=str(error), retry=False)
        return "skipped"

    def _record(self, plan: DialPlan, call_sid: str) -> None:
        """The call record's outbound fields, there before its first callback."""
        records = self.sinks.records
        if records is None:
            return
        fields: dict[str, Any] = {
            "direction": "outbound-api",
            "to": plan.to,
            "from": plan.from_number,
            "assistant_id": plan.assistant_id,
            "campaign_id": plan.campaign_id,
            "contact_index": plan.contact_index,
            "attempt": plan.attempt,
        }
        expires_at = int(self.clock()) + self.sinks.record_retention_days * 86_400
        try:
            records.apply_report(call_sid, fields, expires_at)
        except Exception:  # the call is placed; its record fills in from the callbacks
            self.logger.exception("call record write failed", extra={"callSid": call_sid})

    # -- leases nobody released ----------------------------------------------------------------

    def _reclaim(self, campaign_id: str, settings: CampaignSettings) -> None:
        for contact in self.store.expired_leases(campaign_id, self.clock(), DUE_BATCH):
            try:
                self._reconcile(contact, settings)
            except TwilioCallError as error:  # Twilio down: the lease stays expired, next run
                self.logger.warning(
                    "lease check failed", extra={"contact": contact.index, "error": str(error)}
                )

    def _reconcile(self, contact: ContactItem, settings: CampaignSettings) -> None:
        now = self.clock()
        if contact.call_sid:
            decision = policy.reconcile_known(contact.call_sid, self.twilio.fetch(contact.call_sid))
        else:
            earlier = frozenset(str(c["sid"]) for c in contact.calls if c.get("sid"))
            recent = self.twilio.recent(contact.number, settings.from_number)
            decision = policy.reconcile_unknown(contact.dialing_at or now, recent, earlier)
        self.logger.info(
            "lease expired",
            extra={"contact": contact.index, "decision": type(decision).__name__},
        )
        if isinstance(decision, policy.DialAgain):
            self.store.undial(contact, now)
        elif isinstance(decision, policy.KeepWaiting):
            lease = now + self.check_after_s
            adopt = decision.call_sid if decision.call_sid != contact.call_sid else None
            self.store.extend_lease(contact, lease, adopt)
        else:
            stored = self.store.get_dial(str(contact.dial_id))
            plan = DialPlan.from_item(stored) if stored else self._plan(contact, settings)
            conclude(self.sinks, plan, decision.call_sid, decision.outcome, now)

    # -- what next -----------------------------------------------------------------------------

    def _follow_up(self, campaign_id: str, *, full: bool, late: bool) -> str:
        """Schedule the next run (or finish the campaign): after this one, nothing else may be
        due that no callback will announce."""
        queue = self.sinks.queue
        meta: Mapping[str, Any] | None = self.store.get_campaign(campaign_id)
        if meta is None or meta.get("status") != RUNNING or queue is None:
            return "campaign not running"
        now = self.clock()
        if late:
            queue.tick(campaign_id)
            return "out of time"
        lease = self.store.next_lease_expiry(campaign_id)
        due = None if full else self.store.next_due_at(campaign_id)
        if not full and due is None and lease is None:
            if self.store.complete_if_done(campaign_id, now):
                self.logger.info("campaign completed", extra={"campaignId": campaign_id})
                return "completed"
            due = now + 1  # the counters still see work the index does not show yet
        times = [t for t in (due, lease) if t is not None]
        if not times:
            return "waiting for callbacks"
        at = max(now, min(times))
        if not wake_on_its_way(meta, at, now):
            queue.tick(campaign_id, at - now, at)
            self.store.record_wake(campaign_id, at, now)
        return "full" if full else "nothing due"
