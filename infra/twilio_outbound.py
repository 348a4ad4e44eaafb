"""Twilio's outbound calls for the emulator: ``POST``/``GET .../Calls.json``, the called phone.

``POST /2010-04-01/Accounts/{AC}/Calls.json`` validates the request like Twilio (and stricter:
unknown parameters are refused, so a typo in our request fails here instead of being ignored),
answers 201 with the Call resource, and then plays the call in the background:

- Twilio's CPS: calls over the account's calls-per-second wait in a queue and start at that rate
  (https://support.twilio.com/hc/en-us/articles/223180028: "API requests for calls that exceed the
  CPS rate limit will be queued, and executed as capacity is available");
- the called number decides what happens (table in infra/README.md): busy, no answer, failed,
  answering machine, fax, or a person who answers;
- status callbacks as Twilio posts them for ``StatusCallbackEvent`` (``completed``, the final
  status whatever it is, is always sent), signed, with ``SequenceNumber`` from 0, ``Timestamp``,
  ``CallbackSource``, and ``CallDuration``/``Duration`` on the final one;
- when answered: answering machine detection (synchronous: ``AnsweredBy`` and
  ``MachineDetectionDuration`` arrive with the ``Url`` request), then the ``Url`` is fetched like
  Twilio fetches it (signed POST), and its TwiML is run: ``<Connect><Stream>`` by the simulated
  caller's media side (``SimulatedCall.run_stream``) with a short callee script, ``<Hangup/>``
  and ``<Say>`` by ending the call.

``log`` keeps every call with its times (requested, dialled, answered, ended) for the tests'
concurrency and calls-per-second checks; ``GET .../Calls.json?To=&From=`` lists calls newest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.caller import CallerConfig, Hangup, SimulatedCall, Step, WaitForSilence, WaitForSpeech
from infra.caller import twiml as twiml_parser
from infra.runtime import LoopThread
from voicebridge.identifiers import is_e164
from voicebridge.twilio_signature import SIGNATURE_HEADER, sign

if TYPE_CHECKING:
    from infra.twilio_emulator import TwilioEmulator

MAX_FORM_BYTES = 64 * 1024
CALLS_PATH = "/2010-04-01/Accounts/{account}/Calls.json"
CALL_PATH = "/2010-04-01/Accounts/{account}/Calls/{call}.json"
# Parameters of Calls.create (twilio-python's CallList.create, generated from Twilio's OpenAPI):
# the emulated ones, and the rest, which Twilio knows but this emulator does not play.
EMULATED = frozenset(
    {
        "To",
        "From",
        "Url",
        "Method",
        "Twiml",
        "StatusCallback",
        "StatusCallbackEvent",
        "StatusCallbackMethod",
        "Timeout",
        "MachineDetection",
        "MachineDetectionTimeout",
        "SendDigits",
        "TimeLimit",
    }
)
NOT_EMULATED = frozenset(
    {
        "FallbackUrl",
        "FallbackMethod",
        "Record",
        "RecordingChannels",
        "RecordingStatusCallback",
        "RecordingStatusCallbackMethod",
        "RecordingStatusCallbackEvent",
        "RecordingConfigurationId",
        "RecordingTrack",
        "Trim",
        "SipAuthUsername",
        "SipAuthPassword",
        "CallerId",
        "MachineDetectionSpeechThreshold",
        "MachineDetectionSpeechEndThreshold",
        "MachineDetectionSilenceTimeout",
        "AsyncAmd",
        "AsyncAmdStatusCallback",
        "AsyncAmdStatusCallbackMethod",
        "Passports",
        "Byoc",
        "CallReason",
        "CallToken",
        "ClientNotificationUrl",
        "ApplicationSid",
    }
)
STATUS_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})
AMD_MODES = frozenset({"Enable", "DetectMessageEnd"})
MAX_TWIML_CHARS = 4000  # Calls.create's Twiml parameter ("Max 4000 characters")
MAX_TIMEOUT_S = 600  # "the maximum is 600 seconds"
FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
# What the called number does, by its last two digits (infra/README.md has the table).
BEHAVIOURS = {"91": "busy", "92": "no-answer", "93": "failed", "94": "machine", "95": "fax"}


def behaviour(number: str) -> str:
    return BEHAVIOURS.get(number[-2:], "human")


def _callee() -> list[Step]:
    """The default person who answers: hears the assistant's first words, then hangs up."""
    return [WaitForSpeech(limit_ms=8000), WaitForSilence(silence_ms=400, limit_ms=10_000), Hangup()]


def twilio_error(status: int, code: int, message: str) -> JSONResponse:
    """Twilio's REST error body (https://www.twilio.com/docs/usage/twilios-response: code,
    message, more_info, status), for every resource the emulator serves."""
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status,
    )


@dataclass(slots=True)
class OutboundCall:
    """One call placed through ``POST /Calls.json``, with the times the tests measure."""

    sid: str
    account_sid: str
    to: str
    from_: str
    form: dict[str, list[str]]
    requested_at: float  # epoch seconds the create request arrived (what CPS counts)
    status: str = "queued"
    date_created: str = field(default_factory=lambda: formatdate(usegmt=True))
    dialed_at: float | None = None  # left the CPS queue
    answered_at: float | None = None
    ended_at: float | None = None
    answered_by: str | None = None
    sequence: int = 0
    callbacks: list[tuple[str, int]] = field(default_factory=list)  # (CallStatus, HTTP status)
    url_status: int | None = None
    twiml: str | None = None
    report: Any = None  # the callee's CallReport when the call streamed
    task: asyncio.Task[None] | None = None

    def first(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None

    def resource(self) -> dict[str, Any]:
        """The Call resource JSON (fields of twilio-python's CallInstance)."""
        duration = None
        if self.answered_at is not None and self.ended_at is not None:
            duration = str(round(self.ended_at - self.answered_at))
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "from": self.from_,
            "status": self.status,
            "direction": "outbound-api",
            "answered_by": self.answered_by,
            "date_created": self.date_created,
            "date_updated": formatdate(usegmt=True),
            "start_time": formatdate(self.dialed_at, usegmt=True) if self.dialed_at else None,
            "end_time": formatdate(self.ended_at, usegmt=True) if self.ended_at else None,
            "duration": duration,
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{self.sid}.json",
        }


def _one(form: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    values = form.get(name)
    return values[0] if values else default


def validate(form: dict[str, list[str]]) -> JSONResponse | None:
    """Twilio's checks of a Calls.create form (and the emulator's own limits); None if valid."""
    unknown = sorted(set(form) - EMULATED - NOT_EMULATED)
    if unknown:  # Twilio ignores these; refusing them catches our own typos
        return twilio_error(
            400, 20001, f"Unknown parameter {unknown[0]!r} (emulator: not a Calls.create parameter)"
        )
    unplayed = sorted(set(form) & NOT_EMULATED)
    if unplayed:
        return twilio_error(
            400, 20001, f"{unplayed[0]} is a Twilio parameter this emulator does not play"
        )
    repeated = [
        name for name, values in form.items() if len(values) > 1 and name != "StatusCallbackEvent"
    ]
    if repeated:
        return twilio_error(400, 20001, f"{repeated[0]} given more than once")
    to, from_ = _one(form, "To", ""), _one(form, "From", "")
    if not to:
        return twilio_error(400, 21201, "No 'To' number is specified")
    if not from_:
        return twilio_error(400, 21213, "No 'From' number is specified")
    if not is_e164(to) or to == from_:  # 21211 also covers calling a number from itself
        return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
    if not is_e164(from_):
        return twilio_error(400, 21212, f"Invalid 'From' Phone Number: {from_}")
    url, twiml = _one(form, "Url", None), _one(form, "Twiml", None)
    if url is None and twiml is None:
        return twilio_error(400, 21205, "Url parameter is required (or Twiml)")
    for name in ("Url", "StatusCallback"):
        value = _one(form, name, None)
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or "_" in (parts.hostname or "_"):
                return twilio_error(400, 11100, f"Invalid URL format in {name}: {value[:100]}")
    if twiml is not None and len(twiml) > MAX_TWIML_CHARS:
        return twilio_error(400, 20001, "Twiml is longer than 4000 characters")
    for name in ("Method", "StatusCallbackMethod"):
        method = _one(form, name, "POST")
        if method not in ("GET", "POST"):
            return twilio_error(400, 21209, f"{name} must be GET or POST")
        if method != "POST":
            return twilio_error(400, 20001, f"{name}=GET: this emulator only requests with POST")
    events = form.get("StatusCallbackEvent", [])
    if set(events) - STATUS_EVENTS:
        allowed = sorted(STATUS_EVENTS)
        return twilio_error(400, 20001, f"StatusCallbackEvent must be among {allowed}")
    if events and "StatusCallback" not in form:
        return twilio_error(400, 20001, "StatusCallbackEvent without a StatusCallback")
    limits = (("Timeout", 1, MAX_TIMEOUT_S, 21208), ("MachineDetectionTimeout", 3, 60, 20001))
    for name, low, high, code in limits:
        value = _one(form, name, None)
        if value is not None and not (value.isdigit() and low <= int(value) <= high):
            return twilio_error(400, code, f"{name} must be an integer from {low} to {high}")
    amd = _one(form, "MachineDetection", None)
    if amd is not None and amd not in AMD_MODES:
        return twilio_error(400, 20001, "MachineDetection must be Enable or DetectMessageEnd")
    return None


def parse_form(body: bytes) -> dict[str, list[str]]:
    form: dict[str, list[str]] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        form.setdefault(name, []).append(value)
    return form


class OutboundCalls:
    """The outbound side of the emulator (routes added by ``TwilioEmulator.start``)."""

    def __init__(
        self,
        emulator: TwilioEmulator,
        *,
        cps: float = 1.0,
        ring_ms: int = 300,
        amd_ms: int = 200,
        machine_greeting_ms: int = 1500,
        media: bool = True,
        hold_ms: int = 500,
        callee: Callable[[OutboundCall], list[Step]] | None = None,
    ) -> None:
        self.emulator = emulator
        self.cps = cps  # the account's calls per second (Twilio's default is 1)
        self.ring_ms = ring_ms  # how long a phone that answers rings first
        self.amd_ms = amd_ms  # how long AMD takes to recognise a person (or a machine's start)
        self.machine_greeting_ms = machine_greeting_ms  # until the beep (DetectMessageEnd)
        self.media = media  # False: answered calls do not stream, they last ``hold_ms``
        self.hold_ms = hold_ms
        self.callee = callee or (lambda call: _callee())
        self.log: list[OutboundCall] = []
        self.by_sid: dict[str, OutboundCall] = {}
        self._next_start = 0.0
        self._cps_lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None
        self._media: LoopThread | None = None

    def routes(self) -> list[Route]:
        return [
            Route(CALLS_PATH, self._create, methods=["POST"]),
            Route(CALLS_PATH, self._list, methods=["GET"]),
            Route(CALL_PATH, self._fetch, methods=["GET"]),
        ]

    async def stop(self) -> None:
        tasks = [c.task for c in self.log if c.task is not None and not c.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._media is not None:
            await asyncio.to_thread(self._media.close)
            self._media = None

    # -- measurements for tests and benchmarks -------------------------------------------------

    def max_concurrent(self) -> int:
        """Most calls that were between their create request and their end at one moment."""
        edges = sorted(
            [(c.requested_at, 1) for c in self.log]
            + [(c.ended_at if c.ended_at is not None else math.inf, -1) for c in self.log],
            key=lambda edge: (edge[0], edge[1]),
        )
        live = peak = 0
        for _, step in edges:
            live += step
            peak = max(peak, live)
        return peak

    def max_per_second(self) -> int:
        """Most create requests that arrived within any one second (a sliding window)."""
        times = sorted(c.requested_at for c in self.log)
        peak = start = 0
        for end, at in enumerate(times):
            while at - times[start] >= 1.0:
                start += 1
            peak = max(peak, end - start + 1)
        return peak

    # -- REST ----------------------------------------------------------------------------------

    async def _create(self, request: Request) -> Response:
        emulator = self.emulator
        if not emulator._authorized(request):
            return emulator._denied()
        if request.path_params["account"] != emulator.account_sid:
            return twilio_error(404, 20404, "The requested resource was not found")
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return twilio_error(400, 20001, "request too large")
        form = parse_form(body)
        refused = validate(form)
        if refused is not None:
            return refused
        call = OutboundCall(
            sid=f"CA{uuid.uuid4().hex}",
            account_sid=emulator.account_sid,
            to=form["To"][0],
            from_=form["From"][0],
            form=form,
            requested_at=time.time(),
        )
        self.log.append(call)
        self.by_sid[call.sid] = call
        self._register(call)
        call.task = asyncio.create_task(self._play(call))
        return JSONResponse(call.resource(), 201)

    async def _list(self, request: Request) -> Response:
        emulator = self.emulator
        if not emulator._authorized(request):
            return emulator._denied()
        query = request.query_params
        try:
            size = min(1000, max(1, int(query.get("PageSize", "50"))))
        except ValueError:
            return twilio_error(400, 20001, "PageSize must be an integer")
        calls = [
            c
            for c in reversed(self.log)
            if c.account_sid == request.path_params["account"]
            and query.get("To") in (None, c.to)
            and query.get("From") in (None, c.from_)
            and query.get("Status") in (None, c.status)
        ]
        return JSONResponse(
            {
                "calls": [c.resource() for c in calls[:size]],
                "page": 0,
                "page_size": size,
                "next_page_uri": None,
                "uri": str(request.url.path),
            }
        )

    async def _fetch(self, request: Request) -> Response:
        """A call this module placed, in full; any other goes to the emulator's own fetch."""
        call = self.by_sid.get(request.path_params["call"])
        if call is None or request.path_params["account"] != call.account_sid:
            return await self.emulator._fetch(request)
        if not self.emulator._authorized(request):
            return self.emulator._denied()
        return JSONResponse(call.resource())

    # -- the call ------------------------------------------------------------------------------

    def _register(self, call: OutboundCall) -> None:
        """Make the call known to the emulator's update/wait endpoints (hang-ups, redirects)."""
        from infra.twilio_emulator import EmulatedTwilioCall

        self.emulator.calls[call.sid] = EmulatedTwilioCall(call.sid, status="queued")

    def _set(self, call: OutboundCall, status: str) -> None:
        call.status = status
        registered = self.emulator.calls.get(call.sid)
        if registered is not None and registered.status not in FINAL:
            registered.status = status
            if status in FINAL:
                registered.changed.set()

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0))
        return self._http

    async def _start_slot(self) -> None:
        """Twilio's CPS queue: calls start at most ``cps`` per second, in order."""
        async with self._cps_lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.cps
        await asyncio.sleep(start - now)

    async def _play(self, call: OutboundCall) -> None:
        try:
            await self._start_slot()
            call.dialed_at = time.time()
            self._set(call, "initiated")
            await self._callback(call, "initiated")
            kind = behaviour(call.to)
            if kind in ("busy", "failed"):
                await asyncio.sleep(0.1)
                await self._end(call, kind)
                return
            self._set(call, "ringing")
            await self._callback(call, "ringing")
            if kind == "no-answer":
                await asyncio.sleep(int(call.first("Timeout") or 60))
                await self._end(call, "no-answer")
                return
            await asyncio.sleep(self.ring_ms / 1000)
            call.answered_at = time.time()
            self._set(call, "in-progress")
            await self._callback(call, "answered")
            amd = call.first("MachineDetection") if not call.first("SendDigits") else None
            amd_params = await self._detect(call, kind, amd)
            document = await self._instructions(call, amd_params)
            if self._set_if_live(call) and document is not None:
                await self._run(call, document)
            await self._end(call, "completed")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an emulator bug must not hang the test: end the call
            call.url_status = call.url_status or -1
            call.twiml = call.twiml or f"emulator error: {exc!r}"
            if call.status not in FINAL:
                await self._end(call, "failed")

    def _set_if_live(self, call: OutboundCall) -> bool:
        registered = self.emulator.calls.get(call.sid)
        return registered is None or registered.status == "in-progress"

    async def _detect(self, call: OutboundCall, kind: str, mode: str | None) -> dict[str, str]:
        """Synchronous AMD: the verdict and how long it took, for the Url request."""
        if mode is None:
            return {}
        started = time.monotonic()
        if kind == "human":
            verdict, wait = "human", self.amd_ms
        elif kind == "fax":
            verdict, wait = "fax", self.amd_ms
        elif mode == "DetectMessageEnd":
            verdict, wait = "machine_end_beep", self.machine_greeting_ms
        else:
            verdict, wait = "machine_start", self.amd_ms
        await asyncio.sleep(wait / 1000)
        call.answered_by = verdict
        taken = round((time.monotonic() - started) * 1000)
        return {"AnsweredBy": verdict, "MachineDetectionDuration": str(taken)}

    def _params(self, call: OutboundCall, status: str) -> dict[str, str]:
        return {
            "AccountSid": call.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call.sid,
            "CallStatus": status,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
        }

    async def _instructions(self, call: OutboundCall, amd: dict[str, str]) -> str | None:
        """The call's TwiML: inline ``Twiml``, or the ``Url`` requested like Twilio does."""
        url = call.first("Url")
        if url is None:
            call.twiml = call.first("Twiml")
            return call.twiml
        params = {**self._params(call, "in-progress"), **amd}
        headers = {SIGNATURE_HEADER: sign(self.emulator.auth_token, url, params)}
        try:
            response = await self.http.post(url, data=params, headers=headers)
        except httpx.HTTPError:
            call.url_status = 0
            return None
        call.url_status = response.status_code
        if response.status_code != 200:
            return None  # Twilio would play its "application error" message and hang up
        call.twiml = response.text
        return response.text

    async def _run(self, call: OutboundCall, document: str) -> None:
        try:
            parsed = twiml_parser.parse(document)
        except twiml_parser.TwimlError:
            return
        if parsed.stream is None:  # <Say>/<Hangup>: a short message at most, then the end
            await asyncio.sleep(min(5.0, 0.06 * sum(len(s) for s in parsed.say)))
            return
        if not self.media:
            await asyncio.sleep(self.hold_ms / 1000)
            return
        config = CallerConfig(
            api_url=str(self.emulator.base_url),
            auth_token=self.emulator.auth_token,
            account_sid=call.account_sid,
            from_number=call.from_,
            to_number=call.to,
            twilio_emulator_url=self.emulator.base_url,
            call_sid=call.sid,
            max_seconds=60.0,
        )
        callee = SimulatedCall(config, self.callee(call))
        # The phones' media (50 frames a second each) runs on a loop of its own, as Twilio's
        # media servers are not its API: the API's loop stays free, so the times in ``log``
        # are when requests arrived, not when a busy loop got round to them.
        if self._media is None:
            self._media = LoopThread("twilio-emulator-media")
        running = asyncio.run_coroutine_threadsafe(callee.run_stream(document), self._media.loop)
        call.report = await asyncio.wrap_future(running)

    async def _end(self, call: OutboundCall, status: str) -> None:
        call.ended_at = time.time()
        registered = self.emulator.calls.get(call.sid)
        if registered is not None and registered.status == "completed":
            status = "completed"  # hung up through the REST API
        self._set(call, status)
        duration = round(call.ended_at - call.answered_at) if call.answered_at else 0
        extra: dict[str, str] = {"CallDuration": str(duration), "Duration": str(-(-duration // 60))}
        if status == "busy":
            extra["SipResponseCode"] = "486"
        elif status == "no-answer":
            extra["SipResponseCode"] = "487"
        await self._callback(call, "completed", status, extra)

    async def _callback(
        self,
        call: OutboundCall,
        event: str,
        status: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """One status callback, if the call asked for this event ("completed" always)."""
        url = call.first("StatusCallback")
        if url is None or (
            event != "completed" and event not in call.form.get("StatusCallbackEvent", [])
        ):
            return
        params = self._params(call, status or call.status)
        params.update(
            {
                "CallbackSource": "call-progress-events",
                "SequenceNumber": str(call.sequence),
                "Timestamp": formatdate(usegmt=True),
                **(extra or {}),
            }
        )
        call.sequence += 1
        headers = {SIGNATURE_HEADER: sign(self.emulator.auth_token, url, params)}
        code = 0
        with contextlib.suppress(httpx.HTTPError):
            code = (await self.http.post(url, data=params, headers=headers)).status_code
        call.callbacks.append((params["CallStatus"], code))
