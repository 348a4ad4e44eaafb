"""The picture accumulator: bounded for long calls, deltas that add up, events in order."""

from __future__ import annotations

import json

from media_edge.core.picture import MAX_BUCKETS, MAX_EVENTS, SILENT_DB, Picture

LOUD, QUIET = bytes([0x05]) * 800, bytes([0xFF]) * 800


def test_levels_are_dbfs_per_100_ms_with_a_floor():
    picture = Picture(0)
    picture.block(LOUD, QUIET)
    picture.block(QUIET, LOUD)
    snap = picture.snapshot()
    assert snap["bucketMs"] == 100
    assert snap["levels"]["caller"][0] > -10
    assert snap["levels"]["caller"][1] == SILENT_DB
    assert snap["levels"]["assistant"] == [SILENT_DB, snap["levels"]["caller"][0]]


def test_an_hour_long_busy_call_stays_small():
    picture = Picture(1_800_000_000_000)
    for block in range(36_000):  # 1 h of 100 ms blocks, busy the whole time
        at = block * 100
        picture.block(LOUD if block % 7 else QUIET, QUIET if block % 3 else LOUD)
        if block % 20 == 0:
            picture.caller_speech(at, True)
            picture.vapi_user_speech(at, True)
            picture.paused(at, "speech-update")
        if block % 20 == 10:
            picture.caller_speech(at, False)
            picture.vapi_user_speech(at, False)
            picture.pause_ended(at, "resumed")
            picture.assistant_audio(at, at + 900, True)
            picture.reply(at, 700)
            picture.interrupted(at, True)
            picture.cleared(at, 100)
    snap = picture.snapshot()
    size = len(json.dumps(snap, separators=(",", ":")))
    assert size < 160 * 1024  # well inside a DynamoDB item (400 KB)
    assert len(snap["levels"]["caller"]) <= MAX_BUCKETS
    assert snap["bucketMs"] * len(snap["levels"]["caller"]) >= 3_600_000
    assert len(snap["replies"]) == MAX_EVENTS
    assert snap["dropped"] > 0
    assert snap["durationMs"] == 3_600_000


def test_merged_levels_keep_the_peaks():
    picture = Picture(0)
    for block in range(MAX_BUCKETS + 1):
        picture.block(LOUD if block == 1 else QUIET, QUIET)
    snap = picture.snapshot()
    assert snap["bucketMs"] == 200
    assert snap["levels"]["caller"][0] > -10  # the one loud block survives the merge
    assert max(snap["levels"]["caller"][1:]) == SILENT_DB
    assert len(snap["levels"]["caller"]) == MAX_BUCKETS // 2 + 1  # and a partial bucket


def test_deltas_carry_everything_once_and_open_spans_again():
    picture = Picture(0)
    picture.block(LOUD, QUIET)
    picture.caller_speech(50, True)
    first = picture.delta()
    assert first["levels"]["caller"]
    assert first["fromMs"] == 0
    assert first["turns"]["caller"] == [[50, None]]
    picture.block(QUIET, QUIET)
    picture.caller_speech(150, False)
    picture.assistant_audio(160, 400, True)
    picture.reply(160, 10)
    second = picture.delta()
    assert second["fromMs"] == 100
    assert second["turns"]["caller"] == [[50, 150]]  # the same span, now closed
    assert second["turns"]["assistant"] == [[160, 400]]
    assert second["replies"] == [{"at": 160, "latencyMs": 10}]
    third = picture.delta()
    assert third["replies"] == []
    assert third["levels"]["caller"] == []


def test_pauses_end_with_their_outcome_or_with_the_call():
    picture = Picture(0)
    picture.paused(100, "speech-update")
    picture.pause_ended(400, "resumed")
    picture.paused(500, "local_vad")
    for _ in range(10):
        picture.block(QUIET, QUIET)
    assert picture.snapshot()["pauses"] == [
        {"fromMs": 100, "toMs": 400, "source": "speech-update", "outcome": "resumed"},
        {"fromMs": 500, "toMs": 1000, "source": "local_vad", "outcome": "ended"},
    ]


def test_a_clear_ends_the_assistant_turn_where_it_was_cut():
    picture = Picture(0)
    picture.assistant_audio(100, 3000, True)
    picture.cleared(900, 2100)
    assert picture.snapshot()["turns"]["assistant"] == [[100, 900]]
    assert picture.snapshot()["clears"] == [{"at": 900, "droppedMs": 2100}]
