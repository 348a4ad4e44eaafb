"""Recordings to the user's S3 bucket while the call runs: spool to disk, upload parts, finish.

The core hands over one second of 16-bit stereo PCM at a time (``RecordAudio``, 32 KB). Memory
per call stays at what is in flight to the disk (normally one chunk): the bytes wait for S3 on
the task's ephemeral storage, one spool file per S3 part (``PartCutter``: exactly 5 MiB each,
the last one shorter). Part 1 starts with a 44-byte header placeholder and stays on disk until
the end, when its header can say the real sizes; every later part is uploaded as soon as it is
whole, so at the end only the last part and part 1 remain: a short call is one ``PutObject``,
a long one ``CompleteMultipartUpload`` moments after the hang-up. The alternative, a 5 MiB
buffer in memory per call, would be 20x the edge's whole per-call budget (BENCHMARKS.md).

Nothing here can hurt the call: disk and S3 work runs in a small thread pool of its own (the
loop only cuts bytes into pieces), one writer and one uploader per call in order, every S3
call bounded by the client's timeouts and a few retries; any failure marks the recording
failed (logged once, ``RecordingFailures`` counted), aborts the upload, deletes the spool and
drops what comes after. Uploads that fall behind stop at ``MAX_SPOOLED_PARTS`` per call: the
recording is given up rather than the disk filled.

Every object is written with SSE-S3 (``ServerSideEncryption=AES256``, which the bucket also
applies by default); the bucket policy refuses plain HTTP, and boto3 speaks HTTPS to S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger

from media_edge.core.recording import MIN_PART_BYTES, PartCutter, Piece, wav_header
from media_edge.io.telemetry import EdgeMetrics, log_call
from voicebridge import aws, telemetry
from voicebridge.call_records import recording_key, recording_link

UPLOAD_THREADS = 4  # per process: writes are tiny, uploads ~0.1 s per 5 MiB in-region
MAX_SPOOLED_PARTS = 4  # whole parts waiting for S3 per call (20 MiB): beyond, give it up
MAX_PENDING_BYTES = 512 * 1024  # bytes waiting for the disk per call (16 s): beyond, give up
FINISH_TIMEOUT_S = 60.0  # the last two parts and the completion, retries included
SSE = "AES256"
CONTENT_TYPE = "audio/wav"


S3_BUDGET = aws.Budget(connect_timeout=2.0, read_timeout=10.0, max_attempts=3)


def s3_client(endpoint_url: str | None) -> Any:
    """S3 with tight time budgets: an upload waits at most ~3 x 12 s, never the call."""
    return aws.client("s3", S3_BUDGET, endpoint_url)


class RecordingStore:
    """Per process: the bucket, the spool directory, one S3 client and the thread pool."""

    def __init__(
        self,
        bucket: str,
        spool_dir: str | None,
        client_factory: Callable[[], Any],
        logger: Logger,
        metrics: EdgeMetrics,
        part_bytes: int = MIN_PART_BYTES,
    ) -> None:
        self.bucket = bucket
        root = Path(spool_dir or tempfile.gettempdir()) / "voicebridge-recordings"
        self.spool = root / str(os.getpid())  # per process: workers never share a file
        self._root = root
        self._client_factory = client_factory
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.logger = logger
        self.metrics = metrics
        self.part_bytes = part_bytes
        self.pool = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="recording")

    async def start(self) -> None:
        """Create the spool and the client off the loop (boto3 takes ~0.3 s to import, and its
        objects should exist before the process freezes its start-up heap); clear what dead
        processes left behind."""
        await asyncio.get_running_loop().run_in_executor(self.pool, self._prepare)

    def _prepare(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        for other in self._root.iterdir():
            if other != self.spool and other.name.isdigit() and not _alive(int(other.name)):
                shutil.rmtree(other, ignore_errors=True)
        self.client()

    def client(self) -> Any:
        with self._client_lock:  # boto3 sessions are not thread-safe to create
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def open(self, call_sid: str, started_at_epoch_s: float, keys: dict[str, str]) -> CallRecording:
        return CallRecording(self, recording_key(call_sid, started_at_epoch_s), keys)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=False)


@dataclass
class _Upload:
    """Thread-side state of one recording (touched by one job at a time per kind)."""

    key: str
    prefix: Path
    upload_id: str | None = None
    etags: dict[int, str] = field(default_factory=dict)

    def path(self, part: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.{part}")


class CallRecording:
    """One call's recording. ``write`` never blocks; ``finish`` returns the record's link (or
    None if the recording failed), after which the spool is gone either way."""

    def __init__(self, store: RecordingStore, key: str, keys: dict[str, str]) -> None:
        self._store = store
        self._loop = asyncio.get_running_loop()
        self._keys = keys
        self._cutter = PartCutter(store.part_bytes)
        self._upload = _Upload(key, store.spool / f"{secrets.token_hex(8)}")
        self._pending: list[Piece] = []
        self._pending_bytes = 0
        self._writing: asyncio.Future[list[int]] | None = None
        self._whole: list[int] = []  # parts written to disk, waiting for the uploader
        self._uploading: asyncio.Future[None] | None = None
        self.data_bytes = 0
        self.failed = ""

    @property
    def key(self) -> str:
        return self._upload.key

    @property
    def pending_bytes(self) -> int:
        """Bytes handed over that no writer has taken yet (what this call holds in memory)."""
        return self._pending_bytes

    def write(self, data: bytes) -> None:
        if self.failed:
            return
        self.data_bytes += len(data)
        self._pending += self._cutter.cut(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > MAX_PENDING_BYTES:
            self._fail("the spool disk falls behind")
            return
        self._next_write()

    async def finish(self, duration_ms: int) -> dict[str, Any] | None:
        """Write the rest, upload what is left, write the header: the link for the record."""
        try:
            async with asyncio.timeout(FINISH_TIMEOUT_S):
                while not self.failed:
                    self._next_write()
                    self._next_upload()
                    running = [f for f in (self._writing, self._uploading) if f is not None]
                    if not running:
                        break
                    await asyncio.wait(running)
                if not self.failed:
                    await self._run(self._complete, self._cutter.part, self.data_bytes)
        except TimeoutError:
            self._fail("finishing took too long")
        except Exception as exc:  # S3 or the disk: already logged by _fail
            self._fail(f"{type(exc).__name__}: {exc}")
        if self.failed:
            await self._cleanup()
            return None
        self._store.metrics.count(telemetry.RECORDINGS_STORED, 1)
        return recording_link(self.key, duration_ms)

    # -- the loop side: hand work to the pool, one job per kind at a time ---------------------

    def _next_write(self) -> None:
        if self._writing is not None or not self._pending:
            return
        pieces, self._pending, self._pending_bytes = self._pending, [], 0
        self._writing = self._spawn(self._write, pieces)
        self._writing.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[list[int]]) -> None:
        self._writing = None
        if future.cancelled() or future.exception() is not None:
            self._fail(_why(future))
            return
        self._whole += future.result()
        self._next_upload()
        self._next_write()

    def _next_upload(self) -> None:
        if self.failed or self._uploading is not None or not self._whole:
            return
        if len(self._whole) > MAX_SPOOLED_PARTS:
            self._fail("S3 uploads fall behind")
            return
        part = self._whole.pop(0)
        self._uploading = self._spawn(self._upload_part, part)
        self._uploading.add_done_callback(self._uploaded)

    def _uploaded(self, future: asyncio.Future[None]) -> None:
        self._uploading = None
        if future.cancelled() or future.exception() is not None:
            self._fail(_why(future))
            return
        self._next_upload()

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return self._loop.run_in_executor(self._store.pool, fn, *args)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._spawn(fn, *args)

    def _fail(self, why: str) -> None:
        if self.failed:
            return
        self.failed = why
        self._pending, self._pending_bytes, self._whole = [], 0, []
        store = self._store
        store.metrics.count(telemetry.RECORDING_FAILURES, 1)
        log_call(store.logger, "warning", "recording failed", self._keys, why=why[:300])

    async def _cleanup(self) -> None:
        for future in (self._writing, self._uploading):
            if future is not None:
                with contextlib.suppress(Exception):
                    await future
        with contextlib.suppress(Exception):
            await self._run(self._abort)

    # -- the pool side (blocking: disk and S3) ------------------------------------------------

    def _write(self, pieces: list[Piece]) -> list[int]:
        """Append pieces to their part files; the parts that became whole (part 1 excepted:
        it waits for its header)."""
        whole: list[int] = []
        upload = self._upload
        for piece in pieces:
            path = upload.path(piece.part)
            mode = "r+b" if path.exists() else "wb"
            with path.open(mode) as spool:
                if mode == "wb" and piece.part == 1:
                    spool.write(wav_header(0))  # placeholder: the real one at the end
                spool.seek(0, os.SEEK_END)
                spool.write(piece.data)
            if piece.completes and piece.part > 1:
                whole.append(piece.part)
        return whole

    def _upload_part(self, part: int) -> None:
        upload, store = self._upload, self._store
        s3 = store.client()
        if upload.upload_id is None:
            created = s3.create_multipart_upload(
                Bucket=store.bucket,
                Key=upload.key,
                ContentType=CONTENT_TYPE,
                ServerSideEncryption=SSE,
            )
            upload.upload_id = created["UploadId"]
        path = upload.path(part)
        with path.open("rb") as body:
            answer = s3.upload_part(
                Bucket=store.bucket,
                Key=upload.key,
                UploadId=upload.upload_id,
                PartNumber=part,
                Body=body,
            )
        upload.etags[part] = answer["ETag"]
        path.unlink()

    def _complete(self, last_part: int, data_bytes: int) -> None:
        upload, store = self._upload, self._store
        first = upload.path(1)
        if not first.exists():  # a call that ended before its first second of audio
            with first.open("wb") as spool:
                spool.write(wav_header(0))
        with first.open("r+b") as spool:
            spool.write(wav_header(data_bytes))
        s3 = store.client()
        if upload.upload_id is None and last_part <= 2 and not upload.path(2).exists():
            with first.open("rb") as body:  # one part: a plain PUT
                s3.put_object(
                    Bucket=store.bucket,
                    Key=upload.key,
                    Body=body,
                    ContentType=CONTENT_TYPE,
                    ServerSideEncryption=SSE,
                )
            first.unlink()
            return
        last = upload.path(last_part)
        if last_part > 1 and last.exists() and last.stat().st_size:
            self._upload_part(last_part)
        self._upload_part(1)
        parts = [{"PartNumber": n, "ETag": etag} for n, etag in sorted(upload.etags.items())]
        s3.complete_multipart_upload(
            Bucket=store.bucket,
            Key=upload.key,
            UploadId=upload.upload_id,
            MultipartUpload={"Parts": parts},
        )
        for leftover in upload.prefix.parent.glob(f"{upload.prefix.name}.*"):
            leftover.unlink(missing_ok=True)

    def _abort(self) -> None:
        upload = self._upload
        for leftover in upload.prefix.parent.glob(f"{upload.prefix.name}.*"):
            leftover.unlink(missing_ok=True)
        if upload.upload_id is not None:
            self._store.client().abort_multipart_upload(
                Bucket=self._store.bucket, Key=upload.key, UploadId=upload.upload_id
            )


def _why(future: asyncio.Future[Any]) -> str:
    if future.cancelled():
        return "cancelled"
    exc = future.exception()
    return f"{type(exc).__name__}: {exc}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
