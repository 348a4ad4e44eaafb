"""``GET /calls/{callSid}/recording``: a short-lived link to the call's WAV in the user's bucket.

Admin-authenticated like every admin route (``functions.admin.Admin``: widening that dependency
widens this route with it). The answer is a presigned S3 GET (SigV4, ``PRESIGN_SECONDS``): the
browser fetches the audio from S3 directly, so no audio passes through Lambda, and the link is
useless minutes later. The key comes from the call record (written by the edge), never from the
request, and must lie under the recordings prefix the API's role may read.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from functions import aws, web
from functions.admin import Admin
from voicebridge.call_records import RECORDINGS_PREFIX
from voicebridge.config import Settings
from voicebridge.identifiers import is_call_sid

router = APIRouter()
PRESIGN_SECONDS = 300  # long enough to start playing (and seek), short enough to be useless later


def presigned_get(config: Settings, key: str) -> str:
    """Presigning is local arithmetic (no request, so the client's budget never applies)."""
    url: str = aws.client("s3", config.aws_endpoint_url).generate_presigned_url(
        "get_object",
        Params={
            "Bucket": config.recordings_bucket,
            "Key": key,
            "ResponseContentType": "audio/wav",
        },
        ExpiresIn=PRESIGN_SECONDS,
    )
    return url


@router.get("/calls/{call_sid}/recording")
async def get_recording(request: Request, config: Admin) -> JSONResponse:
    call_sid = request.path_params["call_sid"]  # read here: a typed param costs a pydantic field
    if not config.recordings_bucket:
        raise HTTPException(404, "recordings are off (deploy with RecordingsEnabled=true)")
    record = web.store(config).get_call(call_sid, time.time()) if is_call_sid(call_sid) else None
    if record is None:
        raise HTTPException(404, "no such call")
    link = record.get("recording")
    key = link.get("key") if isinstance(link, dict) else None
    if not isinstance(link, dict) or not isinstance(key, str):
        raise HTTPException(404, "this call has no recording (yet: it is uploaded as it ends)")
    if not key.startswith(RECORDINGS_PREFIX):
        raise HTTPException(404, "this call has no recording (yet: it is uploaded as it ends)")
    return JSONResponse(
        {
            "url": presigned_get(config, key),
            "expiresIn": PRESIGN_SECONDS,
            "durationMs": link.get("durationMs"),
            "channels": link.get("channels"),
        },
        headers={"Cache-Control": "no-store"},  # a bearer link: never cached on the way
    )
