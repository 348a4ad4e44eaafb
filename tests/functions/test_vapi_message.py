"""Vapi webhook bodies are bounded (nesting, key fields) before anything is queued: 400, never
500, and nothing reaches the queue."""

import json

import pytest

from functions import vapi_message
from functions.vapi_message import MAX_DEPTH, nesting_depth
from tests.functions.conftest import WEBHOOK_SECRET, apigw_event, invoke, response_body


def _post_raw(body: bytes):
    headers = {"content-type": "application/json", "x-vapi-secret": WEBHOOK_SECRET}
    return invoke(apigw_event("POST", "/vapi/webhook", body, headers))


def _nested(depth: int) -> bytes:
    """A status-update whose ``x`` makes the whole body ``depth`` levels deep."""
    inner = depth - 2  # the body object and the message object
    x = "[" * inner + "]" * inner
    return (
        '{"message": {"type": "status-update", "status": "ended", "call": {"id": "v1"}, "x": '
        + x
        + "}}"
    ).encode()


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"{}", 1),
        (b"[[[]]]", 3),
        (b'{"a": "[[[{{{", "b": [1]}', 2),  # brackets inside strings do not count
        (b'{"a": "\\"[[", "b": [[1]]}', 3),  # nor after an escaped quote
        (b'{"a": "\\\\", "b": [[1]]}', 3),  # an escaped backslash does not escape the quote
        (b'"\\\\\\"[["', 0),
        (b"[" * 5000 + b"]" * 5000, 5000),
    ],
)
def test_nesting_depth_counts_only_structure(body, depth):
    assert nesting_depth(body) == depth


@pytest.mark.parametrize("depth", [479, 700, 989, 5000])
def test_deep_nesting_is_400_and_nothing_is_queued(aws, depth):
    if depth < 900:  # valid JSON that the parser alone accepts (deeper, it raises RecursionError)
        assert json.loads(_nested(depth))
    result = _post_raw(_nested(depth))
    assert result["statusCode"] == 400
    assert f"nested {depth} levels deep" in json.loads(response_body(result))["error"]
    assert aws.queued() == []


def test_nesting_at_the_limit_is_accepted(aws):
    assert _post_raw(_nested(MAX_DEPTH))["statusCode"] == 200
    assert len(aws.queued()) == 1
    assert _post_raw(_nested(MAX_DEPTH + 1))["statusCode"] == 400


HUGE = "x" * 900_000


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "end-of-call-report", "call": {"id": HUGE}}, "call.id"),
        ({"type": "status-update", "call": {"id": ["a", "list"]}}, "call.id"),
        ({"type": "status-update", "call": {"phoneCallProviderId": HUGE}}, "phoneCallProviderId"),
        ({"type": HUGE}, "type"),
        ({"type": "status-update", "call": {"id": "v"}, "timestamp": HUGE}, "timestamp"),
        ({"type": "status-update", "call": {"id": "v"}, "status": HUGE}, "status"),
        (
            {"type": "tool-calls", "toolCallList": [{"id": HUGE, "function": {"name": "x"}}]},
            "toolCallId",
        ),
        (
            {
                "type": "tool-calls",
                "toolCallList": {"not": "a list"},
                "toolWithToolCallList": [{"toolCall": {"id": HUGE}}],
            },
            "toolCallId",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_oversized_key_fields_are_400_and_nothing_is_queued(aws, message, field):
    result = _post_raw(json.dumps({"message": message}).encode())
    assert result["statusCode"] == 400
    assert field in json.loads(response_body(result))["error"]
    assert aws.queued() == []


def test_bounded_fields_and_large_content_pass():
    message = {
        "type": "end-of-call-report",
        "call": {"id": "v" * 128, "phoneCallProviderId": "CA" + "1" * 32},
        "timestamp": 1795290000000,
        "artifact": {"transcript": "word " * 100_000},
    }
    assert vapi_message.parse(json.dumps({"message": message}).encode()) == message
