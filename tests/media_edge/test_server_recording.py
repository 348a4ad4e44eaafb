"""A recorded call through the real edge (sockets, session, S3 and DynamoDB on a moto server):
the recording lands in the bucket and the call record links it; a broken bucket costs the call
nothing."""

from __future__ import annotations

import asyncio
import io
import json
import wave
from typing import Any

import boto3
import numpy as np
import pytest

from infra.local_aws import embedded_aws
from media_edge.dsp import ulaw_decode
from tests.media_edge.test_server import Stack, bridged, until
from voicebridge import telemetry

CALL_SID = "CA" + "5" * 32
CALLER_CODE = 0x20


@pytest.fixture(scope="module")
def aws():
    with embedded_aws(prefix="edge-rec") as env:
        yield env


def edge_env(aws: dict[str, str], tmp_path: Any, bucket: str | None = None) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": aws["AWS_ENDPOINT_URL"],
        "SESSIONS_TABLE": aws["SESSIONS_TABLE"],
        "RECORDINGS_BUCKET": bucket or aws["RECORDINGS_BUCKET"],
        "RECORDINGS_SPOOL_DIR": str(tmp_path),
    }


def call_items(aws: dict[str, str]) -> dict[str, dict[str, Any]]:
    dynamodb = boto3.client("dynamodb", endpoint_url=aws["AWS_ENDPOINT_URL"])
    items = dynamodb.query(
        TableName=aws["SESSIONS_TABLE"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"CALL#{CALL_SID}"}},
    )["Items"]
    return {item["sk"]["S"]: item for item in items}


async def real_time(caller: Any, frames: int) -> None:
    """Caller frames 20 ms apart, as Twilio sends them (the tape follows the clock: frames
    arriving faster than real time would be stamped later than they claim)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(frames):
        await asyncio.sleep(max(0.0, start + i * 0.02 - loop.time()))
        await caller.media(bytes([CALLER_CODE]) * 160, i * 20)


async def a_call(stack: Stack) -> None:
    """Two seconds of caller audio; the fake Vapi echoes it back as the assistant's."""
    async with stack.caller(CALL_SID) as caller:
        await bridged(stack, caller)
        await real_time(caller, 100)
        await until(lambda: len(caller.played) >= 160 * 100)
        await caller.stop()
        assert await caller.closed() == 1000
    assert stack.edge is not None
    await until(lambda: stack.edge.active_calls == 0)  # uploads are part of the session


async def test_the_recording_lands_in_the_bucket_and_the_record_links_it(stack, aws, tmp_path):
    await stack.start(env=edge_env(aws, tmp_path))
    await a_call(stack)
    items = call_items(aws)
    link = items["RECORD"]["recording"]["M"]
    key = link["key"]["S"]
    assert key.startswith("recordings/")
    assert key.endswith(f"/{CALL_SID}.wav")
    assert [c["S"] for c in link["channels"]["L"]] == ["caller", "assistant"]
    s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"])
    answer = s3.get_object(Bucket=aws["RECORDINGS_BUCKET"], Key=key)
    assert answer["ServerSideEncryption"] == "AES256"
    with wave.open(io.BytesIO(answer["Body"].read())) as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
        assert wav.getnframes() * 1000 // 8000 == int(link["durationMs"]["N"])
    heard = frames[:, 0] == ulaw_decode(bytes([CALLER_CODE]))[0]
    assert heard.sum() == 160 * 100  # every caller sample, on the left
    echoed = frames[:, 1] == ulaw_decode(bytes([CALLER_CODE]))[0]
    assert echoed.sum() >= 160 * 90  # the echo, on the right (its tail may follow the stop)
    picture = json.loads(items["PICTURE"]["picture"]["S"])
    assert picture["durationMs"] == pytest.approx(len(frames) / 8, abs=100)
    assert picture["turns"]["assistant"]
    assert list(tmp_path.rglob("*.[0-9]*")) == []  # the spool is empty again


async def test_a_broken_bucket_costs_the_call_nothing(stack, aws, tmp_path):
    await stack.start(env=edge_env(aws, tmp_path, bucket="no-such-bucket-here"))
    await a_call(stack)  # the same call: audio both ways, a normal close
    items = call_items(aws)
    assert "PICTURE" in items  # the picture is stored all the same
    assert stack.edge is not None
    counts = stack.edge.metrics._counts
    assert counts.get(telemetry.RECORDING_FAILURES) == 1
    assert telemetry.CALL_ERRORS not in counts
