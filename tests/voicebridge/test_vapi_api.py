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


NOT_SENT = [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("full")]
MAYBE_SENT = [
    httpx.ReadTimeout("no answer"),
    httpx.WriteTimeout("half sent"),
    httpx.ReadError("reset"),
    httpx.WriteError("broken pipe"),
    httpx.RemoteProtocolError("server disconnected"),
]
CREATE = {"call": create_call, "assistant": create_assistant}


@pytest.mark.parametrize("create", list(CREATE))
async def test_failures_before_sending_are_retried_with_backoff(slept, create):
    seen = []
    async with _client([*NOT_SENT, httpx.Response(201, json={"id": "x"})], seen) as client:
        assert (await CREATE[create](client, "https://v", "k", {}, budget_s=10))["id"] == "x"
    assert len(seen) == 4
    assert slept == [0.2, 0.4, 0.8]  # exponential: base 0.2 s, doubling


@pytest.mark.parametrize("create", list(CREATE))
@pytest.mark.parametrize("failure", MAYBE_SENT, ids=lambda e: type(e).__name__)
async def test_failures_after_sending_are_never_retried(slept, create, failure):
    # The request may have reached Vapi: a retry could create a second call (or assistant).
    seen = []
    async with _client([failure, httpx.Response(201, json={"id": "dup"})], seen) as client:
        with pytest.raises(VapiApiError) as info:
            await CREATE[create](client, "https://v", "k", {}, budget_s=10)
    assert len(seen) == 1
    assert slept == []
    assert info.value.status is None
    assert info.value.maybe_created
    assert type(failure).__name__ in info.value.detail


@pytest.mark.parametrize("create", list(CREATE))
@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_never_retried(slept, create, status):
    seen = []
    responses = [httpx.Response(status, json={"message": "boom"}), httpx.Response(201, json={})]
    async with _client(responses, seen) as client:
        with pytest.raises(VapiApiError) as info:
            await CREATE[create](client, "https://v", "k", {}, budget_s=10)
    assert len(seen) == 1
    assert (info.value.status, info.value.maybe_created, info.value.detail) == (
        status,
        True,
        "boom",
    )


async def test_retry_after_as_an_http_date_is_honoured(slept, monkeypatch):
    monkeypatch.setattr(vapi_api, "_wall", lambda: 1_795_000_000.0)
    later = "Wed, 18 Nov 2026 11:06:43 GMT"  # 3 s after the pinned wall clock
    responses = [
        httpx.Response(429, headers={"Retry-After": later}, json={"message": "slow down"}),
        httpx.Response(201, json={"id": "call_1"}),
    ]
    async with _client(responses, []) as client:
        await create_call(client, "https://v", "k", {}, budget_s=10)
    assert slept == [3.0]


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
