"""``voicebridge setup`` and ``voicebridge numbers`` against the local stack's Twilio and Vapi
emulators and its admin API: what changes, dry runs, idempotency, and one-line failures."""

import json

import httpx
import pytest

from infra.cli import main
from infra.local import LocalStack
from tests.e2e.helpers import stack_options

NUMBER = "+14155550100"


@pytest.fixture(scope="module")
def stack():
    with LocalStack(stack_options("setup")) as running:
        yield running


@pytest.fixture
def world(stack, tmp_path, monkeypatch):
    """A fresh Twilio number and Vapi assistant, the stack's outputs in a file, and the
    credentials in the environment, as a user would have them after ``make deploy``."""
    stack.twilio.numbers.clear()
    stack.twilio.number_updates.clear()
    number = stack.twilio.add_number(NUMBER, voice_url="https://old.example/voice")
    created = httpx.post(
        f"{stack.env['VAPI_BASE_URL']}/assistant",
        json={
            "name": "Front desk",
            "server": {"url": "https://old.example/hook", "timeoutSeconds": 9},
        },
        headers={"Authorization": f"Bearer {stack.env['VAPI_API_KEY']}"},
    ).json()
    api = stack.api_url
    outputs = {
        "ApiUrl": api,
        "TwilioVoiceUrl": f"{api}/twilio/voice",
        "TwilioStatusCallbackUrl": f"{api}/twilio/status",
        "VapiServerUrl": f"{api}/vapi/webhook",
        "EdgeWebSocketUrl": f"{stack.edge_url}/media",
    }
    path = tmp_path / "outputs.json"  # the shape `aws cloudformation describe-stacks` prints
    path.write_text(
        json.dumps(
            {
                "Stacks": [
                    {
                        "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()],
                        "Parameters": [
                            {
                                "ParameterKey": "TwilioAccountSid",
                                "ParameterValue": stack.env["TWILIO_ACCOUNT_SID"],
                            }
                        ],
                    }
                ]
            }
        )
    )
    for name in ("TWILIO_AUTH_TOKEN", "VAPI_API_KEY", "VAPI_WEBHOOK_SECRET", "ADMIN_API_KEY"):
        monkeypatch.setenv(name, stack.env[name])
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    emulators = ["--twilio-api", stack.twilio.base_url, "--vapi-api", stack.env["VAPI_BASE_URL"]]
    return number, created["id"], ["--outputs", str(path), *emulators], outputs


def test_setup_points_number_and_assistant_at_the_stack_then_changes_nothing(stack, world, capsys):
    number, assistant_id, where, outputs = world
    args = ["setup", "--number", NUMBER, "--assistant-id", assistant_id, *where]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert number.voice_url == outputs["TwilioVoiceUrl"]
    assert number.status_callback == outputs["TwilioStatusCallbackUrl"]
    assert (number.voice_method, number.status_callback_method) == ("POST", "POST")
    server = stack.vapi.assistants[assistant_id]["server"]
    assert server["url"] == outputs["VapiServerUrl"]
    assert server["headers"] == {"x-vapi-secret": stack.env["VAPI_WEBHOOK_SECRET"]}
    assert server["timeoutSeconds"] == 9  # the rest of the server object is kept
    assert "Done: 4 setting(s) changed." in first
    assert stack.env["VAPI_WEBHOOK_SECRET"] not in first  # secrets are shown as ***

    updates = len(stack.twilio.number_updates)
    patches = sum(1 for r in stack.vapi.requests if r.method == "PATCH")
    assert main(args) == 0
    second = capsys.readouterr().out
    assert "Nothing to change" in second
    assert len(stack.twilio.number_updates) == updates  # nothing was sent the second time
    assert sum(1 for r in stack.vapi.requests if r.method == "PATCH") == patches


def test_dry_run_shows_the_changes_and_sends_none(stack, world, capsys):
    number, assistant_id, where, outputs = world
    args = ["setup", "--number", NUMBER, "--assistant-id", assistant_id, "--dry-run", *where]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"would change: https://old.example/voice -> {outputs['TwilioVoiceUrl']}" in out
    assert "Dry run: 4 setting(s) would change; nothing was sent." in out
    assert number.voice_url == "https://old.example/voice"
    assert stack.twilio.number_updates == []
    assert stack.vapi.assistants[assistant_id]["server"]["url"] == "https://old.example/hook"


def test_a_voice_application_on_the_number_is_cleared(stack, world):
    number, _, where, outputs = world
    number.voice_application_sid = "AP" + "4" * 32  # Twilio would ignore the voice URL
    assert main(["setup", "--number", NUMBER, *where]) == 0
    assert number.voice_application_sid == ""
    assert number.voice_url == outputs["TwilioVoiceUrl"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["setup", "--number", "+14155550111"], "+14155550111 is not a number of Twilio account"),
        (["setup", "--number", "4155550100"], "is not an E.164 number"),
        (
            ["setup", "--number", NUMBER, "--assistant-id", "00000000-0000-4000-8000-000000000000"],
            "Vapi assistant: HTTP 404",
        ),
    ],
)
def test_problems_are_one_line_and_exit_1(world, capsys, argv, message):
    *_, where, _ = world
    assert main([*argv, *where]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_missing_outputs_file_is_one_line(tmp_path, capsys):
    assert main(["numbers", "list", "--outputs", str(tmp_path / "nope.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("voicebridge numbers: cannot read")
    assert len(err.strip().splitlines()) == 1


def test_numbers_list_and_bind_through_the_admin_api(stack, world, capsys):
    _, assistant_id, where, _ = world
    assert main(["numbers", "list", *where]) == 0
    assert "not set up" in capsys.readouterr().out
    assert main(["setup", "--number", NUMBER, *where]) == 0
    capsys.readouterr()

    bind = ["numbers", "bind", NUMBER, "--assistant-id", assistant_id, *where]
    assert main([*bind, "--dry-run"]) == 0
    assert "Dry run: would bind" in capsys.readouterr().out
    headers = {"Authorization": f"Bearer {stack.env['ADMIN_API_KEY']}"}
    assert httpx.get(f"{stack.api_url}/numbers/{NUMBER}", headers=headers).status_code == 404
    assert main(bind) == 0
    assert f"{NUMBER} -> assistant {assistant_id}" in capsys.readouterr().out
    got = httpx.get(f"{stack.api_url}/numbers/{NUMBER}", headers=headers).json()
    assert got["assistantId"] == assistant_id
    assert main(bind) == 0
    assert "already bound" in capsys.readouterr().out
    assert main(["numbers", "list", *where]) == 0
    listed = capsys.readouterr().out
    assert f"this stack, assistant {assistant_id}" in listed
