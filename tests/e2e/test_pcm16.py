"""The same call with the edge in pcm16 mode: 16 kHz linear PCM to Vapi, resampled both ways."""

import pytest

from infra.local import LocalStack
from tests.e2e.helpers import assert_no_leaks, call, record_when, stack_options, talk

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pcm16_stack():
    with LocalStack(stack_options("e2e-pcm16", EDGE_AUDIO_FORMAT="pcm16")) as stack:
        yield stack


async def test_pcm16_call(pcm16_stack):
    stack = pcm16_stack
    baseline = stack.stack_tasks()
    report = await call(stack, talk())
    assert report.protocol_errors == []
    assert report.first_audio_ms is not None
    assert len(report.response_ms) == 1  # the caller's speech survived 8 -> 16 kHz and back
    transport = next(iter(stack.vapi.calls.values())).record["transport"]
    assert transport["audioFormat"] == {
        "format": "pcm_s16le",
        "container": "raw",
        "sampleRate": 16000,
    }
    emulated = next(iter(stack.vapi.calls.values()))
    assert emulated.machine.turns == 1
    record_when(stack, report.call_sid, lambda r: r.get("call_status") == "completed")
    assert_no_leaks(stack, baseline)
