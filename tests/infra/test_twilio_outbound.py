"""The Twilio emulator's outbound calls: validation, CPS queue, behaviours by number, callbacks,
the Url request with AMD, the Call resource and list."""

from __future__ import annotations

import asyncio
import itertools
import time
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infra.asgi import AsgiServer
from infra.twilio_emulator import TwilioEmulator
from voicebridge.twilio_signature import SIGNATURE_HEADER, is_valid

AC, TOKEN = "AC" + "1" * 32, "secret-token"
FROM = "+14155550199"


class App:
    """Our API as the emulator sees it: records signed callbacks, answers TwiML."""

    def __init__(self) -> None:
        self.callbacks: list[dict[str, str]] = []
        self.answers: list[dict[str, str]] = []
        self.twiml = "<Response><Hangup/></Response>"
        self.server: AsgiServer | None = None

    async def _record(self, request: Request, into: list[dict[str, str]]) -> dict[str, str]:
        params = dict(parse_qsl((await request.body()).decode()))
        assert is_valid(TOKEN, str(request.url), params, request.headers.get(SIGNATURE_HEADER))
        into.append(params)
        return params

    async def status(self, request: Request) -> Response:
        await self._record(request, self.callbacks)
        return Response(status_code=204)

    async def answer(self, request: Request) -> Response:
        await self._record(request, self.answers)
        return Response(self.twiml, media_type="application/xml")

    async def start(self) -> str:
        app = Starlette(
            routes=[
                Route("/status", self.status, methods=["POST"]),
                Route("/answer", self.answer, methods=["POST"]),
            ]
        )
        self.server = AsgiServer(app)
        await self.server.start()
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
async def twilio():
    emulator = TwilioEmulator(AC, TOKEN)
    emulator.outbound.cps = 50
    emulator.outbound.ring_ms = 50
    emulator.outbound.amd_ms = 50
    emulator.outbound.machine_greeting_ms = 100
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def app():
    served = App()
    base = await served.start()
    served.base = base  # type: ignore[attr-defined]
    yield served
    assert served.server is not None
    await served.server.stop()


def form(app, to: str, **extra: str | list[str]) -> dict:
    data: dict = {
        "To": to,
        "From": FROM,
        "Url": f"{app.base}/answer",
        "StatusCallback": f"{app.base}/status",
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
    }
    data.update(extra)
    return data


async def create(twilio, data, auth=(AC, TOKEN)) -> httpx.Response:
    async with httpx.AsyncClient(auth=auth) as client:
        return await client.post(
            f"{twilio.base_url}/2010-04-01/Accounts/{AC}/Calls.json", data=data
        )


async def until_ended(twilio, count: int = 1, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        log = twilio.outbound.log
        if len(log) >= count and all(c.task is not None and c.task.done() for c in log):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("calls did not end")


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"To": ""}, 400, 21201),
        ({"To": "4155550123"}, 400, 21211),
        ({"To": FROM}, 400, 21211),  # calling the number itself
        ({"From": "+1"}, 400, 21212),
        ({"Url": None}, 400, 21205),
        ({"Url": "ftp://example.com/x"}, 400, 11100),
        ({"StatusCallbackEvent": ["answered", "hungup"]}, 400, 20001),
        ({"StatusCallbackEvents": "answered"}, 400, 20001),  # a typo of ours: refused
        ({"Timeout": "601"}, 400, 21208),
        ({"MachineDetection": "Yes"}, 400, 20001),
        ({"AsyncAmd": "true"}, 400, 20001),  # real, but not played by the emulator
    ],
)
async def test_creates_are_validated_like_twilio(twilio, app, changes, status, code):
    data = form(app, "+14155550100")
    for name, value in changes.items():
        if value is None:
            data.pop(name)
        else:
            data[name] = value
    response = await create(twilio, data)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert twilio.outbound.log == []


async def test_auth_is_required(twilio, app):
    response = await create(twilio, form(app, "+14155550100"), auth=(AC, "wrong"))
    assert (response.status_code, response.json()["code"]) == (401, 20003)


async def test_busy_sends_initiated_then_busy_in_sequence(twilio, app):
    response = await create(twilio, form(app, "+14155550191"))
    assert response.status_code == 201
    call = response.json()
    assert (call["status"], call["direction"], call["to"]) == (
        "queued",
        "outbound-api",
        "+14155550191",
    )
    await until_ended(twilio)
    assert [(c["CallStatus"], c["SequenceNumber"]) for c in app.callbacks] == [
        ("initiated", "0"),
        ("busy", "1"),
    ]
    final = app.callbacks[-1]
    assert (final["SipResponseCode"], final["CallDuration"], final["Direction"]) == (
        "486",
        "0",
        "outbound-api",
    )
    assert app.answers == []  # never answered: the Url is never requested


async def test_no_answer_rings_for_the_timeout(twilio, app):
    started = time.monotonic()
    await create(twilio, form(app, "+14155550192", Timeout="1"))
    await until_ended(twilio)
    assert time.monotonic() - started >= 1.0
    assert [c["CallStatus"] for c in app.callbacks] == ["initiated", "ringing", "no-answer"]


async def test_only_the_requested_events_and_always_the_final_one(twilio, app):
    await create(twilio, form(app, "+14155550193", StatusCallbackEvent=[]))
    await until_ended(twilio)
    assert [c["CallStatus"] for c in app.callbacks] == ["failed"]


@pytest.mark.parametrize(
    ("mode", "number", "answered_by"),
    [
        ("Enable", "+14155550100", "human"),
        ("Enable", "+14155550194", "machine_start"),
        ("DetectMessageEnd", "+14155550194", "machine_end_beep"),
        ("Enable", "+14155550195", "fax"),
    ],
)
async def test_answered_calls_request_the_url_with_amds_verdict(
    twilio, app, mode, number, answered_by
):
    await create(twilio, form(app, number, MachineDetection=mode))
    await until_ended(twilio)
    (answer,) = app.answers
    assert answer["AnsweredBy"] == answered_by
    assert int(answer["MachineDetectionDuration"]) >= 0
    assert (answer["CallStatus"], answer["Direction"]) == ("in-progress", "outbound-api")
    statuses = [c["CallStatus"] for c in app.callbacks]
    assert statuses == ["initiated", "ringing", "in-progress", "completed"]
    assert "AnsweredBy" not in app.callbacks[-1]  # only the Url request carries it (sync AMD)
    (call,) = twilio.outbound.log
    assert call.answered_by == answered_by


async def test_without_amd_there_is_no_answered_by(twilio, app):
    await create(twilio, form(app, "+14155550100"))
    await until_ended(twilio)
    assert "AnsweredBy" not in app.answers[0]


async def test_calls_over_the_accounts_cps_wait_in_twilios_queue(twilio, app):
    twilio.outbound.cps = 4
    await asyncio.gather(*(create(twilio, form(app, f"+1415555019{i}")) for i in (1, 1, 1)))
    await until_ended(twilio, 3)
    starts = sorted(c.dialed_at for c in twilio.outbound.log)
    assert all(b - a >= 0.24 for a, b in itertools.pairwise(starts))
    assert twilio.outbound.max_per_second() == 3  # the requests came at once: our log says so


async def test_fetch_and_list_show_the_calls(twilio, app):
    one = (await create(twilio, form(app, "+14155550191"))).json()
    two = (await create(twilio, form(app, "+14155550193"))).json()
    await until_ended(twilio, 2)
    async with httpx.AsyncClient(auth=(AC, TOKEN)) as client:
        base = f"{twilio.base_url}/2010-04-01/Accounts/{AC}/Calls"
        fetched = (await client.get(f"{base}/{one['sid']}.json")).json()
        assert (fetched["status"], fetched["to"]) == ("busy", "+14155550191")
        listed = (
            await client.get(f"{base}.json", params={"To": "+14155550193", "From": FROM})
        ).json()
        assert [c["sid"] for c in listed["calls"]] == [two["sid"]]
        everything = (await client.get(f"{base}.json")).json()["calls"]
        assert [c["sid"] for c in everything] == [two["sid"], one["sid"]]  # newest first


async def test_the_concurrency_log_counts_overlapping_calls(twilio, app):
    twilio.outbound.cps = 100
    await asyncio.gather(
        create(twilio, form(app, "+14155550192", Timeout="1")),
        create(twilio, form(app, "+14155550192", Timeout="1")),
        create(twilio, form(app, "+14155550191")),
    )
    await until_ended(twilio, 3)
    assert twilio.outbound.max_concurrent() == 3


async def test_a_hangup_through_the_rest_api_ends_an_answered_call(twilio, app):
    app.twiml = "<Response><Say>a long message</Say></Response>"
    sid = (await create(twilio, form(app, "+14155550100"))).json()["sid"]
    await asyncio.sleep(0.3)
    async with httpx.AsyncClient(auth=(AC, TOKEN)) as client:
        url = f"{twilio.base_url}/2010-04-01/Accounts/{AC}/Calls/{sid}.json"
        assert (await client.post(url, data={"Status": "completed"})).status_code == 200
    await until_ended(twilio)
    assert app.callbacks[-1]["CallStatus"] == "completed"
