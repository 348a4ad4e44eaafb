"""The Twilio REST emulator answers like Twilio: Basic auth, 20404 for an unknown call, 21220
for a call no longer in progress, updates end the stream."""

import asyncio

import httpx
import pytest

from infra.twilio_emulator import TwilioEmulator

AC, TOKEN = "AC" + "1" * 32, "secret"
CA = "CA" + "2" * 32


@pytest.fixture
async def twilio():
    emulator = TwilioEmulator(AC, TOKEN)
    await emulator.start()
    yield emulator
    await emulator.stop()


def url(twilio, call=CA, account=AC):
    return f"{twilio.base_url}/2010-04-01/Accounts/{account}/Calls/{call}.json"


async def test_auth_unknown_calls_and_completion(twilio):
    async with httpx.AsyncClient(auth=(AC, TOKEN)) as client:
        denied = await client.post(url(twilio), data={"Status": "completed"}, auth=(AC, "wrong"))
        assert denied.status_code == 401
        unknown = await client.post(url(twilio), data={"Status": "completed"})
        assert unknown.status_code == 404
        assert unknown.json()["code"] == 20404
        assert (
            await client.post(f"{twilio.base_url}/_emulator/calls", data={"CallSid": CA})
        ).status_code == 201
        waiter = asyncio.create_task(client.get(f"{twilio.base_url}/_emulator/calls/{CA}/wait"))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # long-poll: nothing happened yet
        bad = await client.post(url(twilio), data={"Status": "ringing"})
        assert bad.status_code == 400
        done = await client.post(url(twilio), data={"Status": "completed"})
        assert done.status_code == 200
        assert done.json()["status"] == "completed"
        assert (await waiter).json() == {"status": "completed", "twiml": None}
        again = await client.post(url(twilio), data={"Status": "completed"})
        assert again.status_code == 400  # a known call no longer in progress, as on Twilio
        assert again.json()["code"] == 21220
        assert again.json()["more_info"] == "https://www.twilio.com/docs/errors/21220"


async def test_redirect_with_twiml_and_caller_hangup(twilio):
    async with httpx.AsyncClient(auth=(AC, TOKEN)) as client:
        await client.post(f"{twilio.base_url}/_emulator/calls", data={"CallSid": CA})
        twiml = "<Response><Dial>+15550100009</Dial></Response>"
        assert (await client.post(url(twilio), data={"Twiml": twiml})).status_code == 200
        state = (await client.get(f"{twilio.base_url}/_emulator/calls/{CA}/wait")).json()
        assert state["twiml"] == twiml
        await client.post(f"{twilio.base_url}/_emulator/calls/{CA}/end")
        ended = await client.post(url(twilio), data={"Twiml": twiml})
        assert (ended.status_code, ended.json()["code"]) == (400, 21220)
        other = await client.post(
            url(twilio, account="AC" + "9" * 32), data={"Status": "completed"}
        )
        assert other.status_code == 404


async def test_only_a_sid_twilio_could_issue_is_registered(twilio):
    async with httpx.AsyncClient(auth=(AC, TOKEN)) as client:
        for bad in ("CA1", CA + "CallStatusringing", "MZ" + "2" * 32):
            answer = await client.post(f"{twilio.base_url}/_emulator/calls", data={"CallSid": bad})
            assert answer.status_code == 400
        assert twilio.calls == {}
