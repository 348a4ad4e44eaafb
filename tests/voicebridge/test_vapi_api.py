import json

import httpx
import pytest

from voicebridge import vapi_api
from voicebridge.vapi_api import VapiApiError, create_assistant, create_call


def _client(responses, seen):
    """A client whose transport answers with ``responses`` in order, recording each request."""
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.fixture(autouse=True)
def slept(monkeypatch):
    """A fake clock: sleeping advances it instantly; jitter is pinned to its worst case."""
    clock = [1000.0]
    delays: list[float] = []

    async def fake_sleep(delay):
        delays.append(delay)
        clock[0] += delay

    monkeypatch.setattr(vapi_api.asyncio, "sleep", fake_sleep)
    monkeypatch.setattr(vapi_api, "_clock", lambda: clock[0])
    monkeypatch.setattr(vapi_api.random, "uniform", lambda low, high: high)
    return delays


async def test_create_assistant_posts_body_with_bearer_key():
    seen = []
    async with _client([httpx.Response(201, json={"id": "asst_1"})], seen) as client:
        result = await create_assistant(
            client, "https://vapi.test/", "key-1", {"name": "a"}, budget_s=5
        )
    assert result == {"id": "asst_1"}
    assert str(seen[0].url) == "https://vapi.test/assistant"
    assert seen[0].headers["authorization"] == "Bearer key-1"
    assert json.loads(seen[0].content) == {"name": "a"}


async def test_429_then_201_honours_retry_after(slept):
    seen = []
    responses = [
        httpx.Response(429, headers={"Retry-After": "1.5"}, json={"message": "slow down"}),
        httpx.Response(201, json={"id": "call_1"}),
    ]
    async with _client(responses, seen) as client:
        result = await create_call(client, "https://vapi.test", "k", {}, budget_s=10)
    assert result["id"] == "call_1"
    assert len(seen) == 2
    assert str(seen[0].url) == "https://vapi.test/call"
    assert slept == [1.5]


async def test_5xx_and_connect_errors_are_retried_with_backoff(slept):
    seen = []
    responses = [
        httpx.ConnectError("refused"),
        httpx.Response(503, text="down"),
        httpx.Response(201, json={"id": "x"}),
    ]
    async with _client(responses, seen) as client:
        assert (await create_call(client, "https://v", "k", {}, budget_s=10))["id"] == "x"
    assert len(seen) == 3
    assert slept == [0.2, 0.4]  # exponential: base 0.2 s, doubling


async def test_4xx_is_raised_at_once_with_vapis_message():
    seen = []
    body = {"message": ["name must be shorter", "voice.provider invalid"], "error": "Bad Request"}
    async with _client([httpx.Response(400, json=body)], seen) as client:
        with pytest.raises(VapiApiError) as info:
            await create_assistant(client, "https://v", "secret-key", {}, budget_s=10)
    assert len(seen) == 1
    assert info.value.status == 400
    assert "voice.provider invalid" in info.value.detail
    assert "secret-key" not in str(info.value)


async def test_retries_stop_when_the_budget_would_be_exceeded():
    seen = []
    responses = [httpx.Response(429, headers={"Retry-After": "30"}, json={"message": "limit"})]
    async with _client(responses, seen) as client:
        with pytest.raises(VapiApiError) as info:
            await create_call(client, "https://v", "k", {}, budget_s=2)
    assert info.value.status == 429
    assert len(seen) == 1


async def test_unreachable_after_budget_has_no_status():
    seen = []
    async with _client([httpx.ConnectError("refused")] * 3, seen) as client:
        with pytest.raises(VapiApiError) as info:
            await create_call(client, "https://v", "k", {}, budget_s=0.5)
    assert info.value.status is None
    assert len(seen) == 2  # 0.2 s then 0.4 s of backoff would pass the 0.5 s budget


def test_detail_is_bounded():
    error = VapiApiError(500, "x" * 10_000)
    assert len(error.detail) == vapi_api.MAX_DETAIL_CHARS
