"""GET /calls/{callSid}/recording and the picture in GET /calls/{callSid}: what the edge stored,
read back through the API (admin auth, presigned S3 link, no audio through Lambda)."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest

from functions import recordings, web
from infra.local_aws import create_buckets, embedded_aws, load_template
from media_edge.io.artifacts import CallRecordWriter
from tests.functions.conftest import ADMIN_KEY, CALL_SID, apigw_event, invoke, response_body
from voicebridge.call_records import recording_key, recording_link
from voicebridge.config import load_settings

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
PICTURE = {"version": 1, "durationMs": 1200, "levels": {"caller": [-30], "assistant": [-99]}}


@pytest.fixture
def bucket(aws, monkeypatch):
    env = create_buckets(boto3.client("s3", region_name="us-east-1"), load_template(), "test")
    monkeypatch.setenv("RECORDINGS_BUCKET", env["RECORDINGS_BUCKET"])
    return env["RECORDINGS_BUCKET"]


def writer(aws) -> CallRecordWriter:
    """The edge's own writer, on the API's table."""
    return CallRecordWriter(aws.env["SESSIONS_TABLE"], lambda: aws.dynamodb, 90)


def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    result = invoke(apigw_event("GET", path, headers=AUTH if headers is None else headers))
    return result["statusCode"], json.loads(response_body(result) or b"{}")


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer forged"}])
def test_the_recording_route_needs_the_admin_key(aws, bucket, headers):
    status, _ = get(f"/calls/{CALL_SID}/recording", headers)
    assert status == 401


def test_a_recorded_call_answers_a_short_lived_presigned_get(aws, bucket):
    key = recording_key(CALL_SID, time.time())
    writer(aws).link_recording(CALL_SID, recording_link(key, 61_000), time.time())
    status, body = get(f"/calls/{CALL_SID}/recording")
    assert status == 200
    assert body["expiresIn"] == recordings.PRESIGN_SECONDS == 300
    assert body["durationMs"] == 61_000
    assert body["channels"] == ["caller", "assistant"]
    url = urlsplit(body["url"])
    assert url.path.endswith(f"/{key}")
    query = parse_qs(url.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]  # SigV4, as SSE buckets require
    assert query["X-Amz-Expires"] == ["300"]
    assert query["response-content-type"] == ["audio/wav"]


@pytest.mark.parametrize(
    ("call_sid", "message"),
    [("CA" + "9" * 32, "no such call"), ("not-a-sid", "no such call"), (CALL_SID, "no recording")],
)
def test_no_recording_is_a_404_that_says_why(aws, bucket, call_sid, message):
    writer(aws).store_picture(CALL_SID, PICTURE, time.time())  # the call exists, unrecorded
    status, body = get(f"/calls/{call_sid}/recording")
    assert status == 404
    assert message in body["error"]


def test_with_recordings_off_the_route_says_so(aws):
    status, body = get(f"/calls/{CALL_SID}/recording")
    assert status == 404
    assert "RecordingsEnabled" in body["error"]


def test_a_key_outside_the_recordings_prefix_is_never_signed(aws, bucket):
    writer(aws).link_recording(CALL_SID, recording_link("secrets/other.wav", 1), time.time())
    status, _ = get(f"/calls/{CALL_SID}/recording")
    assert status == 404


def test_the_call_record_carries_the_picture_and_the_recording_link(aws, bucket):
    now = time.time()
    key = recording_key(CALL_SID, now)
    writer(aws).store_picture(CALL_SID, PICTURE, now)
    writer(aws).link_recording(CALL_SID, recording_link(key, 1200), now)
    status, body = get(f"/calls/{CALL_SID}")
    assert status == 200
    assert body["picture"] == PICTURE
    assert body["recording"] == {
        "key": key,
        "durationMs": 1200,
        "channels": ["caller", "assistant"],
    }
    expires = {item["sk"]["S"]: int(item["expires_at"]["N"]) for item in aws.items()}
    assert expires["PICTURE"] == pytest.approx(now + 90 * 86_400, abs=5)  # the record's retention
    assert expires["RECORD"] == pytest.approx(now + 90 * 86_400, abs=5)


def test_the_presigned_link_plays_from_a_real_s3_endpoint(monkeypatch):
    """Against a moto server (not in-process mocks): the browser's GET of the link works."""
    with embedded_aws(prefix="presign") as env:
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
        key = recording_key(CALL_SID, time.time())
        s3.put_object(
            Bucket=env["RECORDINGS_BUCKET"],
            Key=key,
            Body=b"RIFF....WAVE",
            ServerSideEncryption="AES256",
        )
        config = load_settings("api", {**_api_env(), **env})
        url = recordings.presigned_get(config, key)
        answer = httpx.get(url, timeout=10)
        assert answer.status_code == 200
        assert answer.content == b"RIFF....WAVE"
        assert answer.headers["content-type"] == "audio/wav"


def _api_env() -> dict[str, str]:
    return {
        "TWILIO_AUTH_TOKEN": "t" * 16,
        "EDGE_PUBLIC_URL": "wss://edge.example.com",
        "STREAM_TOKEN_SECRET": "s" * 32,
        "VAPI_WEBHOOK_SECRET": "w" * 16,
        "ADMIN_API_KEY": "a" * 24,
        "EVENTS_QUEUE_URL": "https://sqs.example.com/q",
    }


def test_web_settings_see_the_bucket(aws, bucket):
    assert web.settings().recordings_bucket == bucket
