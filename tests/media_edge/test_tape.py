"""The tape on its own: both legs on one grid, what a clear takes out, when blocks are final."""

from __future__ import annotations

import pytest

from media_edge.core.tape import BLOCK_SLOTS, FRAME_BYTES, LAG_SLOTS, Tape

SILENCE = 0xFF
ORIGIN = 1000.0  # the edge's clock (ms) when the stream started


def frame(code: int) -> bytes:
    return bytes([code]) * FRAME_BYTES


def slots(tape: Tape, leg: int) -> list[int]:
    """The code of every 20 ms slot of ``leg`` (0 caller, 1 assistant) that left the tape."""
    codes: list[int] = []
    for block in tape.ready:
        data = block[leg]
        codes += [data[i] for i in range(0, len(data), FRAME_BYTES)]
    return codes


def test_caller_frames_land_by_timestamp_and_gaps_are_silence():
    tape = Tape(ORIGIN, lead_ms=100, max_ms=60_000)
    for ts in (0, 20, 40, 100, 120):  # 60 and 80 never came
        tape.caller(ts, frame(ts // 20 + 1), ORIGIN + ts + 3)
    tape.finish(ORIGIN + 140)
    assert slots(tape, 0) == [1, 2, 3, SILENCE, SILENCE, 6, 7]
    assert slots(tape, 1) == [SILENCE] * 7


def test_assistant_audio_lands_when_scheduled_to_play():
    tape = Tape(ORIGIN, lead_ms=100, max_ms=60_000)
    tape.assistant(frame(0x30) + frame(0x31), ORIGIN + 60)  # plays from 60 ms
    tape.finish(ORIGIN + 120)
    assert slots(tape, 1) == [SILENCE, SILENCE, SILENCE, 0x30, 0x31, SILENCE]


def test_a_clear_takes_out_what_was_to_play_after_it_only():
    tape = Tape(ORIGIN, lead_ms=100, max_ms=60_000)
    tape.assistant(b"".join(frame(0x30 + i) for i in range(5)), ORIGIN)  # 0..100 ms
    assert tape.clear(ORIGIN + 50) == 2  # slots 3 and 4 start after the clear
    tape.finish(ORIGIN + 100)
    assert slots(tape, 1) == [0x30, 0x31, 0x32, SILENCE, SILENCE]


def test_audio_after_a_clear_plays_from_the_clear():
    tape = Tape(ORIGIN, lead_ms=100, max_ms=60_000)
    tape.assistant(frame(0x30) * 5, ORIGIN)
    tape.clear(ORIGIN + 40)
    tape.assistant(frame(0x40), ORIGIN + 40)
    tape.finish(ORIGIN + 100)
    assert slots(tape, 1) == [0x30, 0x30, 0x40, SILENCE, SILENCE]


def test_blocks_wait_for_the_caller_but_not_for_ever():
    tape = Tape(ORIGIN, lead_ms=100, max_ms=60_000)
    for ts in range(0, 200, 20):
        tape.caller(ts, frame(1), ORIGIN + ts)
    tape.advance(ORIGIN + 400)  # the caller is 200 ms behind: wait for it
    assert len(tape.ready) == 2  # the 200 ms it did send
    later = ORIGIN + 200 + LAG_SLOTS * 20 + 200
    tape.advance(later)  # stalled past the lag: silence, the window moves on
    assert tape.duration_ms == (int((later - ORIGIN) // 20) - LAG_SLOTS) // BLOCK_SLOTS * 100
    assert tape.caller(200, frame(2), later) == -1  # what comes that late is dropped
    assert tape.frames_late == 1


def test_a_frame_late_but_inside_the_window_still_lands():
    tape = Tape(ORIGIN, lead_ms=100, max_ms=60_000)
    tape.caller(0, frame(1), ORIGIN)
    tape.caller(40, frame(3), ORIGIN + 40)
    tape.caller(20, frame(2), ORIGIN + 45)  # out of order
    tape.finish(ORIGIN + 60)
    assert slots(tape, 0) == [1, 2, 3]


def test_blocks_wait_until_the_assistant_side_can_no_longer_be_cleared():
    tape = Tape(ORIGIN, lead_ms=100, max_ms=60_000)
    tape.assistant(frame(0x30) * 10, ORIGIN)  # 200 ms scheduled at once
    for ts in range(0, 200, 20):
        tape.caller(ts, frame(1), ORIGIN)  # caller frames arrived early (all at once)
    tape.advance(ORIGIN + 99)
    assert tape.ready == []  # slot 4 has not started yet: a clear could still take it
    tape.advance(ORIGIN + 100)
    assert len(tape.ready) == 1


def test_timestamps_running_ahead_of_the_clock_follow_the_clock():
    tape = Tape(ORIGIN, lead_ms=100, max_ms=60_000)
    tape.caller(0, frame(1), ORIGIN)
    # A jump of an hour in the timestamps: not an hour of silence
    assert tape.caller(3_600_000, frame(2), ORIGIN + 20) <= 1 + 5
    assert tape.resyncs == 1
    tape.finish(ORIGIN + 200)
    assert tape.duration_ms <= 200


def test_the_window_stays_bounded_whatever_arrives():
    tape = Tape(ORIGIN, lead_ms=100, max_ms=3_600_000)
    window = tape.window_bytes
    assert window <= 2 * 80 * FRAME_BYTES
    # The assistant plays on while the caller never sends anything: the tape moves anyway.
    for i in range(1000):
        tape.assistant(frame(0x30), ORIGIN + 20 * i)
        tape.ready.clear()
    assert tape.duration_ms >= 20 * 1000 - window // 2 // FRAME_BYTES * 20
    assert tape.window_bytes == window


def test_nothing_is_taken_after_the_end_or_past_the_limit():
    tape = Tape(ORIGIN, lead_ms=100, max_ms=100)
    for ts in range(0, 400, 20):
        tape.caller(ts, frame(1), ORIGIN + ts)
    tape.finish(ORIGIN + 400)
    assert tape.duration_ms == 100
    tape.caller(420, frame(1), ORIGIN + 420)
    tape.assistant(frame(2), ORIGIN + 420)
    tape.finish(ORIGIN + 500)
    assert sum(len(c) for c, _ in tape.ready) == 5 * FRAME_BYTES


@pytest.mark.parametrize("size", [0, 80, 161, 320])
def test_frames_of_another_size_fill_exactly_one_slot(size):
    tape = Tape(ORIGIN, lead_ms=100, max_ms=60_000)
    tape.caller(0, bytes([7]) * size, ORIGIN)
    tape.finish(ORIGIN + 40)
    ((caller, _),) = tape.ready
    kept = min(size, FRAME_BYTES)
    assert len(caller) == 2 * FRAME_BYTES
    assert caller == bytes([7]) * kept + bytes([SILENCE]) * (2 * FRAME_BYTES - kept)
