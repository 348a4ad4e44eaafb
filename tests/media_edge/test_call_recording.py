"""The recording and the picture through the Call, on an explicit clock: what the caller heard.

A simulated Twilio plays what it is sent in order, echoes each mark once the audio before it
has played (at once after a ``clear``), and sends a caller frame every 20 ms (its timestamp =
ms since the stream started); Vapi's audio is one mu-law code per reply, so the WAV says, slot
by slot, whose audio the caller heard.
"""

from __future__ import annotations

import io
import json
import tracemalloc
import wave

import numpy as np
import pytest

from media_edge.core import Call
from media_edge.core.actions import (
    FinishRecording,
    Publish,
    RecordAudio,
    SendToTwilio,
    StorePicture,
)
from media_edge.core.events import Tick, VapiAudio
from media_edge.core.recording import BYTES_PER_MS, CHANNEL_NAMES, wav_header
from media_edge.dsp import ulaw_decode
from media_edge.protocol.twilio import TwilioMark, TwilioStop
from media_edge.protocol.vapi import VapiCallEnded, VapiSpeechUpdate, VapiUserInterrupted
from tests.media_edge.test_call import STREAM_SID, bridged, media

CALLER = 0x10  # the caller's audio, every frame
REPLY_A, REPLY_B = 0x30, 0x50  # two assistant replies
SILENCE = 0xFF
START = 1.0  # bridged() sends ``start`` at 1 ms: the tape's origin


def level(code: int) -> int:
    return int(ulaw_decode(bytes([code]))[0])


class Sim:
    """One call on a clock: Twilio's side (caller frames, mark echoes), the actions' effects."""

    def __init__(self, **config) -> None:
        self.call: Call = bridged(record=True, **config)
        self.now = 301.0
        self.pcm = bytearray()
        self.finished: int | None = None
        self.picture: dict | None = None
        self.published: list[dict] = []
        self._marks: list[tuple[float, str]] = []  # (when Twilio echoes it, name)
        self._played_until = 0.0  # when Twilio's buffer runs dry

    def feed(self, event) -> None:
        for action in self.call.feed(event, self.now):
            if isinstance(action, RecordAudio):
                self.pcm += action.data
            elif isinstance(action, FinishRecording):
                self.finished = action.duration_ms
            elif isinstance(action, StorePicture):
                self.picture = json.loads(json.dumps(action.picture))  # what gets stored
            elif isinstance(action, Publish) and action.kind == "picture":  # not the console's
                assert len(json.dumps(action.data)) <= 8192  # the live feed's limit
                self.published.append(action.data)
            elif isinstance(action, SendToTwilio):
                self._twilio(json.loads(action.text))

    def _twilio(self, message: dict) -> None:
        kind = message["event"]
        if kind == "media":
            ms = len(message["media"]["payload"]) * 3 // 4 // 8
            self._played_until = max(self._played_until, self.now) + ms
        elif kind == "mark":
            self._marks.append((max(self._played_until, self.now), message["mark"]["name"]))
        elif kind == "clear":
            self._played_until = self.now
            self._marks = [(self.now, name) for _, name in self._marks]

    def run(self, ms: float, caller: int | None = CALLER) -> None:
        """``ms`` of call: a caller frame every 20 ms (None: the caller's line is silent)."""
        end = self.now + ms
        while self.now + 20 <= end:
            self.now += 20
            due = [name for at, name in self._marks if at <= self.now]
            self._marks = [(at, name) for at, name in self._marks if at > self.now]
            for name in due:
                self.feed(TwilioMark(STREAM_SID, name))
            deadline = self.call.next_deadline
            if deadline is not None and deadline <= self.now:
                self.feed(Tick())
            code = SILENCE if caller is None else caller
            self.feed(media(round(self.now - START), bytes([code]) * 160))

    def say(self, code: int, ms: int) -> None:
        """Vapi sends ``ms`` of one reply at once (it streams faster than real time)."""
        self.feed(VapiAudio(bytes([code]) * (8 * ms)))

    def hang_up(self) -> None:
        self.feed(TwilioStop(STREAM_SID))
        assert self.call.closed

    def wav(self) -> tuple[np.ndarray, np.ndarray]:
        """The recording as a file (header written at the end), read back with ``wave``."""
        assert self.finished is not None
        data = wav_header(len(self.pcm)) + bytes(self.pcm)
        with wave.open(io.BytesIO(data)) as wav:
            assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
            frames = wav.readframes(wav.getnframes())
            assert wav.getnframes() * 4 == len(self.pcm)
        samples = np.frombuffer(frames, dtype="<i2").reshape(-1, 2)
        return samples[:, 0], samples[:, 1]

    @staticmethod
    def at(ms: float) -> slice:
        """Samples of the 20 ms slot holding ``ms`` (ms from the stream start)."""
        i = int(ms // 20) * 160
        return slice(i, i + 160)


def slots(leg: np.ndarray, code: int) -> np.ndarray:
    """Which 20 ms slots of ``leg`` hold ``code``'s audio, as slot indexes."""
    per_slot = leg[: len(leg) // 160 * 160].reshape(-1, 160)
    return np.flatnonzero((per_slot == level(code)).all(axis=1))


def test_caller_left_assistant_right_on_one_clock():
    sim = Sim()
    sim.run(200)
    sim.say(REPLY_A, 400)
    sim.run(1000)
    sim.hang_up()
    left, right = sim.wav()
    assert CHANNEL_NAMES == ("caller", "assistant")
    # caller: every slot from its first frame (sent at 320 ms) to the hang-up
    caller = slots(left, CALLER)
    assert caller[0] == (321 - 1) // 20
    assert len(caller) == 60
    # assistant: the whole reply, 400 ms, contiguous, starting when it was first sent
    played = slots(right, REPLY_A)
    assert len(played) == 20
    assert list(played) == list(range(played[0], played[0] + 20))
    assert played[0] * 20 == pytest.approx(sim.picture["firstAudio"]["at"], abs=20)
    # nothing else on either leg
    assert (left[: caller[0] * 160] == 0).all()
    assert len(slots(right, SILENCE)) == len(right) // 160 - 20
    assert sim.finished == len(sim.pcm) // BYTES_PER_MS


def test_a_cleared_reply_is_absent_from_the_recording():
    sim = Sim()
    sim.run(100)
    sim.say(REPLY_A, 3000)  # a long answer, queued: the playout sends it 100 ms ahead
    sim.run(1000)
    interrupted_at = sim.now - START
    sim.feed(VapiUserInterrupted())  # Vapi decides the caller interrupted: clear
    sim.run(500)
    sim.say(REPLY_B, 400)
    sim.run(1000)
    sim.hang_up()
    _, right = sim.wav()
    a = slots(right, REPLY_A)
    # what was scheduled before the clear played; nothing of A after it
    assert a[-1] * 20 < interrupted_at
    assert a[-1] * 20 >= interrupted_at - 40
    assert len(a) < 3000 // 20  # most of the reply was never heard
    b = slots(right, REPLY_B)
    assert len(b) == 20
    assert b[0] * 20 > interrupted_at
    assert sim.picture["clears"]
    assert sim.picture["clears"][0]["at"] == round(interrupted_at)
    assert sim.picture["interruptions"] == [{"at": round(interrupted_at), "cleared": True}]
    turns = sim.picture["turns"]["assistant"]
    assert turns[0][1] == round(interrupted_at)  # A's turn ends at the clear


def test_a_backchannel_pause_is_silence_and_loses_nothing():
    sim = Sim()
    sim.run(100)
    sim.say(REPLY_A, 2000)
    sim.run(500)
    paused_at = sim.now - START
    sim.feed(VapiSpeechUpdate("user", "started"))  # "mm-hmm": playout pauses
    sim.run(400)
    resumed_at = sim.now - START
    sim.feed(VapiSpeechUpdate("user", "stopped"))  # no interruption: play on
    sim.run(2500)
    sim.hang_up()
    _, right = sim.wav()
    a = slots(right, REPLY_A)
    assert len(a) == 2000 // 20  # every frame of the reply was heard
    gap = [s for s in range(a[0], a[-1]) if s not in set(a)]
    # silence while paused: from what Twilio still held at the pause (<= lead) to the resume
    assert gap
    assert gap[0] * 20 >= paused_at
    assert gap[0] * 20 <= paused_at + 120
    assert gap[-1] * 20 < resumed_at + 20
    assert (right[sim.at(resumed_at - 40)] == 0).all()
    pause = sim.picture["pauses"][0]
    assert pause["fromMs"] == round(paused_at)
    assert pause["toMs"] == round(resumed_at)
    assert (pause["source"], pause["outcome"]) == ("speech-update", "resumed")
    assert sim.picture["vapiSpeech"] == [[round(paused_at), round(resumed_at)]]
    assert sim.picture["clears"] == []


def test_timestamp_gaps_in_the_caller_stream_are_silence():
    sim = Sim()
    sim.run(200)
    sim.now += 400  # 20 frames never arrive (a network loss)
    sim.run(200)
    sim.hang_up()
    left, _ = sim.wav()
    caller = slots(left, CALLER)
    assert len(caller) == 20
    holes = [s for s in range(caller[0], caller[-1]) if s not in set(caller)]
    assert len(holes) == 20


def test_audio_queued_when_the_call_ends_is_not_in_the_recording():
    sim = Sim()
    sim.run(100)
    sim.say(REPLY_A, 5000)
    sim.run(1000)
    sim.hang_up()  # the caller hung up mid-reply
    _, right = sim.wav()
    # the recording ends with the call (its last slot began before the hang-up) ...
    assert len(right) // 160 == (sim.now - START) // 20 + 1
    # ... so of the 5 s queued, only what had started playing by then is in it
    assert len(slots(right, REPLY_A)) == 1000 // 20 + 1
    assert sim.finished == len(sim.pcm) // BYTES_PER_MS


def test_vapi_ending_lets_the_last_words_into_the_recording():
    sim = Sim()
    sim.run(100)
    sim.say(REPLY_A, 600)
    sim.feed(VapiCallEnded("assistant-ended-call"))
    sim.run(1500)
    assert sim.call.closed
    _, right = sim.wav()
    assert len(slots(right, REPLY_A)) == 600 // 20


def test_the_picture_marks_turns_latency_and_levels():
    sim = Sim(vad=True)
    sim.run(300, caller=SILENCE)
    sim.run(1000, caller=0x05)  # a loud caller utterance
    sim.run(600, caller=SILENCE)  # it ends; the VAD says so after its hangover
    sim.say(REPLY_A, 800)
    sim.run(1500, caller=SILENCE)
    sim.hang_up()
    picture = sim.picture
    assert picture["version"] == 1
    assert picture["bucketMs"] == 100
    (caller_turn,) = picture["turns"]["caller"]
    assert caller_turn[0] == pytest.approx(300 + 300, abs=60)  # the first loud frame
    assert caller_turn[1] == pytest.approx(300 + 1300, abs=60)
    (assistant_turn,) = picture["turns"]["assistant"]
    assert assistant_turn[1] - assistant_turn[0] == pytest.approx(800, abs=20)
    (reply,) = picture["replies"]
    assert reply["at"] == assistant_turn[0]
    assert reply["latencyMs"] == pytest.approx(assistant_turn[0] - caller_turn[1], abs=40)
    levels = picture["levels"]
    assert len(levels["caller"]) == len(levels["assistant"]) == picture["durationMs"] // 100
    loud = [i for i, db in enumerate(levels["caller"]) if db > -20]
    assert loud
    assert loud[0] * 100 == pytest.approx(caller_turn[0], abs=100)
    talking = [i for i, db in enumerate(levels["assistant"]) if db > -60]
    assert len(talking) == pytest.approx(8, abs=1)


def test_live_updates_add_up_to_the_picture():
    sim = Sim()
    sim.run(200)
    sim.say(REPLY_A, 1000)
    sim.run(700)
    sim.feed(VapiUserInterrupted())
    sim.run(2000)
    sim.hang_up()
    levels = {"caller": [], "assistant": []}
    clears = []
    for delta in sim.published:
        assert delta["fromMs"] == len(levels["caller"]) * 100  # contiguous, no gap, no overlap
        for leg in levels:
            levels[leg] += delta["levels"][leg]
        clears += delta["clears"]
    assert levels == sim.picture["levels"]
    assert clears == sim.picture["clears"]
    assert 2 <= len(sim.published) <= sim.picture["durationMs"] // 500 + 2  # every ~500 ms


def test_without_recording_there_is_no_audio_but_still_a_picture():
    call = bridged(record=False)
    actions = call.feed(media(300, bytes([CALLER]) * 160), 301.0)
    actions += call.feed(TwilioStop(STREAM_SID), 400.0)
    assert not [a for a in actions if isinstance(a, RecordAudio | FinishRecording)]
    (store,) = [a for a in actions if isinstance(a, StorePicture)]
    assert store.picture["durationMs"] == 400


def test_with_neither_there_is_no_tape():
    call = bridged(record=False, picture=False)
    actions = call.feed(media(300, bytes([CALLER]) * 160), 301.0)
    actions += call.feed(TwilioStop(STREAM_SID), 400.0)
    kinds = (RecordAudio, FinishRecording, StorePicture)
    assert not [a for a in actions if isinstance(a, kinds)]
    # the console still hears the call's own life; no picture goes with it
    assert [a.kind for a in actions if isinstance(a, Publish)] == ["call"]


def test_a_long_call_keeps_the_recorder_memory_bounded():
    """An hour-long call must not hold more than its window: measure what the Call keeps
    (tracemalloc) after 1 minute and after 10 minutes of full-duplex audio."""
    sim = Sim()
    sim.pcm = _Sink()  # the shell spools every chunk: the test keeps nothing either
    sim.published = _Drop()  # and the live feed sends each update on

    def minute() -> None:
        for _ in range(60):
            sim.say(REPLY_A, 1000)
            sim.run(1000)

    minute()
    tracemalloc.start()
    try:
        minute()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(9):
            minute()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current - base < 16 * 1024  # the picture's levels grow by ~1.2 KB a minute
    assert peak - base < 128 * 1024  # one second of PCM (32 KB) in flight, at most a few


class _Sink:
    def __iadd__(self, data: bytes) -> _Sink:
        return self


class _Drop(list):
    def append(self, item: object) -> None:
        pass
