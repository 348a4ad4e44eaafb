"""Read template.yaml the way the deploy checks need it: resources, env per deployable, metrics.

The template is loaded by ``infra.local_aws.load_template`` (intrinsics in their long form), so
``{"Ref": "AppSecret"}`` etc. compare as plain data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.local_aws import load_template
from voicebridge import telemetry

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE: dict[str, Any] = load_template()
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
SECRET_REF = {"Ref": "AppSecret"}
ROLE_OF_SERVICE = {
    telemetry.SERVICE_API: "api",
    telemetry.SERVICE_WORKER: "worker",
    telemetry.SERVICE_EDGE: "edge",
    telemetry.SERVICE_DIALER: "dialer",
    telemetry.SERVICE_CONSOLE: "console",
}
_SUB_VAR = re.compile(r"\$\{([^}!]+)\}")


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in RESOURCES.items() if res["Type"] == kind}


def props(name: str) -> dict[str, Any]:
    return RESOURCES[name].get("Properties", {})


def sub_text(value: Any) -> str:
    """The template string of an ``Fn::Sub`` (either form)."""
    sub = value["Fn::Sub"]
    return sub[0] if isinstance(sub, list) else sub


def secret_keys() -> set[str]:
    """Keys of the JSON secret: the template's keys plus the generated one."""
    spec = props("AppSecret")["GenerateSecretString"]
    text = _SUB_VAR.sub("x", sub_text(spec["SecretStringTemplate"]))
    return set(json.loads(text)) | {spec["GenerateStringKey"]}


@dataclass
class Deployable:
    """One process the template runs: its env, the secrets it can read, its role in config."""

    name: str
    env: dict[str, Any]
    secrets: set[str] = field(default_factory=set)

    @property
    def service(self) -> str:
        return self.env["POWERTOOLS_SERVICE_NAME"]

    @property
    def role(self) -> str:
        return ROLE_OF_SERVICE[self.service]


def functions() -> dict[str, dict[str, Any]]:
    return of_type("AWS::Serverless::Function")


def function_deployable(name: str) -> Deployable:
    globals_env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    fn = props(name)
    env = {**globals_env, **fn.get("Environment", {}).get("Variables", {})}
    readable = {"SecretArn": SECRET_REF}
    can_read = any(
        policy.get("AWSSecretsManagerGetSecretValuePolicy") == readable
        for policy in fn.get("Policies", [])
        if isinstance(policy, dict)
    )
    secrets = secret_keys() if env.get("SECRETS_ID") == SECRET_REF and can_read else set()
    return Deployable(name, env, secrets)


def edge_container() -> dict[str, Any]:
    (container,) = props("EdgeTaskDefinition")["ContainerDefinitions"]
    return container


def edge_deployable() -> Deployable:
    container = edge_container()
    env = {item["Name"]: item["Value"] for item in container["Environment"]}
    secrets: set[str] = set()
    for item in container.get("Secrets", []):
        match = re.fullmatch(r"\$\{AppSecret\}:([A-Z0-9_]+)::", sub_text(item["ValueFrom"]))
        if match and match.group(1) == item["Name"] and item["Name"] in secret_keys():
            secrets.add(item["Name"])
    return Deployable("EdgeTaskDefinition", env, secrets)


def deployables() -> list[Deployable]:
    return [*(function_deployable(name) for name in functions()), edge_deployable()]


@dataclass(frozen=True)
class MetricUse:
    """A metric the template watches: where, and with which dimensions."""

    where: str
    namespace: str
    name: str
    dimensions: tuple[tuple[str, Any], ...]


def alarm_metrics() -> list[MetricUse]:
    return [
        MetricUse(
            name,
            p["Namespace"],
            p["MetricName"],
            tuple((d["Name"], d["Value"]) for d in p.get("Dimensions", [])),
        )
        for name, alarm in of_type("AWS::CloudWatch::Alarm").items()
        for p in [alarm["Properties"]]
    ]


def scaling_metrics() -> list[MetricUse]:
    uses = []
    for name, policy in of_type("AWS::ApplicationAutoScaling::ScalingPolicy").items():
        spec = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        custom = spec.get("CustomizedMetricSpecification")
        if custom:
            dims = tuple((d["Name"], d["Value"]) for d in custom.get("Dimensions", []))
            uses.append(MetricUse(name, custom["Namespace"], custom["MetricName"], dims))
    return uses


def dashboard_metrics() -> list[MetricUse]:
    """Every metric row of the dashboard, with CloudWatch's "." / "..." shorthand expanded."""
    body = sub_text(props("Dashboard")["DashboardBody"])
    quoted = re.sub(r'"\$\{([^}!]+)\}"', lambda m: f'"<{m.group(1)}>"', body)
    widgets = json.loads(_SUB_VAR.sub("0", quoted))["widgets"]  # bare ones are numbers
    uses = []
    for widget in widgets:
        previous: list[Any] = []
        for row in widget["properties"].get("metrics", []):
            parts = [p for p in row if not isinstance(p, dict)]
            if parts and parts[0] == "...":
                parts = previous[: len(previous) - len(parts) + 1] + parts[1:]
            parts = [previous[i] if p == "." else p for i, p in enumerate(parts)]
            previous = parts
            namespace, metric, *dims = parts
            pairs = tuple(zip(dims[::2], dims[1::2], strict=True))
            uses.append(MetricUse(widget["properties"]["title"], namespace, metric, pairs))
    return uses


_SAMPLES = {  # for parameters without a default, resource names, conditional values, secrets
    "EDGE_PUBLIC_URL": "wss://edge.example.com",
    "PUBLIC_BASE_URL": "https://api.example.com",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "SESSIONS_TABLE": "voicebridge-SessionsTable",
    "IDEMPOTENCY_TABLE": "voicebridge-IdempotencyTable",
    "EVENTS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/voicebridge-events",
    "WORKER_FUNCTION_NAME": "voicebridge-WorkerFunction-abc123",
    "OUTBOUND_TABLE": "voicebridge-OutboundTable",
    "DIALER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/voicebridge-dialer",
    "TWILIO_AUTH_TOKEN": "t" * 32,
    "VAPI_API_KEY": "k" * 32,
    "VAPI_WEBHOOK_SECRET": "w" * 32,
    "ADMIN_API_KEY": "a" * 32,
    "STREAM_TOKEN_SECRET": "s" * 64,
    "EDGE_WORKERS": "1",
    "CONSOLE_CONNECTIONS_TABLE": "voicebridge-ConsoleConnectionsTable",
    "CONSOLE_EVENTS_TABLE": "voicebridge-ConsoleEventsTable",
    "CONSOLE_WS_URL": "wss://abc123.execute-api.us-east-1.amazonaws.com/live",
    "CONSOLE_WS_MANAGEMENT_URL": "https://abc123.execute-api.us-east-1.amazonaws.com/live",
    "RECORDINGS_BUCKET": "",  # !If RecordingsOn: off with the default parameters
}


def _resolve(name: str, value: Any) -> str:
    """A template value as the process would see it, parameters at their defaults."""
    if isinstance(value, str):
        return value
    parameter = TEMPLATE["Parameters"].get(value.get("Ref", ""), {})
    return str(parameter["Default"]) if "Default" in parameter else _SAMPLES[name]


def env_with_defaults(deployable: Deployable) -> dict[str, str]:
    """The process environment AWS would set, parameters at their defaults, secrets inlined
    (instead of SECRETS_ID, which needs Secrets Manager)."""
    env = {
        name: _resolve(name, value)
        for name, value in deployable.env.items()
        if name != "SECRETS_ID"
    }
    env.update({name: _SAMPLES[name] for name in deployable.secrets})
    return env


def edge_env_with_defaults() -> dict[str, str]:
    return env_with_defaults(edge_deployable())


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of infra/Dockerfile, continuation lines joined."""
    text = (ROOT / "infra" / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and line[0] != "#")
    ]


def parameter_values(**given: str) -> dict[str, Any]:
    """Every parameter at its default (or a sample when it has none), with ``given`` on top."""
    values: dict[str, Any] = {}
    for name, spec in TEMPLATE["Parameters"].items():
        default = spec.get("Default", "")
        if spec["Type"] == "CommaDelimitedList":
            default = [item for item in str(default).split(",") if item]
        values[name] = default
    values.update(given)
    return values


def evaluate(node: Any, params: dict[str, Any]) -> Any:
    """The value of a condition, rule assertion or ``Fn::If`` for these parameter values (the
    intrinsics the template's conditions and rules use)."""
    if not isinstance(node, dict):
        return [evaluate(n, params) for n in node] if isinstance(node, list) else node
    ((fn, arg),) = node.items()
    if fn == "Ref":
        return params.get(arg, {"Ref": arg})  # resources stay symbolic
    if fn in ("Condition", "Fn::Condition"):  # the loader spells !Condition the long way
        return evaluate(TEMPLATE["Conditions"][arg], params)
    if fn == "Fn::Equals":
        left, right = (evaluate(a, params) for a in arg)
        return str(left) == str(right)
    if fn == "Fn::Not":
        return not evaluate(arg[0], params)
    if fn == "Fn::And":
        return all(evaluate(a, params) for a in arg)
    if fn == "Fn::Or":
        return any(evaluate(a, params) for a in arg)
    if fn == "Fn::Contains":
        values, value = evaluate(arg[0], params), evaluate(arg[1], params)
        return str(value) in [str(v) for v in values]
    if fn == "Fn::Join":
        separator, items = arg
        return separator.join(str(i) for i in evaluate(items, params))
    if fn == "Fn::If":
        condition, when_true, when_false = arg
        chosen = when_true if evaluate(TEMPLATE["Conditions"][condition], params) else when_false
        return evaluate(chosen, params)
    if fn in ("Fn::GetAtt", "Fn::Sub"):
        return node  # resolved by CloudFormation at deploy time: symbolic here
    raise ValueError(f"evaluate() does not know {fn}")


def failed_rules(params: dict[str, Any]) -> list[str]:
    """The names of the template's Rules these parameter values break (what CloudFormation
    refuses before creating anything)."""
    failed = []
    for name, rule in TEMPLATE.get("Rules", {}).items():
        if "RuleCondition" in rule and not evaluate(rule["RuleCondition"], params):
            continue
        if not all(evaluate(a["Assert"], params) for a in rule["Assertions"]):
            failed.append(name)
    return failed


def created_resources(params: dict[str, Any]) -> set[str]:
    """The resources a deploy with these parameter values creates."""
    return {
        name
        for name, resource in RESOURCES.items()
        if "Condition" not in resource
        or evaluate(TEMPLATE["Conditions"][resource["Condition"]], params)
    }
