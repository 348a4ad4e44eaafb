"""A tiny Twilio REST API: the one call-update endpoint our tools and edge use.

``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with Basic auth (SID:token) and
``Status=completed`` or ``Twiml=...`` updates a live call; an unknown call is 404 with Twilio's
error 20404, a known call that is no longer in progress 400 with error 21220. As on Twilio,
completing or redirecting a call ends its Media Stream: the simulated caller long-polls
``/_emulator/calls/{CallSid}/wait`` (emulator-only) and then sends ``stop`` and closes the
stream, exactly what Twilio does to a ``<Connect><Stream>``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from infra.asgi import AsgiServer, bind
from infra.twilio_numbers import EmulatedNumber, NumberRequestError, page, update_form
from infra.twilio_outbound import OutboundCalls, twilio_error
from voicebridge.identifiers import is_call_sid

MAX_FORM_BYTES = 64 * 1024
WAIT_SECONDS = 25.0
NUMBERS_PATH = "/2010-04-01/Accounts/{account}/IncomingPhoneNumbers.json"
NUMBER_PATH = "/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{sid}.json"


@dataclass(slots=True)
class EmulatedTwilioCall:
    sid: str
    status: str = "in-progress"
    twiml: str | None = None
    updates: list[dict[str, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def resource(self, account_sid: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "status": self.status,
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{self.sid}.json",
        }


class TwilioEmulator:
    """Serve the REST emulator on loopback; ``calls`` shows every call and update it saw."""

    def __init__(self, account_sid: str, auth_token: str, *, host: str = "127.0.0.1") -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.calls: dict[str, EmulatedTwilioCall] = {}
        self.numbers: dict[str, EmulatedNumber] = {}  # IncomingPhoneNumbers by PN sid
        self.number_updates: list[dict[str, str]] = []  # every accepted update form, in order
        self._server: AsgiServer | None = None
        self.outbound = OutboundCalls(self)  # POST/GET Calls.json: the calls our API places

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://{self.host}:{self._server.port}"

    async def start(self, port: int = 0) -> str:
        app = Starlette(
            routes=[
                *self.outbound.routes(),  # first: it serves its own calls' fetch, passes the rest
                Route(
                    "/2010-04-01/Accounts/{account}/Calls/{call}.json",
                    self._update,
                    methods=["POST"],
                ),
                Route(
                    "/2010-04-01/Accounts/{account}/Calls/{call}.json", self._fetch, methods=["GET"]
                ),
                Route(NUMBERS_PATH, self._list_numbers, methods=["GET"]),
                Route(NUMBER_PATH, self._fetch_number, methods=["GET"]),
                Route(NUMBER_PATH, self._update_number, methods=["POST"]),
                Route("/_emulator/calls", self._register, methods=["POST"]),
                Route("/_emulator/calls/{call}/wait", self._wait, methods=["GET"]),
                Route("/_emulator/calls/{call}/end", self._hung_up, methods=["POST"]),
            ]
        )
        self._server = AsgiServer(app, sock=bind(self.host, port))
        await self._server.start()
        return self.base_url

    async def stop(self) -> None:
        await self.outbound.stop()
        for call in self.calls.values():
            call.changed.set()  # release long-polls
        if self._server is not None:
            await self._server.stop()

    def _authorized(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), self.account_sid.encode()) and (
            hmac.compare_digest(password.encode(), self.auth_token.encode())
        )

    def _denied(self) -> JSONResponse:
        return twilio_error(401, 20003, "Authenticate")

    async def _form(self, request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return {}
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))

    def _call(self, request: Request) -> EmulatedTwilioCall | None:
        if request.path_params["account"] != self.account_sid:
            return None
        return self.calls.get(request.path_params["call"])

    async def _update(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return self._denied()
        call = self._call(request)
        form = await self._form(request)
        if call is None:  # https://www.twilio.com/docs/api/errors/20404
            sid = request.path_params["call"]
            return twilio_error(
                404,
                20404,
                f"The requested resource /2010-04-01/Accounts/"
                f"{request.path_params['account']}/Calls/{sid}.json was not found",
            )
        if call.status != "in-progress":
            # A known call that is over: 400 with 21220 "Invalid call state", "You attempted a
            # realtime operation on a Call that was not in-progress. Calls that have completed
            # cannot be recorded or redirected." (https://www.twilio.com/docs/api/errors/21220)
            return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        status, twiml = form.get("Status"), form.get("Twiml")
        if status not in (None, "completed", "canceled") or (status is None and not twiml):
            return twilio_error(400, 21218, "Invalid call update: Status or Twiml required")
        call.updates.append(form)
        if status:
            call.status = "completed"
        else:
            call.twiml = twiml
        call.changed.set()
        return JSONResponse(call.resource(self.account_sid))

    async def _fetch(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return self._denied()
        call = self._call(request)
        if call is None:
            return twilio_error(404, 20404, "The requested resource was not found")
        return JSONResponse(call.resource(self.account_sid))

    async def _register(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return self._denied()
        sid = (await self._form(request)).get("CallSid", "")
        if not is_call_sid(sid):  # a SID Twilio could have issued: "CA" + 32 hex digits
            return twilio_error(400, 21201, "CallSid required")
        self.calls[sid] = EmulatedTwilioCall(sid)
        return JSONResponse(self.calls[sid].resource(self.account_sid), 201)

    async def _wait(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return self._denied()
        call = self.calls.get(request.path_params["call"])
        if call is None:
            return twilio_error(404, 20404, "The requested resource was not found")
        try:  # ?timeout=0 answers at once: "what has happened to this call so far"
            timeout = min(
                WAIT_SECONDS, max(0.0, float(request.query_params.get("timeout", WAIT_SECONDS)))
            )
        except ValueError:
            return twilio_error(400, 21201, "timeout must be a number of seconds")
        if call.status == "in-progress" and call.twiml is None and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.changed.wait(), timeout)
        return JSONResponse({"status": call.status, "twiml": call.twiml})

    async def _hung_up(self, request: Request) -> JSONResponse:
        """The caller's side ended the call: later updates get 21220, as on Twilio."""
        if not self._authorized(request):
            return self._denied()
        call = self.calls.get(request.path_params["call"])
        if call is None:
            return twilio_error(404, 20404, "The requested resource was not found")
        if call.status == "in-progress":
            call.status = "completed"
            call.changed.set()
        return JSONResponse(call.resource(self.account_sid))

    # -- IncomingPhoneNumbers (infra/twilio_numbers.py has the rules and their sources) --------

    def add_number(self, phone_number: str, **fields: str) -> EmulatedNumber:
        """Provision a number on this account (what buying one in Twilio's console does)."""
        number = EmulatedNumber.new(self.account_sid, phone_number, **fields)
        self.numbers[number.sid] = number
        return number

    def _number(self, request: Request) -> EmulatedNumber | None:
        if request.path_params["account"] != self.account_sid:
            return None
        return self.numbers.get(request.path_params["sid"])

    def _number_not_found(self, request: Request) -> JSONResponse:
        return twilio_error(404, 20404, f"The requested resource {request.url.path} was not found")

    async def _list_numbers(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return self._denied()
        if request.path_params["account"] != self.account_sid:
            return self._number_not_found(request)
        try:
            body = page(list(self.numbers.values()), request.url.path, dict(request.query_params))
        except NumberRequestError as exc:
            return twilio_error(400, exc.code, str(exc))
        return JSONResponse(body)

    async def _fetch_number(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return self._denied()
        number = self._number(request)
        if number is None:
            return self._number_not_found(request)
        return JSONResponse(number.resource())

    async def _update_number(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return self._denied()
        number = self._number(request)
        if number is None:
            return self._number_not_found(request)
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return twilio_error(400, 20001, "request body too large")
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            update_form(number, form)
        except NumberRequestError as exc:
            return twilio_error(400, exc.code, str(exc))
        self.number_updates.append(form)
        return JSONResponse(number.resource())
