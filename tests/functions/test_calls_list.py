"""GET /calls: newest first from the calls-by-time index, filtered by number and status, paged
with an opaque signed cursor, a bounded limit; entries written by the voice webhook (with the
session, one transaction) and by the worker for calls the webhook did not see."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest

from functions import storage
from functions.console import routes
from functions.storage import Store
from tests.functions.conftest import (
    ADMIN_KEY,
    apigw_event,
    invoke,
    response_body,
    twilio_post,
    voice_params,
)

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def _list(**query: str) -> tuple[int, dict]:
    result = invoke(apigw_event("GET", "/calls", b"", ADMIN, query=urlencode(query)))
    return result["statusCode"], json.loads(response_body(result))


def _sid(n: int) -> str:
    return f"CA{n:032x}"


def _calls(aws, count: int, start: float, step: float = 60.0) -> list[str]:
    """``count`` calls created ``step`` s apart from ``start``: alternating numbers, every
    third one completed."""
    store = Store(aws.env["SESSIONS_TABLE"])
    keep = int(time.time()) + 3600
    sids = []
    for n in range(count):
        sid = _sid(n + 1)
        caller = "+14155550100" if n % 2 else "+14155550111"
        at = start + n * step
        fields = {"from": caller, "to": "+18005550199", "direction": "inbound"}
        store.ensure_listed(sid, fields, at, keep)
        store.apply_status(sid, "in-progress", 0, at, keep)
        if n % 3 == 0:
            store.apply_status(sid, "completed", 1, at + 30, keep)
        sids.append(sid)
    return sids


def _pages(**query: str) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        params = dict(query, **({"cursor": cursor} if cursor else {}))
        status, body = _list(**params)
        assert status == 200, body
        pages.append([c["callSid"] for c in body["calls"]])
        cursor = body["cursor"]
        if cursor is None:
            return pages


def test_newest_first_in_pages_that_cover_every_call_once(aws):
    sids = _calls(aws, 23, time.time() - 3600)
    pages = _pages(limit="5")
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [sid for page in pages for sid in page] == list(reversed(sids))


def test_pages_run_across_months(aws):
    now = time.time()
    old = _calls(aws, 3, now - 40 * 86_400, step=86_400)  # about a month and more ago
    Store(aws.env["SESSIONS_TABLE"]).ensure_listed(_sid(99), {}, now - 10, int(now) + 3600)
    pages = _pages(limit="2")
    assert [sid for page in pages for sid in page] == [_sid(99), *reversed(old)]


def test_filters_by_number_and_status(aws):
    sids = _calls(aws, 12, time.time() - 3600)
    by_number = [s for p in _pages(limit="3", number="+14155550100") for s in p]
    assert by_number == [sid for n, sid in reversed(list(enumerate(sids))) if n % 2]
    completed = [s for p in _pages(status="completed") for s in p]
    assert completed == [sid for n, sid in reversed(list(enumerate(sids))) if n % 3 == 0]
    live = [s for p in _pages(status="live") for s in p]
    assert live == [sid for n, sid in reversed(list(enumerate(sids))) if n % 3]
    ended = [s for p in _pages(status="ended") for s in p]
    assert ended == completed
    both = [s for p in _pages(number="+14155550111", status="completed", limit="1") for s in p]
    assert both == [sid for n, sid in reversed(list(enumerate(sids))) if n % 6 == 0]
    row = _list(limit="1")[1]["calls"][0]
    assert set(row) >= {"callSid", "from", "to", "direction", "call_status", "created_at", "live"}
    assert "list_pk" not in row
    assert "control_url" not in row


def test_a_rare_filter_reads_a_bounded_amount_per_page(aws, monkeypatch):
    _calls(aws, 30, time.time() - 3600)
    reads = []
    original = Store.list_calls

    def counting(self, **kwargs):
        kwargs["max_evaluated"] = 10
        result = original(self, **kwargs)
        reads.append(len(result[0]))
        return result

    monkeypatch.setattr(Store, "list_calls", counting)
    found = [s for p in _pages(number="+19999999999") for s in p]
    assert found == []
    assert len(reads) >= 3  # no page read the whole list: the cursor carried on


def test_the_cursor_is_opaque_signed_and_bound_to_its_filters(aws):
    _calls(aws, 6, time.time() - 3600)
    _status, body = _list(limit="2", status="live")
    cursor = body["cursor"]
    assert "CALL#" not in cursor
    assert "CA0" not in cursor
    assert _list(limit="2", status="live", cursor=cursor)[0] == 200
    assert _list(limit="2", cursor=cursor)[0] == 400  # other filters
    tampered = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
    assert _list(limit="2", status="live", cursor=tampered)[0] == 400
    assert _list(limit="2", status="live", cursor="bm9wZQ")[0] == 400


@pytest.mark.parametrize(
    "query",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"number": "555"}, {"status": "odd"}],
)
def test_bad_queries_are_a_clear_400(aws, query):
    status, body = _list(**query)
    assert status == 400
    assert body["error"]


def test_a_call_is_listed_from_its_session_when_its_stream_starts(aws):
    from functions.events import twilio_event
    from tests.functions.test_worker import _batch, _run

    assert twilio_post("/twilio/voice", voice_params(Direction="inbound"))["statusCode"] == 200
    assert _list()[1]["calls"] == []  # the webhook wrote one item: the session
    started = {
        "AccountSid": "AC" + "a" * 32,
        "CallSid": voice_params()["CallSid"],
        "StreamSid": "MZ" + "2" * 32,
        "StreamEvent": "stream-started",
        "Timestamp": "2026-11-21T21:00:01.000Z",
    }
    _run(_batch(twilio_event(started, received_at=time.time())))
    (row,) = _list()[1]["calls"]
    assert row["from"] == "+14155550123"
    assert row["to"] == "+18005550199"
    assert row["direction"] == "inbound"
    assert row["assistant_id"] == "asst-default"
    assert row["call_status"] == "in-progress"
    assert row["live"] is True
    assert abs(row["created_at"] - time.time()) < 60  # when the webhook answered it


def test_the_worker_lists_a_call_the_webhook_never_saw(aws):
    from functions.events import twilio_event
    from tests.functions.test_worker import _batch, _run

    params = {
        "CallSid": _sid(7),
        "CallStatus": "completed",
        "SequenceNumber": "3",
        "Timestamp": "Sat, 21 Nov 2026 21:00:30 +0000",
        "CallDuration": "30",
        "From": "+14155550100",
        "To": "+18005550199",
        "Direction": "outbound-api",
    }
    _run(_batch(twilio_event(params, received_at=time.time())))
    (row,) = _list()[1]["calls"]
    assert row["callSid"] == _sid(7)
    assert row["direction"] == "outbound-api"
    assert row["call_status"] == "completed"
    started = time.mktime(time.strptime("2026-11-21 21:00:00", "%Y-%m-%d %H:%M:%S")) - time.timezone
    assert row["created_at"] == int(started)  # the callback's time less the call's length


def test_months_cover_the_retention(aws):
    months = routes._months(time.time(), 90)
    assert len(months) == len(set(months))
    assert 4 <= len(months) <= 5
    assert storage.CALLS_INDEX == "calls-by-time"


def test_vapis_control_url_never_leaves_the_session_item(aws):
    store = Store(aws.env["SESSIONS_TABLE"])
    sid = _sid(3)
    store.put_session(sid, "+14155550100", "+18005550199", "asst", time.time(), 600)
    secret = "https://phone-call-websocket.vapi.ai/secret-call/control"
    aws.dynamodb.update_item(
        TableName=aws.env["SESSIONS_TABLE"],
        Key={"pk": {"S": f"CALL#{sid}"}, "sk": {"S": "SESSION"}},
        UpdateExpression="SET control_url = :u",
        ExpressionAttributeValues={":u": {"S": secret}},
    )
    store.ensure_listed(sid, {"from": "+14155550100"}, time.time(), int(time.time()) + 600)
    record = invoke(apigw_event("GET", f"/calls/{sid}", b"", ADMIN))
    listed = invoke(apigw_event("GET", "/calls", b"", ADMIN))
    assert record["statusCode"] == listed["statusCode"] == 200
    assert b"secret-call" not in response_body(record)
    assert b"secret-call" not in response_body(listed)
    assert json.loads(response_body(record))["session"]["from"] == "+14155550100"
