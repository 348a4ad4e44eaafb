"""The Twilio emulator's IncomingPhoneNumbers: list by PhoneNumber, fetch, update, as strict as
Twilio (Basic auth, 20404, bad methods and URLs refused with nothing changed)."""

import httpx
import pytest

from infra.twilio_emulator import TwilioEmulator

AC, TOKEN = "AC" + "1" * 32, "secret"


@pytest.fixture
async def twilio():
    emulator = TwilioEmulator(AC, TOKEN)
    await emulator.start()
    emulator.add_number("+14155550100")
    emulator.add_number("+14155550199", friendly_name="support")
    yield emulator
    await emulator.stop()


def numbers_url(twilio, account=AC):
    return f"{twilio.base_url}/2010-04-01/Accounts/{account}/IncomingPhoneNumbers.json"


def number_url(twilio, sid, account=AC):
    return f"{twilio.base_url}/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{sid}.json"


async def test_list_filters_by_phone_number_exactly_partially_and_with_wildcards(twilio):
    async with httpx.AsyncClient(auth=(AC, TOKEN)) as client:
        everything = (await client.get(numbers_url(twilio))).json()
        assert [n["phone_number"] for n in everything["incoming_phone_numbers"]] == [
            "+14155550100",
            "+14155550199",
        ]
        assert everything["next_page_uri"] is None
        for pattern, expected in [("+14155550100", 1), ("555", 2), ("+1415555019*", 1)]:
            found = await client.get(numbers_url(twilio), params={"PhoneNumber": pattern})
            assert len(found.json()["incoming_phone_numbers"]) == expected, pattern
        paged = (await client.get(numbers_url(twilio), params={"PageSize": 1})).json()
        assert len(paged["incoming_phone_numbers"]) == 1
        assert "Page=1" in paged["next_page_uri"]


async def test_auth_other_accounts_unknown_numbers_and_parameters(twilio):
    sid = next(iter(twilio.numbers))
    async with httpx.AsyncClient(auth=(AC, TOKEN)) as client:
        assert (await client.get(numbers_url(twilio), auth=(AC, "wrong"))).json()["code"] == 20003
        other = await client.get(numbers_url(twilio, account="AC" + "9" * 32))
        assert (other.status_code, other.json()["code"]) == (404, 20404)
        missing = await client.post(number_url(twilio, "PN" + "0" * 32), data={"VoiceUrl": ""})
        assert (missing.status_code, missing.json()["code"]) == (404, 20404)
        typo = await client.get(numbers_url(twilio), params={"Phonenumber": "+1"})
        assert typo.status_code == 400
        assert (await client.get(number_url(twilio, sid))).json()["sid"] == sid


async def test_update_sets_voice_and_status_webhooks(twilio):
    number = next(iter(twilio.numbers.values()))
    form = {
        "VoiceUrl": "https://api.example.com/twilio/voice",
        "VoiceMethod": "POST",
        "StatusCallback": "https://api.example.com/twilio/status",
        "StatusCallbackMethod": "POST",
    }
    async with httpx.AsyncClient(auth=(AC, TOKEN)) as client:
        updated = (await client.post(number_url(twilio, number.sid), data=form)).json()
    assert updated["voice_url"] == form["VoiceUrl"]
    assert updated["status_callback"] == form["StatusCallback"]
    assert updated["voice_method"] == updated["status_callback_method"] == "POST"
    assert twilio.number_updates == [form]


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"VoiceUrl": "https://ok.example/v", "VoiceMethod": "PUT"}, 20001),
        ({"VoiceUrl": "ftp://x/voice"}, 21205),
        ({"VoiceUrl": "/twilio/voice"}, 21205),
        ({"VoiceURL": "https://ok.example/v"}, 20001),
    ],
)
async def test_a_bad_update_is_refused_and_changes_nothing(twilio, form, code):
    number = next(iter(twilio.numbers.values()))
    async with httpx.AsyncClient(auth=(AC, TOKEN)) as client:
        refused = await client.post(number_url(twilio, number.sid), data=form)
    assert (refused.status_code, refused.json()["code"]) == (400, code)
    assert number.voice_url == ""
    assert number.voice_method == "POST"
    assert twilio.number_updates == []


async def test_an_application_sid_is_cleared_with_an_empty_value(twilio):
    number = next(iter(twilio.numbers.values()))
    number.voice_application_sid = "AP" + "3" * 32  # Twilio ignores voice_url while this is set
    async with httpx.AsyncClient(auth=(AC, TOKEN)) as client:
        done = await client.post(number_url(twilio, number.sid), data={"VoiceApplicationSid": ""})
    assert done.json()["voice_application_sid"] is None
