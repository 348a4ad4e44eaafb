"""samconfig.toml and ``make deploy`` (infra/deploy.py) against template.yaml: every parameter
named exists, every value is one the template accepts, and a first deploy asks only what has no
safe default."""

import re
import tomllib

import pytest
from samcli.cli.types import CfnParameterOverridesType

from infra import deploy
from tests.deploy import cfn

CONFIG = tomllib.loads((cfn.ROOT / "samconfig.toml").read_text())
ENVS = [name for name in CONFIG if name != "version"]
PARAMETERS = cfn.TEMPLATE["Parameters"]


def _overrides(env):
    text = CONFIG[env]["deploy"]["parameters"]["parameter_overrides"]
    parsed = CfnParameterOverridesType().convert(text, None, None)  # SAM's own parser
    assert parsed == deploy.parse_overrides(text)
    return parsed


def _accepted(name, value):
    spec = PARAMETERS[name]
    if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
        return False
    if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
        return False
    if spec["Type"] == "Number":
        number = float(value)
        return spec.get("MinValue", number) <= number <= spec.get("MaxValue", number)
    return True


def test_there_is_a_default_and_a_prod_environment():
    assert {"default", "prod"} <= set(ENVS)
    names = {CONFIG[env]["global"]["parameters"]["stack_name"] for env in ENVS}
    assert len(names) == len(ENVS)  # two environments never deploy over each other


@pytest.mark.parametrize("env", ENVS)
def test_every_override_is_a_template_parameter_with_an_accepted_value(env):
    overrides = _overrides(env)
    assert overrides
    unknown = set(overrides) - set(PARAMETERS)
    assert not unknown, f"[{env}] names parameters the template lacks: {sorted(unknown)}"
    rejected = {k: v for k, v in overrides.items() if not _accepted(k, v)}
    assert not rejected, f"[{env}] values the template refuses: {rejected}"
    assert not cfn.failed_rules(
        cfn.parameter_values(
            **overrides, EdgeCertificateArn="arn:aws:acm:us-east-1:123456789012:certificate/x"
        )
    )


@pytest.mark.parametrize("env", ENVS)
def test_deploy_settings_need_no_question_from_sam(env):
    settings = deploy.samconfig_env(env)
    assert settings["capabilities"] == "CAPABILITY_IAM"
    assert settings["resolve_s3"] is True  # no artifact bucket to create by hand
    assert "guided" not in settings


def test_a_first_deploy_asks_only_what_has_no_safe_default_and_covers_every_required_one():
    required = {name for name, spec in PARAMETERS.items() if "Default" not in spec}
    asked = {a.parameter for a in deploy.FIRST_DEPLOY}
    assert asked <= set(PARAMETERS)
    assert required <= asked
    questions = []

    def ask(prompt, secret):
        questions.append((prompt, secret))
        return {
            "Twilio Account SID": "AC" + "1" * 32,
            "Twilio Auth Token": "t" * 32,
            "Vapi private API key": "k" * 32,
            "the edge's DNS name": "edge.example.com",
            "its Route 53 hosted zone id": "Z0123456789ABC",
            "email for alarms": "",
        }[prompt.split(" (")[0]]

    values = deploy.first_deploy_values({}, ask)
    assert len(questions) == 6  # the webhook secret and admin key are generated
    assert [secret for _, secret in questions] == [False, True, True, False, False, False]
    assert values["EdgeCertificateArn"] == ""  # the zone makes the stack create it
    for name, value in values.items():
        assert value == "" or _accepted(name, value), name
    assert cfn.failed_rules(cfn.parameter_values(**values)) == []
    assert all(_accepted(n, values[n]) for n in ("VapiWebhookSecret", "AdminApiKey"))


def test_the_environment_answers_every_question_for_an_unattended_deploy():
    environ = {
        "TWILIO_ACCOUNT_SID": "AC" + "2" * 32,
        "TWILIO_AUTH_TOKEN": "t" * 32,
        "VAPI_API_KEY": "k" * 32,
        "EDGE_DOMAIN_NAME": "edge.example.com",
        "EDGE_CERTIFICATE_ARN": "arn:aws:acm:eu-west-1:123456789012:certificate/abc",
        "ALARM_EMAIL": "",  # set but empty: no alarm mails, and no question
    }

    def never(prompt, secret):
        raise AssertionError(f"asked {prompt}")

    values = deploy.first_deploy_values(environ, never)
    assert values["TwilioAccountSid"] == environ["TWILIO_ACCOUNT_SID"]
    assert values["EdgeCertificateArn"] == environ["EDGE_CERTIFICATE_ARN"]
    assert cfn.failed_rules(cfn.parameter_values(**values)) == []


def test_an_edge_without_zone_or_certificate_is_refused_before_sam_runs():
    environ = {
        "TWILIO_ACCOUNT_SID": "AC" + "2" * 32,
        "TWILIO_AUTH_TOKEN": "t" * 32,
        "VAPI_API_KEY": "k" * 32,
        "EDGE_DOMAIN_NAME": "edge.example.com",
    }
    with pytest.raises(deploy.DeployError, match="EDGE_HOSTED_ZONE_ID"):
        deploy.first_deploy_values(environ, lambda prompt, secret: "")


def test_the_sam_command_passes_values_sam_parses_back_and_hides_secrets():
    values = {"TwilioAuthToken": "s3cr3t-token-value", "AlarmEmail": "", "EdgeMinTasks": "2"}
    command = deploy.sam_command("sam", "prod", "eu-west-1", values)
    assert command[:4] == ["sam", "deploy", "--config-env", "prod"]
    arguments = command[command.index("--parameter-overrides") + 1 :]
    assert CfnParameterOverridesType().convert(arguments, None, None) == values
    assert "s3cr3t" not in deploy.shown(command)
