"""Pacing to a calls-per-second cap shared by every dialer invocation."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.outbound.rate import interval_ms, take


@pytest.mark.parametrize(
    ("cps", "expected"), [(1, 1050), (2, 525), (10, 105), (100, 11), (0.5, 2100)]
)
def test_interval_is_the_spacing_plus_a_small_guard(cps, expected):
    assert interval_ms(cps) == expected


@pytest.mark.parametrize("cps", [0, -1, 101, 0.001])
def test_caps_outside_what_twilio_offers_are_refused(cps):
    with pytest.raises(ValueError, match="calls per second"):
        interval_ms(cps)


def test_a_free_slot_is_taken_and_a_held_one_says_how_long_to_wait():
    first = take(None, 10_000, 1050)
    assert first.granted
    assert first.next_free_ms == 11_050
    busy = take(first.next_free_ms, 10_400, 1050)
    assert not busy.granted
    assert busy.wait_ms == 650
    assert busy.next_free_ms == 11_050  # unchanged: nothing was taken
    assert take(11_050, 11_050, 1050).granted


@settings(max_examples=80, deadline=None)
@given(
    cps=st.sampled_from([1, 2, 3, 5, 10, 30]),
    dialers=st.integers(1, 8),
    seed=st.integers(0, 2**32),
)
def test_dialers_sharing_the_slot_never_exceed_the_cap_in_any_second(cps, dialers, seed):
    """Several dialers ask at random moments, each sleeping as told; the shared state is the
    one number the conditional write guards. No sliding one-second window holds more than cps."""
    rng = random.Random(seed)
    interval = interval_ms(cps)
    shared: int | None = None
    clocks = [rng.randrange(0, 1000) for _ in range(dialers)]
    granted: list[int] = []
    while len(granted) < 60:
        who = min(range(dialers), key=clocks.__getitem__)
        slot = take(shared, clocks[who], interval)
        if slot.granted:
            shared = slot.next_free_ms
            granted.append(clocks[who])
            clocks[who] += rng.randrange(0, 10)  # the dial itself
        else:
            clocks[who] += slot.wait_ms
    granted.sort()
    for index, moment in enumerate(granted):
        in_window = [t for t in granted[index:] if t - moment < 1000]
        assert len(in_window) <= cps
    # And the cap is used: over the run, the rate is within the guard (5 %) of the cap.
    span_s = (granted[-1] - granted[0]) / 1000
    assert (len(granted) - 1) / span_s >= cps * 0.94


def test_after_an_answered_request_the_next_slot_is_one_spacing_later():
    from functions.outbound.rate import after_request

    assert after_request(10_000, 1.0) == 11_000  # no guard: that request has arrived
    assert after_request(10_000, 3.0) == 10_334
