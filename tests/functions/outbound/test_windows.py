"""Calling windows in each contact's zone, daylight saving included."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.outbound.windows import CallingWindow, WindowError, is_open, next_open, zone

NEW_YORK = zone("America/New_York")
WORK = CallingWindow.parse("09:00", "20:00")


def at(text: str) -> float:
    """An instant written in UTC: "2026-03-08 07:00"."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def local(instant: float, tz=NEW_YORK) -> str:
    return datetime.fromtimestamp(instant, UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def test_the_window_is_the_contacts_wall_clock_not_utc():
    # 13:30 UTC is 08:30 in New York (EST) but 19:00 in Kolkata: one closed, one open.
    now = at("2026-01-15 13:30")
    assert not is_open(WORK, NEW_YORK, now)
    assert is_open(WORK, zone("Asia/Kolkata"), now)
    assert local(next_open(WORK, NEW_YORK, now)) == "2026-01-15 09:00:00 EST"


def test_after_the_end_the_next_opening_is_tomorrow():
    now = at("2026-01-16 01:30")  # 20:30 EST on the 15th
    assert local(next_open(WORK, NEW_YORK, now)) == "2026-01-16 09:00:00 EST"
    assert next_open(WORK, NEW_YORK, at("2026-01-15 15:00")) == at("2026-01-15 15:00")  # open


def test_start_inclusive_end_exclusive_and_seconds():
    window = CallingWindow.parse("09:00:30", "20:00")
    assert not is_open(window, zone("UTC"), at("2026-01-15 09:00:29"))
    assert is_open(window, zone("UTC"), at("2026-01-15 09:00:30"))
    assert not is_open(window, zone("UTC"), at("2026-01-15 20:00"))


def test_a_window_across_midnight_and_a_whole_day():
    night = CallingWindow.parse("20:00", "02:00")
    utc = zone("UTC")
    assert is_open(night, utc, at("2026-01-15 23:00"))
    assert is_open(night, utc, at("2026-01-16 01:59"))
    assert not is_open(night, utc, at("2026-01-16 02:00"))
    assert next_open(night, utc, at("2026-01-16 03:00")) == at("2026-01-16 20:00")
    assert is_open(CallingWindow.parse("00:00", "00:00"), utc, at("2026-01-16 03:00"))


def test_spring_forward_the_same_wall_clock_is_an_hour_closer_in_utc():
    # 2026-03-08: New York moves from EST (UTC-5) to EDT (UTC-4) at 02:00 local.
    before = at("2026-03-07 15:00")  # Saturday 10:00 EST
    assert next_open(WORK, NEW_YORK, at("2026-03-08 01:00")) == at("2026-03-08 13:00")  # 09:00 EDT
    assert local(next_open(WORK, NEW_YORK, before + 12 * 3600)) == "2026-03-08 09:00:00 EDT"


def test_spring_forward_gap_opens_the_window_at_the_jump():
    # 02:30 does not exist on 2026-03-08 in New York: clocks go 01:59:59 EST -> 03:00:00 EDT.
    window = CallingWindow.parse("02:30", "05:00")
    opening = next_open(window, NEW_YORK, at("2026-03-08 05:00"))  # 00:00 EST
    assert opening == at("2026-03-08 07:00")
    assert local(opening) == "2026-03-08 03:00:00 EDT"
    assert is_open(window, NEW_YORK, opening)
    assert not is_open(window, NEW_YORK, opening - 1)  # 01:59:59 EST


def test_fall_back_fold_the_repeated_hour_is_inside_both_times():
    # 2026-11-01: 01:00-02:00 happens twice in New York (EDT, then EST).
    window = CallingWindow.parse("01:00", "01:30")
    first = at("2026-11-01 05:10")  # 01:10 EDT
    second = at("2026-11-01 06:10")  # 01:10 EST, an hour later
    assert is_open(window, NEW_YORK, first)
    assert is_open(window, NEW_YORK, second)
    assert not is_open(window, NEW_YORK, at("2026-11-01 05:45"))  # 01:45 EDT
    # Before the fold, the window opens at the first 01:00 (EDT).
    assert next_open(window, NEW_YORK, at("2026-11-01 04:00")) == at("2026-11-01 05:00")


def test_southern_hemisphere_and_half_hour_zones():
    # Lord Howe Island moves its clocks by 30 minutes; Sydney is on daylight time in January.
    sydney = zone("Australia/Sydney")
    assert local(next_open(WORK, sydney, at("2026-01-15 23:00")), sydney) == (
        "2026-01-16 10:00:00 AEDT"
    )  # 10:00 AEDT is open already, so the answer is now
    howe = zone("Australia/Lord_Howe")
    opening = next_open(WORK, howe, at("2026-04-04 23:30"))
    assert is_open(WORK, howe, opening)


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "", "../../etc/passwd", "/etc/localtime", "x" * 80]
)
def test_unknown_zones_are_refused_by_name(name):
    with pytest.raises(WindowError, match="unknown time zone"):
        zone(name)


@pytest.mark.parametrize("text", ["9:00", "24:00", "09:60", "09:00:60", "0900", "", "09:00 "])
def test_bad_clock_times_are_refused(text):
    with pytest.raises(WindowError, match="24-hour time"):
        CallingWindow.parse(text, "20:00")


ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]


@settings(max_examples=60, deadline=None)
@given(
    zone_name=st.sampled_from(ZONES),
    start_minute=st.integers(0, 24 * 60 - 1),
    length=st.integers(1, 24 * 60 - 1),
    moment=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)),
)
def test_next_open_is_open_and_nothing_earlier_is(zone_name, start_minute, length, moment):
    tz = zone(zone_name)
    end_minute = (start_minute + length) % (24 * 60)
    window = CallingWindow.parse(
        f"{start_minute // 60:02d}:{start_minute % 60:02d}",
        f"{end_minute // 60:02d}:{end_minute % 60:02d}",
    )
    now = moment.replace(tzinfo=UTC).timestamp()
    opening = next_open(window, tz, now)
    assert opening >= now
    assert is_open(window, tz, opening)
    # Minute by minute from now, the window is closed until the opening (the zone data has no
    # transition finer than a minute since 1972).
    probe = now
    while probe + 60 < opening:
        assert not is_open(window, tz, probe)
        probe += 60
    assert opening - now < timedelta(days=2).total_seconds()
