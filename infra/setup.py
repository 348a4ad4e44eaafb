"""``voicebridge setup`` and ``voicebridge numbers``: point Twilio and Vapi at a deployed stack.

Both read the stack's outputs (CloudFormation ``DescribeStacks``, or ``--outputs file.json``)
and its credentials (the environment first, else the stack's Secrets Manager secret, output
``SecretArn``), then compare what Twilio and Vapi hold with what the stack needs and change only
what differs: a second run changes nothing and says so; ``--dry-run`` sends no change at all.

Twilio (REST, IncomingPhoneNumbers: https://www.twilio.com/docs/phone-numbers/api/incomingphonenumber-resource):
list by ``PhoneNumber``, then update ``VoiceUrl``/``VoiceMethod`` and ``StatusCallback``/
``StatusCallbackMethod``. "The `voice_url` will not be used if a `voice_application_sid` or a
`trunk_sid` is set": an application is cleared (``VoiceApplicationSid=``), a trunk is reported.
Vapi (``PATCH /assistant/{id}``, ``UpdateAssistantDTO.server``): ``server.url`` = output
``VapiServerUrl`` and the ``x-vapi-secret`` header = the webhook secret; other ``server`` fields
(timeout, credentialId, backoff) are kept as they are.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from voicebridge.identifiers import is_e164

TWILIO_API = "https://api.twilio.com"
TIMEOUT_S = 15.0
SECRET_HEADER = "x-vapi-secret"  # one of the three ways functions/vapi_auth.py accepts
_CREDENTIALS = (
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "VAPI_API_KEY",
    "VAPI_WEBHOOK_SECRET",
    "ADMIN_API_KEY",
)


class SetupError(Exception):
    """What the user must fix, in one line (no secret in it)."""


@dataclass
class Stack:
    """A deployed stack as these commands need it: outputs, parameters, and credentials."""

    outputs: dict[str, str]
    parameters: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)

    def output(self, key: str) -> str:
        value = self.outputs.get(key)
        if not value:
            raise SetupError(f"the stack has no output {key} (deploy the current template.yaml)")
        return value

    def credential(self, name: str) -> str:
        value = self.credentials.get(name)
        if not value:
            raise SetupError(f"{name} is needed: export it, or let the command read the stack")
        return value


def _outputs_of(description: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    outputs = {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}
    parameters = {
        p["ParameterKey"]: p.get("ParameterValue", "") for p in description.get("Parameters", [])
    }
    return outputs, parameters


def stack_from_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Outputs (and parameters) from ``aws cloudformation describe-stacks`` output saved to a
    file, a list of ``{"OutputKey", "OutputValue"}``, or a flat ``{"Key": "value"}`` object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SetupError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SetupError(f"{path} is not JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("Stacks"), list) and data["Stacks"]:
        return _outputs_of(data["Stacks"][0])
    if isinstance(data, list):
        return _outputs_of({"Outputs": data})
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return dict(data), {}
    raise SetupError(f"{path}: expected describe-stacks output or an object of output values")


def stack_from_cloudformation(name: str, region: str | None, client: Any = None) -> Any:
    """``DescribeStacks`` for ``name``: (outputs, parameters)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    cf = client or boto3.client("cloudformation", region_name=region)
    try:
        (description,) = cf.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        raise SetupError(f"stack {name}: {exc.response['Error']['Message']}") from None
    except BotoCoreError as exc:
        raise SetupError(f"cannot reach CloudFormation: {exc}") from None
    return _outputs_of(description)


def secret_values(secret_arn: str, region: str | None, client: Any = None) -> dict[str, str]:
    """The stack's JSON secret (the keys voicebridge/config.py knows)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    sm = client or boto3.client("secretsmanager", region_name=region)
    try:
        text = sm.get_secret_value(SecretId=secret_arn)["SecretString"]
    except (ClientError, BotoCoreError) as exc:
        raise SetupError(f"cannot read the stack's secret: {type(exc).__name__}") from None
    return {k: str(v) for k, v in json.loads(text).items() if k in _CREDENTIALS}


def load_stack(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Stack:
    """Outputs from the file or CloudFormation; credentials from the environment, completed
    from the stack's secret when one is missing and the stack was read from AWS."""
    env = os.environ if environ is None else environ
    if args.outputs:
        outputs, parameters = stack_from_file(args.outputs)
    else:
        outputs, parameters = stack_from_cloudformation(args.stack, args.region)
    credentials = {name: env[name] for name in _CREDENTIALS if env.get(name)}
    if parameters.get("TwilioAccountSid"):
        credentials.setdefault("TWILIO_ACCOUNT_SID", parameters["TwilioAccountSid"])
    missing = [name for name in _CREDENTIALS if name not in credentials]
    if missing and not args.outputs and outputs.get("SecretArn"):
        for name, value in secret_values(outputs["SecretArn"], args.region).items():
            credentials.setdefault(name, value)
    return Stack(outputs, parameters, credentials)


# -- the vendors' REST APIs ---------------------------------------------------------------------


def _answer(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 300:
        try:
            body = response.json()
            detail = body.get("message") if isinstance(body, dict) else body
        except ValueError:
            detail = response.text[:200]
        raise SetupError(f"{what}: HTTP {response.status_code}: {detail}")
    return response.json()


class Twilio:
    """The two IncomingPhoneNumbers calls setup needs (Basic auth: Account SID + Auth Token)."""

    def __init__(self, client: httpx.Client, base: str, account_sid: str, token: str) -> None:
        self.client, self.account_sid = client, account_sid
        self.base = f"{base.rstrip('/')}/2010-04-01/Accounts/{account_sid}/IncomingPhoneNumbers"
        self.auth = (account_sid, token)

    def numbers(self, phone_number: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, str | int] = {"PageSize": 1000}
        if phone_number:
            params["PhoneNumber"] = phone_number
        response = self.client.get(f"{self.base}.json", params=params, auth=self.auth)
        return list(_answer(response, "Twilio IncomingPhoneNumbers")["incoming_phone_numbers"])

    def number(self, phone_number: str) -> dict[str, Any]:
        found = [n for n in self.numbers(phone_number) if n["phone_number"] == phone_number]
        if not found:
            raise SetupError(
                f"{phone_number} is not a number of Twilio account {self.account_sid} "
                "(voicebridge numbers list shows them)"
            )
        return found[0]

    def update(self, sid: str, form: dict[str, str]) -> dict[str, Any]:
        response = self.client.post(f"{self.base}/{sid}.json", data=form, auth=self.auth)
        return dict(_answer(response, f"Twilio update of {sid}"))


class Vapi:
    def __init__(self, client: httpx.Client, base: str, api_key: str) -> None:
        self.client, self.base = client, base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def assistant(self, assistant_id: str) -> dict[str, Any]:
        url = f"{self.base}/assistant/{assistant_id}"
        return dict(_answer(self.client.get(url, headers=self.headers), "Vapi assistant"))

    def update(self, assistant_id: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base}/assistant/{assistant_id}"
        response = self.client.patch(url, json=body, headers=self.headers)
        return dict(_answer(response, "Vapi assistant update"))


class ControlPlane:
    """The stack's own admin API (``Authorization: Bearer ADMIN_API_KEY``)."""

    def __init__(self, client: httpx.Client, api_url: str, admin_key: str) -> None:
        self.client, self.api_url = client, api_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {admin_key}"}

    def binding(self, number: str) -> str | None:
        response = self.client.get(f"{self.api_url}/numbers/{number}", headers=self.headers)
        if response.status_code == 404:
            return None
        return str(_answer(response, "GET /numbers")["assistantId"])

    def bind(self, number: str, assistant_id: str) -> None:
        response = self.client.put(
            f"{self.api_url}/numbers/{number}",
            json={"assistantId": assistant_id},
            headers=self.headers,
        )
        _answer(response, "PUT /numbers")


# -- what should change (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    setting: str
    old: str
    new: str
    secret: bool = False

    def line(self, applied: bool) -> str:
        def show(value: str) -> str:
            return "(none)" if not value else "***" if self.secret else value

        if self.old == self.new:
            return f"  {self.setting:<30} {show(self.new)} (unchanged)"
        verb = "" if applied else "would change: "
        return f"  {self.setting:<30} {verb}{show(self.old)} -> {show(self.new)}"


def twilio_plan(number: Mapping[str, Any], voice_url: str, status_url: str) -> list[Change]:
    """The number's webhook settings as the stack needs them (``Change.old == new`` if set)."""
    if number.get("trunk_sid"):
        raise SetupError(
            f"{number['phone_number']} is on SIP trunk {number['trunk_sid']}: Twilio ignores its "
            "voice URL; remove it from the trunk in the Twilio console first"
        )
    plan = [
        Change("VoiceUrl", number.get("voice_url") or "", voice_url),
        Change("VoiceMethod", number.get("voice_method") or "POST", "POST"),
        Change("StatusCallback", number.get("status_callback") or "", status_url),
        Change("StatusCallbackMethod", number.get("status_callback_method") or "POST", "POST"),
    ]
    if number.get("voice_application_sid"):
        plan.append(Change("VoiceApplicationSid", number["voice_application_sid"], ""))
    return plan


def vapi_plan(
    assistant: Mapping[str, Any], server_url: str, secret: str
) -> tuple[list[Change], dict[str, Any]]:
    """The changes to the assistant's ``server`` and the whole new ``server`` object."""
    found = assistant.get("server")
    current: dict[str, Any] = found if isinstance(found, dict) else {}
    headers = dict(current.get("headers") or {})
    old_secret = str(headers.get(SECRET_HEADER, ""))
    server = {**current, "url": server_url, "headers": {**headers, SECRET_HEADER: secret}}
    plan = [
        Change("server.url", str(current.get("url") or ""), server_url),
        Change(f"server.headers.{SECRET_HEADER}", old_secret, secret, secret=True),
    ]
    return plan, server


def _changed(plan: list[Change]) -> list[Change]:
    return [c for c in plan if c.old != c.new]


# -- the commands -------------------------------------------------------------------------------

Printer = Callable[[str], None]


def run_setup(
    stack: Stack,
    number: str,
    assistant_id: str | None,
    *,
    dry_run: bool,
    client: httpx.Client,
    twilio_api: str,
    vapi_api: str | None,
    out: Printer = print,
) -> int:
    """Point ``number`` and the assistant at ``stack``; 0 when done or when nothing differs."""
    if not is_e164(number):
        raise SetupError(f"{number!r} is not an E.164 number like +14155550123")
    twilio = Twilio(
        client,
        twilio_api,
        stack.credential("TWILIO_ACCOUNT_SID"),
        stack.credential("TWILIO_AUTH_TOKEN"),
    )
    resource = twilio.number(number)
    plan = twilio_plan(
        resource, stack.output("TwilioVoiceUrl"), stack.output("TwilioStatusCallbackUrl")
    )
    out(f"Twilio number {number} ({resource['sid']})")
    todo = _changed(plan)
    if todo and not dry_run:
        twilio.update(resource["sid"], {c.setting: c.new for c in todo})
    for change in plan:
        out(change.line(applied=not dry_run))
    changed = len(todo)

    assistant_id = assistant_id or stack.parameters.get("VapiAssistantId") or None
    if assistant_id is None:
        out("Vapi: no assistant given (--assistant-id), nothing to do there")
    else:
        base = vapi_api or stack.parameters.get("VapiBaseUrl") or "https://api.vapi.ai"
        vapi = Vapi(client, base, stack.credential("VAPI_API_KEY"))
        assistant = vapi.assistant(assistant_id)
        vapi_changes, server = vapi_plan(
            assistant, stack.output("VapiServerUrl"), stack.credential("VAPI_WEBHOOK_SECRET")
        )
        out(f"Vapi assistant {assistant_id} ({assistant.get('name') or 'unnamed'})")
        if _changed(vapi_changes) and not dry_run:
            vapi.update(assistant_id, {"server": server})
        for change in vapi_changes:
            out(change.line(applied=not dry_run))
        changed += len(_changed(vapi_changes))

    if changed == 0:
        out("Nothing to change: everything already points at the stack.")
    elif dry_run:
        out(f"Dry run: {changed} setting(s) would change; nothing was sent.")
    else:
        out(f"Done: {changed} setting(s) changed.")
    return 0


def run_numbers_list(stack: Stack, *, client: httpx.Client, twilio_api: str, out: Printer) -> int:
    twilio = Twilio(
        client,
        twilio_api,
        stack.credential("TWILIO_ACCOUNT_SID"),
        stack.credential("TWILIO_AUTH_TOKEN"),
    )
    voice_url = stack.outputs.get("TwilioVoiceUrl")
    plane = None
    if stack.outputs.get("ApiUrl") and stack.credentials.get("ADMIN_API_KEY"):
        plane = ControlPlane(client, stack.outputs["ApiUrl"], stack.credentials["ADMIN_API_KEY"])
    numbers = twilio.numbers()
    if not numbers:
        out(f"Twilio account {twilio.account_sid} has no phone numbers")
    for number in numbers:
        here = "this stack" if voice_url and number.get("voice_url") == voice_url else None
        target = here or number.get("voice_url") or "no voice URL"
        bound = plane.binding(number["phone_number"]) if plane else None
        assistant = f"assistant {bound}" if bound else "default assistant"
        out(
            f"{number['phone_number']:<16} {number.get('friendly_name', ''):<20} -> {target}, "
            f"{assistant if here else 'not set up (voicebridge setup --number ...)'}"
        )
    return 0


def run_numbers_bind(
    stack: Stack,
    number: str,
    assistant_id: str,
    *,
    dry_run: bool,
    client: httpx.Client,
    out: Printer,
) -> int:
    if not is_e164(number):
        raise SetupError(f"{number!r} is not an E.164 number like +14155550123")
    plane = ControlPlane(client, stack.output("ApiUrl"), stack.credential("ADMIN_API_KEY"))
    current = plane.binding(number)
    if current == assistant_id:
        out(f"{number} is already bound to assistant {assistant_id}: nothing to change.")
        return 0
    if dry_run:
        out(f"Dry run: would bind {number} to assistant {assistant_id} (now {current or 'none'}).")
        return 0
    plane.bind(number, assistant_id)
    out(f"{number} -> assistant {assistant_id} (was {current or 'none'}).")
    return 0


# -- argparse -----------------------------------------------------------------------------------


def _stack_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("the stack (default: CloudFormation stack voicebridge)")
    where.add_argument("--stack", default="voicebridge", help="stack name (default voicebridge)")
    where.add_argument("--region", help="AWS region (default: your AWS CLI's)")
    where.add_argument(
        "--outputs",
        type=Path,
        metavar="FILE",
        help="read the outputs from this JSON file (aws cloudformation describe-stacks output) "
        "instead of AWS; credentials then come from the environment only",
    )
    parser.add_argument("--twilio-api", default=TWILIO_API, help=argparse.SUPPRESS)
    parser.add_argument("--vapi-api", help=argparse.SUPPRESS)


CREDENTIALS_HELP = (
    "Credentials: TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, VAPI_API_KEY, VAPI_WEBHOOK_SECRET and "
    "ADMIN_API_KEY from the environment; any that is not set is read from the stack's secret "
    "(output SecretArn) unless --outputs is given."
)


def add_parsers(sub: Any) -> None:
    setup = sub.add_parser(
        "setup",
        help="point a Twilio number and a Vapi assistant at the deployed stack",
        description="Point a Twilio number's voice and status webhooks and a Vapi assistant's "
        "server URL and secret at the deployed stack. Idempotent; --dry-run shows the changes "
        "without making them. " + CREDENTIALS_HELP,
    )
    setup.add_argument("--number", required=True, help="the Twilio number, E.164 (+14155550123)")
    setup.add_argument(
        "--assistant-id", help="the Vapi assistant (default: the stack's VapiAssistantId)"
    )
    setup.add_argument("--dry-run", action="store_true", help="show the changes, make none")
    _stack_arguments(setup)

    numbers = sub.add_parser(
        "numbers",
        help="list the Twilio numbers, or bind one to an assistant",
        description="Twilio numbers and the assistant each one is bound to. " + CREDENTIALS_HELP,
    )
    actions = numbers.add_subparsers(dest="numbers_command", required=True)
    listing = actions.add_parser("list", help="every number, where it points, its assistant")
    _stack_arguments(listing)
    bind = actions.add_parser(
        "bind", help="bind a number to an existing Vapi assistant (admin API PUT /numbers)"
    )
    bind.add_argument("number", help="E.164 number, e.g. +14155550123")
    bind.add_argument("--assistant-id", required=True, help="the Vapi assistant id (a UUID)")
    bind.add_argument("--dry-run", action="store_true", help="show the change, make none")
    _stack_arguments(bind)


def main(args: argparse.Namespace, out: Printer = print) -> int:
    """Run ``setup`` or ``numbers``; a problem is one line on stderr and exit status 1."""
    stack = load_stack(args)
    with httpx.Client(timeout=TIMEOUT_S) as client:
        if args.command == "setup":
            return run_setup(
                stack,
                args.number,
                args.assistant_id,
                dry_run=args.dry_run,
                client=client,
                twilio_api=args.twilio_api,
                vapi_api=args.vapi_api,
                out=out,
            )
        if args.numbers_command == "list":
            return run_numbers_list(stack, client=client, twilio_api=args.twilio_api, out=out)
        return run_numbers_bind(
            stack, args.number, args.assistant_id, dry_run=args.dry_run, client=client, out=out
        )
