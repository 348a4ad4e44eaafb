"""``make deploy``: ``sam deploy`` with samconfig.toml, asking only what has no safe default.

``sam deploy --guided`` asks about every parameter. Here the first deploy of an environment asks
only for what nobody but you knows: the Twilio Account SID and Auth Token, the Vapi private key,
the edge's DNS name and its Route 53 hosted zone (or an issued ACM certificate), and where alarms
go. The webhook secret and the admin key are generated (they end up in the stack's Secrets
Manager secret, where ``voicebridge setup`` and ``aws secretsmanager get-secret-value`` read
them). Every other parameter keeps the template's default or the env's ``parameter_overrides``
in samconfig.toml. A value set in the environment (table below) is used without asking, so CI
can deploy unattended. Later deploys ask nothing: CloudFormation keeps the previous values of
parameters that are not given again (SAM sends ``UsePreviousValue``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMCONFIG = ROOT / "samconfig.toml"


@dataclass(frozen=True)
class Ask:
    """A parameter only the user can answer on a first deploy."""

    parameter: str
    env: str  # set it in the environment to skip the question
    prompt: str
    secret: bool = False
    optional: bool = False
    generate: bool = False  # a random value is a safe default


FIRST_DEPLOY: tuple[Ask, ...] = (
    Ask("TwilioAccountSid", "TWILIO_ACCOUNT_SID", "Twilio Account SID (AC..., Twilio console)"),
    Ask("TwilioAuthToken", "TWILIO_AUTH_TOKEN", "Twilio Auth Token", secret=True),
    Ask("VapiApiKey", "VAPI_API_KEY", "Vapi private API key", secret=True),
    Ask(
        "VapiWebhookSecret",
        "VAPI_WEBHOOK_SECRET",
        "Vapi webhook secret",
        secret=True,
        generate=True,
    ),
    Ask("AdminApiKey", "ADMIN_API_KEY", "admin API key", secret=True, generate=True),
    Ask("EdgeDomainName", "EDGE_DOMAIN_NAME", "the edge's DNS name (e.g. edge.example.com)"),
    Ask(
        "EdgeHostedZoneId",
        "EDGE_HOSTED_ZONE_ID",
        "its Route 53 hosted zone id (Z...; Enter if you bring a certificate)",
        optional=True,
    ),
    Ask(
        "EdgeCertificateArn",
        "EDGE_CERTIFICATE_ARN",
        "an issued ACM certificate ARN for it (Enter: the stack creates one in the zone)",
        optional=True,
    ),
    Ask("AlarmEmail", "ALARM_EMAIL", "email for alarms (Enter: none)", optional=True),
)

Prompt = Callable[[str, bool], str]


class DeployError(Exception):
    """One line for the user."""


def samconfig_env(env: str, path: Path = SAMCONFIG) -> dict[str, object]:
    """The ``[env.deploy.parameters]`` table merged over ``[env.global.parameters]``."""
    config = tomllib.loads(path.read_text(encoding="utf-8"))
    if env not in config:
        known = ", ".join(k for k in config if k != "version")
        raise DeployError(f"samconfig.toml has no environment {env!r} (known: {known})")
    tables = config[env]
    return {
        **tables.get("global", {}).get("parameters", {}),
        **tables.get("deploy", {}).get("parameters", {}),
    }


def parse_overrides(text: str) -> dict[str, str]:
    """``Key="value" Key2=value2`` (SAM's parameter_overrides syntax) -> {Key: value}."""
    pairs = {}
    for item in shlex.split(text):
        key, sep, value = item.partition("=")
        if not sep:
            raise DeployError(f"samconfig.toml: {item!r} in parameter_overrides is not Key=value")
        pairs[key] = value
    return pairs


def format_overrides(values: Mapping[str, str]) -> list[str]:
    """One ``Key="value"`` argument each (SAM's syntax; no shell in between, and the template's
    patterns keep double quotes out of every value)."""
    for key, value in values.items():
        if '"' in value:
            raise DeployError(f"{key}: a value may not contain a double quote")
    return [f'{key}="{value}"' for key, value in values.items()]


SECRET_PARAMETERS = frozenset(a.parameter for a in FIRST_DEPLOY if a.secret)


def shown(command: list[str]) -> str:
    """The command for a terminal: secret parameter values as ***."""
    return shlex.join(
        f'{word.split("=", 1)[0]}="***"' if word.split("=", 1)[0] in SECRET_PARAMETERS else word
        for word in command
    )


def first_deploy_values(environ: Mapping[str, str], ask: Prompt) -> dict[str, str]:
    """The values of FIRST_DEPLOY: from the environment, else asked (secrets not echoed)."""
    values: dict[str, str] = {}
    for item in FIRST_DEPLOY:
        if item.env in environ:  # set, even to "" (an optional value left out on purpose)
            value = environ[item.env]
        elif item.parameter == "EdgeHostedZoneId" and environ.get("EDGE_CERTIFICATE_ARN"):
            value = ""  # a certificate of their own: no zone needed
        elif item.parameter == "EdgeCertificateArn" and values.get("EdgeHostedZoneId"):
            value = ""  # with a zone the stack creates the certificate
        elif item.generate:
            value = secrets.token_urlsafe(32)
        else:
            value = ask(item.prompt, item.secret).strip()
        if not value and not item.optional:
            raise DeployError(f"{item.parameter} is needed for the first deploy ({item.env})")
        values[item.parameter] = value
    if not (values["EdgeHostedZoneId"] or values["EdgeCertificateArn"]):
        raise DeployError(
            "the edge needs EDGE_HOSTED_ZONE_ID (the stack creates the certificate) or "
            "EDGE_CERTIFICATE_ARN (README.md#certificate-and-dns shows how to get one)"
        )
    return values


def given_values(environ: Mapping[str, str]) -> dict[str, str]:
    """On an update, only what the environment sets explicitly changes."""
    return {item.parameter: environ[item.env] for item in FIRST_DEPLOY if environ.get(item.env)}


def stack_exists(name: str, region: str | None) -> bool:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        boto3.client("cloudformation", region_name=region).describe_stacks(StackName=name)
    except ClientError as exc:
        if "does not exist" in exc.response["Error"]["Message"]:
            return False
        raise DeployError(f"CloudFormation: {exc.response['Error']['Message']}") from None
    except BotoCoreError as exc:
        raise DeployError(f"cannot reach CloudFormation: {exc}") from None
    return True


def sam_command(sam: str, env: str, region: str | None, overrides: Mapping[str, str]) -> list[str]:
    command = [sam, "deploy", "--config-env", env]
    if region:
        command += ["--region", region]
    if overrides:
        command += ["--parameter-overrides", *format_overrides(overrides)]
    return command


def _prompt(text: str, secret: bool) -> str:
    if not sys.stdin.isatty():
        raise DeployError(f"{text}: not set in the environment and there is no terminal to ask")
    return getpass.getpass(f"{text}: ") if secret else input(f"{text}: ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.deploy",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="First-deploy values from the environment: "
        + ", ".join(f"{a.env} ({a.parameter})" for a in FIRST_DEPLOY),
    )
    parser.add_argument("--env", default="default", help="samconfig.toml environment")
    parser.add_argument("--region", help="AWS region (default: your AWS CLI's)")
    parser.add_argument("--edge-image", help="EdgeImageUri: the image make push printed")
    parser.add_argument("--sam", default=str(Path(sys.executable).parent / "sam"))
    parser.add_argument("--print", action="store_true", help="print the sam command, run nothing")
    args = parser.parse_args(argv)
    try:
        config = samconfig_env(args.env)
        overrides = parse_overrides(str(config.get("parameter_overrides", "")))
        stack = str(config["stack_name"])
        if stack_exists(stack, args.region):
            overrides.update(given_values(os.environ))
        else:
            print(f"First deploy of stack {stack}: a few values only you know.", flush=True)
            overrides.update(first_deploy_values(os.environ, _prompt))
        if args.edge_image:
            overrides["EdgeImageUri"] = args.edge_image
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 1
    command = sam_command(args.sam, args.env, args.region, overrides)
    if args.print:
        print(shown(command))
        return 0
    environment = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    return subprocess.run(command, cwd=ROOT, env=environment, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
