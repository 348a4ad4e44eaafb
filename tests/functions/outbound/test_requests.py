"""Contacts are checked row by row: each bad row is reported with its reason, nothing else lost."""

import pytest
from pydantic import ValidationError

from functions.outbound.requests import (
    Contact,
    CreateCall,
    CreateCampaign,
    CsvError,
    RowError,
    parse_contacts,
    parse_csv,
)


def test_json_contacts_bad_rows_are_reported_and_the_rest_kept():
    good, bad = parse_contacts(
        [
            {"number": "+14155550100", "name": "Ada", "variables": {"slot": "9:30", "n": 2}},
            {"number": "4155550101"},
            {"number": "+14155550100"},
            {"number": "+14155550102", "timezone": "Mars/Olympus"},
            "+14155550103",
            {"number": "+14155550104", "phone": "x"},
            {"number": "+14155550105", "variables": {"1bad": "x"}},
            {"name": "no number"},
            {"number": "+14155550106", "timezone": "Europe/Paris"},
        ]
    )
    assert good == [
        Contact("+14155550100", "Ada", None, {"slot": "9:30", "n": "2"}),
        Contact("+14155550106", None, "Europe/Paris", {}),
    ]
    assert [(e.row, e.number) for e in bad] == [
        (2, "4155550101"),
        (3, "+14155550100"),
        (4, "+14155550102"),
        (5, None),
        (6, "+14155550104"),
        (7, "+14155550105"),
        (8, None),
    ]
    reasons = [e.reason for e in bad]
    assert "E.164" in reasons[0]
    assert "duplicate" in reasons[1]
    assert "unknown time zone 'Mars/Olympus'" in reasons[2]
    assert "object" in reasons[3]
    assert "unknown field 'phone'" in reasons[4]
    assert "variable name" in reasons[5]
    assert "missing" in reasons[6]


def test_csv_rows_are_reported_by_line_with_the_reason():
    text = (
        "number,name,timezone,appointment\n"
        "+14155550100,Ada,America/New_York,Tue 9:30\n"
        "+14155550101,Bob\n"  # a field missing
        '+14155550102,"Cy, Jr.",UTC,Wed\n'  # a quoted comma is fine
        "\n"  # blank lines are skipped
        "not-a-number,Dee,UTC,Thu\n"
        '+14155550104,"unterminated,UTC,Fri\n'  # costs this line only
        "+14155550105,Eve,UTC,Sat\n"
    )
    good, bad = parse_csv(text)
    assert good == [
        Contact("+14155550100", "Ada", "America/New_York", {"appointment": "Tue 9:30"}),
        Contact("+14155550102", "Cy, Jr.", "UTC", {"appointment": "Wed"}),
        Contact("+14155550105", "Eve", "UTC", {"appointment": "Sat"}),
    ]
    assert [(e.row, e.number) for e in bad] == [
        (3, "+14155550101"),
        (6, "not-a-number"),
        (7, None),
    ]
    assert bad[0].reason == "expected 4 fields, got 2"
    assert "E.164" in bad[1].reason
    assert bad[2].reason.startswith("malformed CSV")
    assert all(isinstance(e, RowError) for e in bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("name,timezone\nAda,UTC\n", "no `number` column"),
        ("number,bad column\n+14155550100,x\n", "not a valid variable name"),
        ("number,number\n+14155550100,+14155550101\n", "twice"),
    ],
)
def test_a_csv_without_a_usable_header_is_refused_whole(text, message):
    with pytest.raises(CsvError, match=message):
        parse_csv(text)


def test_campaign_settings_are_validated_whole():
    base = {"contacts": [{"number": "+14155550100"}]}
    spec = CreateCampaign.model_validate(base)
    assert (spec.max_concurrent, spec.max_calls_per_second, spec.retries.max) == (1, 1.0, 0)
    for bad in (
        {"maxConcurrent": 0},
        {"maxCallsPerSecond": 1000},
        {"window": {"start": "9am", "end": "20:00"}},
        {"window": {"start": "09:00", "end": "20:00", "timezone": "Nowhere/Land"}},
        {"retries": {"max": 11}},
        {"from": "555-0100"},
        {"assistantId": "../../x"},
        {"contactsCsv": "number\n+14155550100\n"},  # both lists
        {"mystery": 1},
    ):
        with pytest.raises(ValidationError):
            CreateCampaign.model_validate({**base, **bad})
    with pytest.raises(ValidationError):
        CreateCampaign.model_validate({})  # no contacts at all


def test_single_call_needs_an_e164_to_and_accepts_options():
    spec = CreateCall.model_validate(
        {
            "to": "+14155550100",
            "from": "+14155550199",
            "variables": {"name": "Ada", "count": 3},
            "machineDetection": "message",
            "voicemailMessage": "Call us back",
            "ringTimeoutSeconds": 20,
        }
    )
    assert spec.variables == {"name": "Ada", "count": "3"}
    assert spec.from_number == "+14155550199"
    for bad in ({"to": "14155550100"}, {"to": "+14155550100", "machineDetection": "maybe"}):
        with pytest.raises(ValidationError):
            CreateCall.model_validate(bad)
