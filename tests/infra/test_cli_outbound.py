"""``voicebridge dial / campaign / dnc``: what each command sends, prints and exits with."""

from __future__ import annotations

import json

import httpx
import pytest

from infra import cli_outbound
from infra.cli import main


@pytest.fixture
def api(monkeypatch):
    """The admin API as a list of canned answers; requests are recorded."""
    seen: list[tuple[str, str, dict | None]] = []
    answers: list[httpx.Response] = []

    def request(method, url, json=None, headers=None, timeout=None):
        assert headers == {"Authorization": "Bearer key"}
        seen.append((method, url, json))
        return answers.pop(0)

    monkeypatch.setattr(cli_outbound.httpx, "request", request)
    return seen, answers


ARGS = ["--api-url", "http://api", "--admin-key", "key"]


def test_dial_sends_the_options_and_prints_the_call(api, capsys):
    seen, answers = api
    answers.append(
        httpx.Response(
            201,
            json={"callSid": "CA1", "status": "queued", "to": "+14155550100", "from": "+1415"},
        )
    )
    code = main(
        [
            "dial",
            "+14155550100",
            "--assistant",
            "asst-1",
            "--var",
            "name=Ada",
            "--var",
            "slot=9:30",
            "--machine-detection",
            "hangup",
            *ARGS,
        ]
    )
    assert code == 0
    assert seen == [
        (
            "POST",
            "http://api/calls",
            {
                "to": "+14155550100",
                "assistantId": "asst-1",
                "variables": {"name": "Ada", "slot": "9:30"},
                "machineDetection": "hangup",
            },
        )
    ]
    assert "CA1 (queued)" in capsys.readouterr().out


def test_campaign_create_from_csv_prints_the_rejected_rows(api, capsys, tmp_path):
    seen, answers = api
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("number\n+14155550100\nbad\n", encoding="utf-8")
    answers += [
        httpx.Response(
            201,
            json={
                "campaignId": "c" * 32,
                "status": "draft",
                "contacts": 1,
                "rejected": [{"row": 3, "number": "bad", "reason": "not an E.164 number"}],
            },
        ),
        httpx.Response(200, json={"campaignId": "c" * 32, "status": "running"}),
    ]
    code = main(
        [
            "campaign",
            "create",
            "--csv",
            str(contacts),
            "--max-concurrent",
            "4",
            "--cps",
            "2",
            "--window",
            "09:00-20:00",
            "--timezone",
            "Europe/Paris",
            "--retries",
            "2",
            "--start",
            *ARGS,
        ]
    )
    assert code == 0
    body = seen[0][2]
    assert body["contactsCsv"] == "number\n+14155550100\nbad\n"
    assert body["window"] == {"start": "09:00", "end": "20:00", "timezone": "Europe/Paris"}
    assert (body["maxConcurrent"], body["maxCallsPerSecond"], body["retries"]["max"]) == (4, 2, 2)
    assert seen[1][:2] == ("POST", f"http://api/campaigns/{'c' * 32}/start")
    out = capsys.readouterr().out
    assert "row 3: bad: not an E.164 number" in out
    assert "status: running" in out


def test_status_renders_counts_and_contacts():
    campaign = {
        "campaignId": "c1",
        "name": "Reminders",
        "status": "running",
        "counts": {
            "total": 3,
            "done": 1,
            "inProgress": 1,
            "pending": 1,
            "retriesScheduled": 0,
            "outcomes": {"answered": 1},
        },
    }
    contacts = [{"number": "+14155550100", "state": "done", "outcome": "answered", "attempts": 1}]
    text = cli_outbound.render_status(campaign, contacts, full=True)
    assert "1/3 done, 1 in progress, 1 pending" in text
    assert "answered 1, machine 0, busy 0" in text
    assert "  +14155550100     done         answered     1" in text


def test_api_refusals_exit_1_with_the_reason_and_unreachable_exits_2(api, capsys):
    _, answers = api
    answers.append(httpx.Response(409, json={"error": "cannot pause a campaign that is draft"}))
    assert main(["campaign", "pause", "c" * 32, *ARGS]) == 1
    assert "cannot pause a campaign that is draft" in capsys.readouterr().err


def test_an_unreachable_api_exits_2_with_one_line(capsys):
    code = main(["dnc", "list", "--api-url", "http://127.0.0.1:9", "--admin-key", "k"])
    assert code == 2
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def test_missing_admin_key_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.delenv("ADMIN_API_KEY", raising=False)
    assert main(["dnc", "add", "+14155550100", "--api-url", "http://api", "--admin-key", ""]) == 1
    assert "no admin key" in capsys.readouterr().err


def test_dnc_remove_quotes_the_plus(api):
    seen, answers = api
    answers.append(httpx.Response(200, json={"removed": "+14155550100"}))
    assert main(["dnc", "remove", "+14155550100", *ARGS]) == 0
    assert seen[0][1] == "http://api/dnc/%2B14155550100"
    assert json.dumps(seen[0][2]) == "null"
