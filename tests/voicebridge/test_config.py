import pytest

from voicebridge.config import ConfigError, load_settings
from voicebridge.vapi_credentials import DEFAULT_PLANS, BearerPlan, HmacPlan, LegacySecretPlan

EDGE_ENV = {
    "TWILIO_AUTH_TOKEN": "tok",
    "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
    "VAPI_API_KEY": "vapi-key",
    "EDGE_PUBLIC_URL": "wss://edge.example.com/",
    "STREAM_TOKEN_SECRET": "s3cret",
    "SESSIONS_TABLE": "voicebridge-sessions",
}


def test_edge_settings_parse_and_default():
    settings = load_settings("edge", EDGE_ENV)
    assert settings.edge_public_url == "wss://edge.example.com"
    assert settings.edge_audio_format == "mulaw"
    assert settings.edge_playout_lead_ms == 100
    assert settings.vapi_base_url == "https://api.vapi.ai"


@pytest.mark.parametrize("missing", sorted(EDGE_ENV))
def test_missing_required_variable_is_named_in_one_line(missing):
    env = {k: v for k, v in EDGE_ENV.items() if k != missing}
    with pytest.raises(ConfigError) as err:
        load_settings("edge", env)
    assert missing in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EDGE_AUDIO_FORMAT", "opus"),
        ("EDGE_PUBLIC_URL", "https://not-a-websocket"),
        ("EDGE_PUBLIC_URL", "wss://edge.example.com/media?x=1"),  # Twilio's <Stream url> has none
        ("EDGE_PUBLIC_URL", "wss://edge.example.com/#frag"),
        ("TWILIO_ACCOUNT_SID", "AC123"),
        ("TWILIO_ACCOUNT_SID", "AC" + "1" * 32 + "\n"),
        ("EDGE_MAX_PENDING", "0"),
        ("EDGE_PORT", "99999"),
        ("EDGE_LOCAL_BARGE_IN", "maybe"),
        ("TRANSFER_ALLOWLIST", "sales=555-1234"),
        ("VAPI_WEBHOOK_AUTH", '{"type": "hmac", "algorithm": "md5"}'),
        ("VAPI_WEBHOOK_AUTH", '[{"type": "bearer", "token": "in-plain-env"}]'),
        ("VAPI_WEBHOOK_CREDENTIAL_ID", "../../etc"),
        ("TRANSFER_ALLOWLIST", "sales=+04155550100"),  # no country code starts with 0 (E.164)
    ],
)
def test_invalid_values_are_rejected_with_the_variable_name(name, value):
    with pytest.raises(ConfigError, match=name) as err:
        load_settings("edge", {**EDGE_ENV, name: value})
    assert "\n" not in str(err.value)
    assert "in-plain-env" not in str(err.value)


def test_webhook_auth_defaults_to_every_form_accepted_before_it_existed():
    assert load_settings("edge", EDGE_ENV).vapi_webhook_auth == DEFAULT_PLANS
    assert [type(plan) for plan in DEFAULT_PLANS] == [LegacySecretPlan, BearerPlan, HmacPlan]
    assert DEFAULT_PLANS[2] == HmacPlan(algorithm="sha256", signature_encoding="hex")
    configured = load_settings(
        "edge", {**EDGE_ENV, "VAPI_WEBHOOK_AUTH": '{"type":"hmac","algorithm":"sha1"}'}
    )
    assert configured.vapi_webhook_auth == (HmacPlan(algorithm="sha1"),)


def test_edge_public_url_may_carry_a_path_prefix():
    settings = load_settings("edge", {**EDGE_ENV, "EDGE_PUBLIC_URL": "wss://host.example/edge/"})
    assert settings.edge_public_url == "wss://host.example/edge"  # the edge serves /edge/media


def test_allowlist_parses_named_and_bare_numbers():
    settings = load_settings(
        "edge", {**EDGE_ENV, "TRANSFER_ALLOWLIST": "sales=+14155550100, +442071838750"}
    )
    assert settings.transfer_allowlist == {
        "sales": "+14155550100",
        "+442071838750": "+442071838750",
    }


def test_repr_hides_secrets():
    text = repr(load_settings("edge", EDGE_ENV))
    for secret in ("s3cret", "vapi-key", "'tok'"):
        assert secret not in text
    assert "edge.example.com" in text


def test_secrets_manager_fills_secret_variables(monkeypatch):
    import json

    import boto3
    from moto import mock_aws

    with mock_aws():
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        client = boto3.client("secretsmanager", region_name="us-east-1")
        arn = client.create_secret(
            Name="voicebridge",
            SecretString=json.dumps({"STREAM_TOKEN_SECRET": "from-sm", "NOT_A_SECRET": "x"}),
        )["ARN"]
        env = {k: v for k, v in EDGE_ENV.items() if k != "STREAM_TOKEN_SECRET"}
        settings = load_settings("edge", {**env, "SECRETS_ID": arn})
    assert settings.stream_token_secret == "from-sm"


def test_every_bad_variable_is_listed_at_once_one_line_each():
    env = {
        **{k: v for k, v in EDGE_ENV.items() if k not in {"VAPI_API_KEY", "STREAM_TOKEN_SECRET"}},
        "EDGE_PORT": "99999",
        "EDGE_AUDIO_FORMAT": "opus",
    }
    with pytest.raises(ConfigError) as err:
        load_settings("edge", env)
    lines = str(err.value).splitlines()
    assert err.value.problems == lines
    named = [line.split()[0] for line in lines]
    assert sorted(named) == [
        "EDGE_AUDIO_FORMAT",
        "EDGE_PORT",
        "STREAM_TOKEN_SECRET",
        "VAPI_API_KEY",
    ]
    assert "opus" in str(err.value)  # the bad value of a non-secret helps; a secret is never shown
