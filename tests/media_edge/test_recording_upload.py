"""The recording's S3 shell against a real moto server: parts, header, encryption, failures.

moto enforces S3's rules that matter here: every part but the last is at least 5 MiB
(``EntityTooSmall`` on completion otherwise), and objects carry their encryption.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import threading
import wave
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.local_aws import embedded_aws
from media_edge.core.recording import BYTES_PER_MS, HEADER_BYTES, MIN_PART_BYTES
from media_edge.io.recording import (
    MAX_PENDING_BYTES,
    UPLOAD_THREADS,
    RecordingStore,
    s3_client,
)
from media_edge.io.telemetry import EdgeMetrics, edge_logger
from tests.deploy.test_recordings_template import EDGE_S3_OPERATIONS
from voicebridge import telemetry

CALL_SID = "CA" + "7" * 32
SECOND = 1000 * BYTES_PER_MS  # what the core hands over at a time


@pytest.fixture(scope="module")
def aws():
    with embedded_aws(prefix="upload") as env:
        yield env


class Spy:
    """The S3 client, with every call it makes written down (name, part number, body size);
    the calls named in ``fail`` raise as a vanished S3 would."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, int | None, int | None]] = []
        self.fail: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            body = kwargs.get("Body")
            size = os.fstat(body.fileno()).st_size if hasattr(body, "fileno") else None
            self.calls.append((name, kwargs.get("PartNumber"), size))
            if name in self.fail:
                raise OSError("S3 went away")
            return method(**kwargs)

        return call

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


def store_for(env: dict[str, str], tmp_path: Path, endpoint: str | None = None) -> tuple:
    spy = Spy(s3_client(endpoint or env["AWS_ENDPOINT_URL"]))
    metrics = EdgeMetrics(None)
    store = RecordingStore(
        env["RECORDINGS_BUCKET"], str(tmp_path), lambda: spy, edge_logger(), metrics
    )
    return store, spy, metrics


async def paced(recording: Any, chunks: list[bytes]) -> None:
    """Hand the chunks over as a call does: the next only once the disk took the last (the
    core makes one a second; the disk takes one in well under that)."""
    for chunk in chunks:
        recording.write(chunk)
        await until(lambda: recording.pending_bytes == 0 or bool(recording.failed))


async def until(predicate: Any) -> None:
    async with asyncio.timeout(30):
        while not predicate():  # noqa: ASYNC110 - the pool's progress has no event to wait on
            await asyncio.sleep(0.001)


def pcm(seconds: int) -> list[bytes]:
    """Distinct bytes every second, so a misplaced part shows."""
    return [hashlib.sha256(str(i).encode()).digest() * (SECOND // 32) for i in range(seconds)]


def read(env: dict[str, str], key: str) -> tuple[bytes, dict[str, Any]]:
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    answer = s3.get_object(Bucket=env["RECORDINGS_BUCKET"], Key=key)
    return answer["Body"].read(), answer


def frames_of(data: bytes) -> bytes:
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        return wav.readframes(wav.getnframes())


async def test_a_short_call_is_one_encrypted_put_that_wave_reads(aws, tmp_path):
    store, spy, metrics = store_for(aws, tmp_path)
    await store.start()
    try:
        recording = store.open(CALL_SID, 1_800_000_000, {"callSid": CALL_SID})
        chunks = pcm(3)
        await paced(recording, chunks)
        link = await recording.finish(3000)
    finally:
        store.close()
    assert link == {
        "key": f"recordings/2027/01/15/{CALL_SID}.wav",
        "durationMs": 3000,
        "channels": ["caller", "assistant"],
    }
    assert spy.names() == ["put_object"]
    data, answer = read(aws, link["key"])
    assert answer["ServerSideEncryption"] == "AES256"
    assert answer["ContentType"] == "audio/wav"
    assert frames_of(data) == b"".join(chunks)
    assert list(store.spool.iterdir()) == []  # nothing left on the disk
    assert metrics._counts == {telemetry.RECORDINGS_STORED: 1}


async def test_a_long_call_goes_up_in_5_mib_parts_while_it_runs(aws, tmp_path):
    store, spy, _ = store_for(aws, tmp_path)
    await store.start()
    seconds = 2 * MIN_PART_BYTES // SECOND + 40  # two whole parts and some
    chunks = pcm(seconds)
    try:
        recording = store.open(CALL_SID, 1_800_000_000, {"callSid": CALL_SID})
        await paced(recording, chunks)
        await until(lambda: ("upload_part", 2, MIN_PART_BYTES) in spy.calls)
        assert "complete_multipart_upload" not in spy.names()  # part 2 went up mid-call
        link = await recording.finish(seconds * 1000)
    finally:
        store.close()
    assert link is not None
    parts = [(number, size) for name, number, size in spy.calls if name == "upload_part"]
    total = HEADER_BYTES + seconds * SECOND
    # part 2 as soon as it was whole; at the end the last part, then part 1 with its header
    assert parts == [
        (2, MIN_PART_BYTES),
        (3, total - 2 * MIN_PART_BYTES),
        (1, MIN_PART_BYTES),
    ]
    assert set(spy.names()) <= set(EDGE_S3_OPERATIONS)  # what the task role allows, no more
    assert spy.names()[0] == "create_multipart_upload"
    assert spy.names()[-1] == "complete_multipart_upload"
    data, answer = read(aws, link["key"])
    assert answer["ServerSideEncryption"] == "AES256"
    assert len(data) == total
    assert frames_of(data) == b"".join(chunks)  # the header says exactly these sizes
    assert list(store.spool.iterdir()) == []


async def test_a_stalled_disk_gives_the_recording_up_instead_of_holding_audio(aws, tmp_path):
    """``write`` never waits; what waits for the disk is bounded per call, then dropped."""
    store, _, metrics = store_for(aws, tmp_path)
    await store.start()
    stalled = threading.Event()
    for _ in range(UPLOAD_THREADS):  # every pool thread stuck, as on a hung disk
        store.pool.submit(stalled.wait, 10)
    try:
        recording = store.open(CALL_SID, 1_800_000_000, {"callSid": CALL_SID})
        seconds = MAX_PENDING_BYTES // SECOND + 2
        for chunk in pcm(seconds):
            recording.write(chunk)
        assert recording.failed
        assert recording.pending_bytes == 0  # dropped, not held
        stalled.set()
        assert await recording.finish(seconds * 1000) is None
    finally:
        stalled.set()
        store.close()
    assert metrics._counts.get(telemetry.RECORDING_FAILURES) == 1


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_s3_unreachable_fails_the_recording_and_nothing_else(aws, tmp_path):
    store, _, metrics = store_for(aws, tmp_path, endpoint=closed_port())
    await store.start()
    try:
        recording = store.open(CALL_SID, 1_800_000_000, {"callSid": CALL_SID})
        await paced(recording, pcm(2 * MIN_PART_BYTES // SECOND + 5))  # uploads mid-call
        link = await recording.finish(1000)
    finally:
        store.close()
    assert link is None
    assert recording.failed
    assert metrics._counts.get(telemetry.RECORDING_FAILURES) == 1
    assert list(store.spool.iterdir()) == []  # the spool is cleaned up all the same


async def test_a_failed_completion_aborts_the_multipart_upload(aws, tmp_path):
    store, spy, _ = store_for(aws, tmp_path)
    spy.fail.add("complete_multipart_upload")
    await store.start()
    try:
        recording = store.open(CALL_SID, 1_800_000_000, {"callSid": CALL_SID})
        await paced(recording, pcm(2 * MIN_PART_BYTES // SECOND + 5))
        assert await recording.finish(1000) is None
    finally:
        store.close()
    assert "abort_multipart_upload" in spy.names()
    assert set(spy.names()) <= set(EDGE_S3_OPERATIONS)
    s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1")
    assert not s3.list_multipart_uploads(Bucket=aws["RECORDINGS_BUCKET"]).get("Uploads")
    assert list(store.spool.iterdir()) == []


async def test_spools_of_dead_processes_are_cleared_at_start(aws, tmp_path):
    root = tmp_path / "voicebridge-recordings"
    dead = root / "999999999"  # no such process
    dead.mkdir(parents=True)
    (dead / "x.1").write_bytes(b"old")
    store, _, _ = store_for(aws, tmp_path)
    await store.start()
    store.close()
    assert not dead.exists()
    assert store.spool.exists()
