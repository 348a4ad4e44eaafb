"""A recorded call end to end: the simulated caller's own ear against the edge's recording.

The simulated Twilio (infra/caller) keeps what the caller heard, frame by frame; the edge
records what it believes the caller heard. Through the whole stack (moto's S3 and DynamoDB,
the worker, the API's presigned link) the two must agree, barge-in and clear included.
"""

import io
import wave

import httpx
import numpy as np
import pytest

from infra.audio import ulaw_decode, ulaw_encode
from infra.vapi_emulator import Script
from media_edge.dsp import level_dbfs
from tests.audio_match import best_match
from tests.e2e.helpers import UTTERANCE, VAD_ONLY_PLAN, assistant_changed, call, record_when, talk
from tests.e2e.test_calls import assert_clean, sid

pytestmark = pytest.mark.e2e
FRAME = 160  # samples per 20 ms


def fetch_recording(stack, call_sid):
    answer = httpx.get(
        f"{stack.api_url}/calls/{call_sid}/recording", headers=stack.admin_headers(), timeout=10
    )
    assert answer.status_code == 200, answer.text
    audio = httpx.get(answer.json()["url"], timeout=10)  # straight from S3, as a browser does
    assert audio.status_code == 200
    with wave.open(io.BytesIO(audio.content)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    return frames[:, 0], frames[:, 1]


def loud(leg, threshold_dbfs=-45.0):
    """Per 20 ms frame: assistant speech, by the simulated caller's own rule."""
    frames = leg[: leg.size // FRAME * FRAME].reshape(-1, FRAME)
    return np.array([level_dbfs(frame) > threshold_dbfs for frame in frames])


async def test_the_recording_is_what_the_caller_heard(clean_stack, tmp_path):
    stack = clean_stack
    call_sid = sid()
    stack.vapi.scripts[call_sid] = Script(
        greeting_ms=1000, think_ms=100, end_of_turn_ms=300, reply_max_ms=2000
    )
    with assistant_changed(stack, stopSpeakingPlan=VAD_ONLY_PLAN):  # a barge-in that clears
        report = await call(stack, talk(barge_in_after_ms=300), call_sid=call_sid)
    assert_clean(report)
    assert report.clears >= 1
    assert report.cleared_ms > 0  # Twilio held assistant audio the caller never heard
    record = record_when(stack, call_sid, lambda r: r.get("recording") and r.get("picture"))
    caller, assistant = fetch_recording(stack, call_sid)

    # The right channel is what the caller's ear got, frame by frame, cleared audio absent.
    heard = np.array(report.heard_speech)
    recorded = loud(assistant)
    n = min(heard.size, recorded.size) - 10
    agreement = {
        shift: float(np.mean(recorded[5 + shift : 5 + shift + n] == heard[5 : 5 + n]))
        for shift in range(-5, 6)
    }
    shift = max(agreement, key=agreement.get)
    assert abs(shift) <= 3, agreement  # aligned within 60 ms (here: the loopback)
    # A loaded machine delays the simulated Twilio's frames now and then (a gap it really
    # played that the edge did not see), hence not 100 %. What a clear removes here is small
    # (the pause already let Twilio's lead drain): tests/media_edge/test_call_recording.py
    # holds the clear to the frame.
    assert agreement[shift] >= 0.94, agreement
    assert abs(int(recorded.sum()) - int(heard.sum())) <= 5  # the same amount of speech
    # ... and it is the same audio: every 200 ms of speech the caller heard is in the
    # recording, within 60 ms of where the caller heard it
    heard_pcm = ulaw_decode(report.heard).astype(np.float64)
    right = assistant.astype(np.float64)
    slack = 8 * 60
    windows = [
        start
        for start in range(slack, min(heard_pcm.size, right.size) - 1600 - slack, 800)
        if heard[start // FRAME : start // FRAME + 10].sum() >= 8
    ]
    assert len(windows) >= 5
    for start in windows:
        lag, correlation = best_match(
            right[start - slack : start + 1600 + slack], heard_pcm[start : start + 1600]
        )
        assert correlation > 0.95, (start, lag, correlation)

    # The left channel is the caller: both utterances, where they were said.
    _, said = best_match(caller.astype(np.float64), ulaw_decode(ulaw_encode(UTTERANCE)))
    assert said > 0.95

    picture = record["picture"]
    assert picture["clears"]
    assert picture["interruptions"]
    assert picture["durationMs"] == pytest.approx(caller.size / 8, abs=100)
    assert len(picture["levels"]["caller"]) == pytest.approx(caller.size / 800, abs=1)
    assert record["recording"]["durationMs"] == caller.size // 8
