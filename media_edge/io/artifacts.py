"""What a call leaves behind: its recording (S3) and its picture, linked from the call record.

``CallArtifacts`` is the session's one handle for the core's ``RecordAudio``,
``FinishRecording`` and ``StorePicture`` actions. The record writes are two ``UpdateItem``s on
``SESSIONS_TABLE`` (``voicebridge.call_records``: the picture as its own item, the recording's
link on the record), through a DynamoDB client with tight timeouts in a pool of their own, so
neither a slow table nor a slow bucket can hold the event loop, the default executor (DNS for
new calls) or the call: all of it runs after the call's audio is over, and failures are logged
and counted, never raised.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools import Logger

from media_edge.io.recording import CallRecording, RecordingStore
from media_edge.io.telemetry import EdgeMetrics, log_call
from voicebridge import aws, telemetry
from voicebridge.call_records import (
    PICTURE_ATTRIBUTE,
    PICTURE_SK,
    RECORD_SK,
    RECORDING_ATTRIBUTE,
    call_pk,
    encode_picture,
)

WRITE_TIMEOUT_S = 15.0  # two tries of (2 s connect + 5 s read), then give up


CALL_RECORDS_BUDGET = aws.Budget(connect_timeout=2.0, read_timeout=5.0, max_attempts=2)


def dynamodb_client(endpoint_url: str | None) -> Any:
    """The call records' client: after the call, so a patient budget (never the call's time)."""
    return aws.client("dynamodb", CALL_RECORDS_BUDGET, endpoint_url)


class CallRecordWriter:
    """Per process: writes a finished call's picture and recording link to its record."""

    def __init__(self, table: str, client_factory: Callable[[], Any], retention_days: int) -> None:
        self.table = table
        self._client_factory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()
        self._retention_s = retention_days * 86_400
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="call-record")

    def client(self) -> Any:
        """Created on first use in the pool (boto3 takes ~0.3 s to import), once."""
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def store_picture(self, call_sid: str, picture: dict[str, Any], now: float) -> None:
        self._update(
            call_sid,
            PICTURE_SK,
            "SET #v = :v, call_sid = :sid, expires_at = :exp",
            {":v": {"S": encode_picture(picture)}},
            PICTURE_ATTRIBUTE,
            now,
        )

    def link_recording(self, call_sid: str, link: dict[str, Any], now: float) -> None:
        value = {
            "M": {
                "key": {"S": str(link["key"])},
                "durationMs": {"N": str(int(link["durationMs"]))},
                "channels": {"L": [{"S": str(c)} for c in link["channels"]]},
            }
        }
        # The worker owns the record's expiry (it sets it with the call's status); an edge that
        # writes first gives the record one, so nothing it adds outlives the retention.
        self._update(
            call_sid,
            RECORD_SK,
            "SET #v = :v, call_sid = if_not_exists(call_sid, :sid),"
            " expires_at = if_not_exists(expires_at, :exp)",
            {":v": value},
            RECORDING_ATTRIBUTE,
            now,
        )

    def _update(
        self,
        call_sid: str,
        sk: str,
        expression: str,
        values: dict[str, Any],
        name: str,
        now: float,
    ) -> None:
        self.client().update_item(
            TableName=self.table,
            Key={"pk": {"S": call_pk(call_sid)}, "sk": {"S": sk}},
            UpdateExpression=expression,
            ExpressionAttributeNames={"#v": name},
            ExpressionAttributeValues={
                **values,
                ":sid": {"S": call_sid},
                ":exp": {"N": str(int(now) + self._retention_s)},
            },
        )

    def close(self) -> None:
        self.pool.shutdown(wait=False)


class CallArtifacts:
    """One call's recording and picture: the session hands it the core's actions."""

    def __init__(
        self,
        recordings: RecordingStore | None,
        records: CallRecordWriter | None,
        logger: Logger,
        metrics: EdgeMetrics,
        keys: Callable[[], dict[str, str]],
    ) -> None:
        self._recordings = recordings
        self._records = records
        self._logger = logger
        self._metrics = metrics
        self._keys = keys  # the call's log keys (callSid once the stream started)
        self._recording: CallRecording | None = None

    def audio(self, data: bytes) -> None:
        """One second of the recording (from the event loop: never blocks)."""
        recording = self._recording
        if recording is None:
            if self._recordings is None:
                return
            keys = self._keys()
            recording = self._recordings.open(keys.get("callSid", ""), time.time(), keys)
            self._recording = recording
        recording.write(data)

    async def finish_recording(self, duration_ms: int) -> dict[str, Any] | None:
        """Upload what is left and link the recording from the call record; the link."""
        recording, self._recording = self._recording, None
        if recording is None:
            return None
        link = await recording.finish(duration_ms)
        if link is not None:
            log_call(self._logger, "info", "recording stored", self._keys(), key=link["key"])
            await self._write("recording", self._link, link)
        return link

    async def store_picture(self, picture: dict[str, Any]) -> None:
        await self._write("picture", self._picture, picture)

    def _link(self, link: dict[str, Any]) -> None:
        assert self._records is not None
        self._records.link_recording(self._keys()["callSid"], link, time.time())

    def _picture(self, picture: dict[str, Any]) -> None:
        assert self._records is not None
        self._records.store_picture(self._keys()["callSid"], picture, time.time())

    async def _write(self, what: str, fn: Any, value: dict[str, Any]) -> None:
        records = self._records
        if records is None or not self._keys().get("callSid"):
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await loop.run_in_executor(records.pool, fn, value)
        except Exception as exc:  # the call is over; its record lacks this, and says so here
            self._metrics.count(telemetry.CALL_RECORD_FAILURES, 1)
            error = f"{type(exc).__name__}: {exc}"[:300]
            log_call(self._logger, "warning", f"{what} not stored", self._keys(), error=error)
