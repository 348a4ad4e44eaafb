"""GapFiller (inbound timestamp grid) and Framer (outbound re-chunking)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media_edge.dsp import ULAW_SILENCE_BYTE, Framer, GapFiller
from tests.media_edge.dsp.signals import PROPERTIES


def admit_all(filler: GapFiller, timestamps: list[int]) -> list[int]:
    return [filler.admit(t) for t in timestamps]


def test_first_frame_sets_origin_and_steady_frames_need_nothing() -> None:
    assert admit_all(GapFiller(), [1234, 1254, 1274, 1294]) == [0, 0, 0, 0]


def test_jitter_of_a_few_ms_invents_no_frames() -> None:
    assert admit_all(GapFiller(), [0, 27, 38, 69, 80, 91, 120]) == [0, 0, 0, 0, 0, 0, 0]


def test_gap_is_filled_with_whole_frames() -> None:
    # 20 -> 100: slots 2, 3, 4 are missing.
    assert admit_all(GapFiller(), [0, 20, 100, 120]) == [0, 0, 3, 0]
    # A gap measured with jitter still rounds to whole frames.
    assert admit_all(GapFiller(), [0, 20, 103, 118]) == [0, 0, 3, 0]


def test_duplicates_and_late_frames_are_dropped() -> None:
    filler = GapFiller()
    assert admit_all(filler, [0, 20, 20, 40, 0, 60]) == [0, 0, -1, 0, -1, 0]
    # A frame arriving after its slot was filled with silence is late: dropped.
    assert admit_all(filler, [140, 80, 100, 160]) == [3, -1, -1, 0]


def test_huge_jump_is_capped_and_the_grid_resyncs() -> None:
    filler = GapFiller(max_fill=50)
    assert admit_all(filler, [0, 20, 3_600_000, 3_600_020, 3_600_020]) == [0, 0, 50, 0, -1]


def test_other_frame_sizes() -> None:
    assert admit_all(GapFiller(frame_ms=10), [0, 10, 50, 60]) == [0, 0, 3, 0]


def test_reset_starts_a_new_origin() -> None:
    filler = GapFiller()
    admit_all(filler, [0, 20, 40])
    filler.reset()
    assert admit_all(filler, [5, 25]) == [0, 0]


@PROPERTIES
@given(st.lists(st.integers(-9, 9), min_size=1, max_size=200), st.integers(0, 10**9))
def test_jittered_stream_keeps_frame_count(jitter: list[int], origin: int) -> None:
    """Frames at 20 ms +- 9 ms jitter: nothing is ever filled or dropped."""
    filler = GapFiller()
    decisions = [filler.admit(origin + 20 * i + j) for i, j in enumerate([0, *jitter])]
    assert decisions == [0] * len(decisions)


@PROPERTIES
@given(st.lists(st.booleans(), min_size=1, max_size=300))
def test_lost_frames_are_replaced_one_for_one(kept: list[bool]) -> None:
    """Whatever subset arrives, admitted frames + filled frames == the span received."""
    filler = GapFiller(max_fill=1000)
    slots = [0] + [i + 1 for i, keep in enumerate(kept) if keep]
    total = sum(1 + filler.admit(20 * s) for s in slots)
    assert total == slots[-1] + 1


def test_gapfiller_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="frame_ms"):
        GapFiller(frame_ms=0)


def test_framer_emits_whole_frames_and_keeps_the_rest() -> None:
    framer = Framer(160, ULAW_SILENCE_BYTE)
    assert framer.push(b"\x01" * 100) == []
    assert framer.pending_bytes == 100
    frames = framer.push(b"\x02" * 400)
    assert [len(f) for f in frames] == [160, 160, 160]
    assert frames[0] == b"\x01" * 100 + b"\x02" * 60
    assert framer.pending_bytes == 20


def test_framer_flush_pads_with_fill_and_empties() -> None:
    framer = Framer(160, ULAW_SILENCE_BYTE)
    framer.push(b"\x05" * 30)
    assert framer.flush() == b"\x05" * 30 + b"\xff" * 130
    assert framer.pending_bytes == 0
    assert framer.flush() is None


def test_framer_clear_drops_pending() -> None:
    framer = Framer(320, 0)
    framer.push(b"\x01" * 300)
    framer.clear()
    assert framer.pending_bytes == 0
    assert framer.push(b"\x02" * 320) == [b"\x02" * 320]


@PROPERTIES
@given(st.lists(st.binary(max_size=700), max_size=30), st.integers(1, 400))
def test_framer_preserves_the_byte_stream(chunks: list[bytes], size: int) -> None:
    framer = Framer(size, 0xFF)
    frames = [f for chunk in chunks for f in framer.push(chunk)]
    assert all(len(f) == size for f in frames)
    stream = b"".join(chunks)
    assert b"".join(frames) == stream[: len(stream) - framer.pending_bytes]
    assert framer.pending_bytes == len(stream) % size


def test_framer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="frame_bytes"):
        Framer(0, 0xFF)
    with pytest.raises(ValueError, match="frame_bytes"):
        Framer(160, 256)
