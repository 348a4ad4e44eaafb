from urllib.parse import parse_qs

import httpx
import pytest

from voicebridge.twilio_rest import CallUpdate, TwilioRestError, update_call

AC = "AC" + "0" * 32
CA = "CA" + "1" * 32


def _client(response, seen):
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(response, Exception):
            raise response
        return response

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_hangup_posts_status_form_with_basic_auth():
    seen = []
    async with _client(httpx.Response(200, json={"sid": CA}), seen) as client:
        outcome = await update_call(client, "https://tw.test/", AC, "tok", CA, status="completed")
    assert outcome is CallUpdate.UPDATED
    request = seen[0]
    assert str(request.url) == f"https://tw.test/2010-04-01/Accounts/{AC}/Calls/{CA}.json"
    assert request.headers["authorization"] == httpx.BasicAuth(AC, "tok")._auth_header
    assert parse_qs(request.content.decode()) == {"Status": ["completed"]}


async def test_transfer_sends_twiml():
    seen = []
    twiml = "<Response><Dial>+14155550100</Dial></Response>"
    async with _client(httpx.Response(200, json={}), seen) as client:
        assert await update_call(client, "https://tw.test", AC, "tok", CA, twiml=twiml)
    assert parse_qs(seen[0].content.decode()) == {"Twiml": [twiml]}


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (404, 20404, "The requested resource was not found"),  # no such call
        (400, 21220, "Call is not in-progress. Cannot redirect."),  # a known call that is over
    ],
)
@pytest.mark.parametrize("change", [{"status": "completed"}, {"twiml": "<Response/>"}])
async def test_call_already_ended_counts_as_done(status, code, message, change):
    body = {"code": code, "message": message, "status": status}
    async with _client(httpx.Response(status, json=body), []) as client:
        outcome = await update_call(client, "https://tw.test", AC, "tok", CA, **change)
    assert outcome is CallUpdate.ALREADY_ENDED


@pytest.mark.parametrize(
    ("response", "status"),
    [
        (httpx.Response(401, json={"code": 20003, "message": "Authenticate"}), 401),
        (httpx.Response(400, json={"code": 21218, "message": "Invalid call update"}), 400),
        (httpx.Response(404, json={"code": 21220, "message": "mismatched status"}), 404),
        (httpx.Response(404, text="<html>no such route</html>"), 404),  # a wrong API base URL
        (httpx.Response(500, text="oops"), 500),
        (httpx.ConnectError("refused"), None),
    ],
)
async def test_other_failures_raise_a_clear_error(response, status):
    async with _client(response, []) as client:
        with pytest.raises(TwilioRestError) as info:
            await update_call(client, "https://tw.test", AC, "secret-tok", CA, status="completed")
    assert info.value.status == status
    assert "secret-tok" not in str(info.value)


async def test_rejects_bad_input_without_a_request():
    seen = []
    async with _client(httpx.Response(200), seen) as client:
        with pytest.raises(ValueError):
            await update_call(client, "https://tw.test", AC, "t", "CA../x", status="completed")
        with pytest.raises(ValueError):
            await update_call(client, "https://tw.test", AC, "t", CA)
    assert seen == []
