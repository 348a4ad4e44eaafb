import pytest

from voicebridge.config import ConfigError, load_settings

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
    ],
)
def test_invalid_values_are_rejected_with_the_variable_name(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings("edge", {**EDGE_ENV, name: value})


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
