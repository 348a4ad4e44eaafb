"""template.yaml against the code: handlers, config, secrets, the edge's wiring, data resources."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from tests.deploy import cfn
from voicebridge import config, telemetry

DEPLOYABLES = cfn.deployables()
IDS = [d.name for d in DEPLOYABLES]


@pytest.mark.parametrize("name", sorted(cfn.functions()))
def test_every_handler_is_a_real_callable(name: str) -> None:
    module_name, _, attr = cfn.props(name)["Handler"].rpartition(".")
    handler = getattr(importlib.import_module(module_name), attr)
    assert callable(handler)


def test_functions_run_python312_on_arm64_with_json_logs() -> None:
    function_globals = cfn.TEMPLATE["Globals"]["Function"]
    assert function_globals["Runtime"] == "python3.12"
    assert function_globals["Architectures"] == ["arm64"]
    assert function_globals["LoggingConfig"]["LogFormat"] == "JSON"
    for name in cfn.functions():
        assert cfn.RESOURCES[name]["Metadata"]["BuildMethod"] == "makefile"


def test_one_deployable_per_role() -> None:
    assert sorted(d.role for d in DEPLOYABLES) == ["api", "console", "dialer", "edge", "worker"]


@pytest.mark.parametrize("deployable", DEPLOYABLES, ids=IDS)
def test_every_required_variable_is_provided(deployable: cfn.Deployable) -> None:
    provided = set(deployable.env) | deployable.secrets
    missing = set(config.required_vars(deployable.role)) - provided  # type: ignore[arg-type]
    assert not missing, f"{deployable.name} ({deployable.role}) lacks {sorted(missing)}"


@pytest.mark.parametrize("deployable", DEPLOYABLES, ids=IDS)
def test_every_variable_set_is_one_the_code_knows(deployable: cfn.Deployable) -> None:
    unknown = {
        name
        for name in deployable.env
        if name not in config.ENV_NAMES
        and not name.startswith(("POWERTOOLS_", "AWS_"))
        and name != "LOG_LEVEL"
    }
    assert not unknown, f"{deployable.name} sets variables no code reads: {sorted(unknown)}"


@pytest.mark.parametrize("deployable", DEPLOYABLES, ids=IDS)
def test_environment_with_default_parameters_loads_for_its_role(
    deployable: cfn.Deployable,
) -> None:
    # Every default the template passes must also be a value config.py accepts.
    config.load_settings(deployable.role, cfn.env_with_defaults(deployable))  # type: ignore[arg-type]


@pytest.mark.parametrize("deployable", DEPLOYABLES, ids=IDS)
def test_no_secret_in_a_plain_environment_variable(deployable: cfn.Deployable) -> None:
    assert not config.SECRET_NAMES & set(deployable.env)


@pytest.mark.parametrize("deployable", DEPLOYABLES, ids=IDS)
def test_powertools_names_match_telemetry(deployable: cfn.Deployable) -> None:
    assert deployable.env["POWERTOOLS_METRICS_NAMESPACE"] == telemetry.NAMESPACE
    assert deployable.service in cfn.ROLE_OF_SERVICE


def test_the_secret_holds_every_secret_the_code_knows() -> None:
    assert cfn.secret_keys() == config.SECRET_NAMES


def test_the_edge_reads_only_its_own_secrets() -> None:
    edge = cfn.edge_deployable()
    assert edge.secrets == {"TWILIO_AUTH_TOKEN", "VAPI_API_KEY", "STREAM_TOKEN_SECRET"}
    (statement,) = cfn.props("EdgeExecutionRole")["Policies"][0]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert statement["Resource"] == cfn.SECRET_REF


def test_the_edge_reaches_dynamodb_only_for_claims_and_the_live_console() -> None:
    # The stream claim and the console's control URL: one UpdateItem on the sessions table; the
    # live feed: events written in batches, the watching connections queried. Nothing else.
    statements = [
        statement
        for policy in cfn.props("EdgeTaskRole")["Policies"]
        if "PolicyDocument" in policy  # the recordings' policy is an Fn::If (S3 only)
        for statement in policy["PolicyDocument"]["Statement"]
    ]
    dynamodb = {
        (s["Action"], s["Resource"]["Fn::GetAtt"][0])
        for s in statements
        if "dynamodb" in str(s["Action"])
    }
    assert dynamodb == {
        ("dynamodb:UpdateItem", "SessionsTable"),
        ("dynamodb:BatchWriteItem", "ConsoleEventsTable"),
        ("dynamodb:Query", "ConsoleConnectionsTable"),
    }
    assert cfn.edge_deployable().env["SESSIONS_TABLE"] == {"Ref": "SessionsTable"}


def test_worker_batches_report_item_failures_with_bounded_concurrency() -> None:
    (event,) = cfn.props("WorkerFunction")["Events"].values()
    assert event["Type"] == "SQS"
    sqs = event["Properties"]
    assert sqs["Queue"] == {"Fn::GetAtt": ["EventsQueue", "Arn"]}
    assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= sqs["BatchSize"] <= 10
    assert sqs["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "WorkerMaxConcurrency"}


def test_queue_visibility_covers_six_worker_timeouts_and_redrives() -> None:
    queue = cfn.props("EventsQueue")
    assert queue["VisibilityTimeout"] >= 6 * cfn.props("WorkerFunction")["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["EventsDLQ", "Arn"]}
    for name in ("EventsQueue", "EventsDLQ"):
        assert cfn.props(name)["SqsManagedSseEnabled"] is True


@pytest.mark.parametrize(
    ("table", "ttl"), [("SessionsTable", "expires_at"), ("IdempotencyTable", "expiration")]
)
def test_tables_are_on_demand_with_ttl_and_pitr(table: str, ttl: str) -> None:
    props = cfn.props(table)
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["TimeToLiveSpecification"] == {"AttributeName": ttl, "Enabled": True}
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_api_provisioned_concurrency_is_a_parameter_zero_means_off() -> None:
    api = cfn.props("ApiFunction")
    assert api["AutoPublishAlias"]
    condition, on, off = api["ProvisionedConcurrencyConfig"]["Fn::If"]
    assert on == {"ProvisionedConcurrentExecutions": {"Ref": "ApiProvisionedConcurrency"}}
    assert off == {"Ref": "AWS::NoValue"}
    assert cfn.TEMPLATE["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ApiProvisionedConcurrency"}, "0"]}]
    }


def _edge_port() -> int:
    return int(cfn.edge_deployable().env["EDGE_PORT"])


def test_edge_port_is_the_same_everywhere() -> None:
    port = _edge_port()
    container = cfn.edge_container()
    assert [m["ContainerPort"] for m in container["PortMappings"]] == [port]
    assert cfn.props("EdgeTargetGroup")["Port"] == port
    ingress = cfn.props("EdgeTaskIngressFromAlb")
    assert ingress["FromPort"] == ingress["ToPort"] == port
    assert f"127.0.0.1:{port}/health" in " ".join(container["HealthCheck"]["Command"])
    service = cfn.props("EdgeService")
    assert service["LoadBalancers"][0]["ContainerPort"] == port


def test_edge_drains_within_its_stop_timeout_and_matches_the_alb() -> None:
    container = cfn.edge_container()
    assert container["StopTimeout"] == 120
    assert cfn.edge_deployable().env["DRAIN_SECONDS"] == {"Ref": "DrainSeconds"}
    attributes = {
        a["Key"]: a["Value"] for a in cfn.props("EdgeTargetGroup")["TargetGroupAttributes"]
    }
    assert attributes["deregistration_delay.timeout_seconds"] == {"Ref": "DrainSeconds"}
    drain = cfn.TEMPLATE["Parameters"]["DrainSeconds"]
    assert drain["MaxValue"] < container["StopTimeout"]
    assert (
        config.load_settings("edge", cfn.edge_env_with_defaults()).drain_seconds == drain["Default"]
    )


def test_edge_environment_with_default_parameters_is_valid_edge_config() -> None:
    settings = config.load_settings("edge", cfn.edge_env_with_defaults())
    assert settings.edge_host == "0.0.0.0"  # reachable from the ALB, not only loopback
    assert settings.edge_port == _edge_port()
    assert settings.edge_max_calls == cfn.TEMPLATE["Parameters"]["EdgeMaxCallsPerTask"]["Default"]


def test_alb_keeps_websockets_open_for_an_hour_over_http11_and_tls() -> None:
    attributes = {
        a["Key"]: a["Value"] for a in cfn.props("EdgeLoadBalancer")["LoadBalancerAttributes"]
    }
    assert int(attributes["idle_timeout.timeout_seconds"]) >= 3600
    assert cfn.props("EdgeTargetGroup")["ProtocolVersion"] == "HTTP1"
    listener = cfn.props("EdgeHttpsListener")
    assert listener["Protocol"] == "HTTPS"
    (certificate,) = listener["Certificates"]  # which one: tests/deploy/test_certificate.py
    assert certificate["CertificateArn"]["Fn::If"][1:] == [
        {"Ref": "EdgeCertificate"},
        {"Ref": "EdgeCertificateArn"},
    ]


def test_edge_runs_on_demand_fargate_arm64() -> None:
    strategy = cfn.props("EdgeService")["CapacityProviderStrategy"]
    assert {s["CapacityProvider"] for s in strategy} == {"FARGATE"}
    task = cfn.props("EdgeTaskDefinition")
    assert task["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    assert task["Cpu"] == {"Ref": "EdgeCpu"}
    assert task["Memory"] == {"Ref": "EdgeMemory"}


def test_edge_scales_on_cpu_and_on_active_calls_per_task() -> None:
    policies = [
        p["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        for p in cfn.of_type("AWS::ApplicationAutoScaling::ScalingPolicy").values()
    ]
    predefined = {
        p["PredefinedMetricSpecification"]["PredefinedMetricType"]
        for p in policies
        if "PredefinedMetricSpecification" in p
    }
    assert predefined == {"ECSServiceAverageCPUUtilization"}
    custom = [
        p["CustomizedMetricSpecification"] for p in policies if "CustomizedMetricSpecification" in p
    ]
    assert [(c["MetricName"], c["Statistic"]) for c in custom] == [
        (telemetry.ACTIVE_CALLS, "Average")
    ]


def _url_paths(output: dict[str, Any]) -> set[str]:
    condition, *branches = output["Value"]["Fn::If"]
    assert condition in cfn.TEMPLATE["Conditions"]
    return {cfn.sub_text(branch).rsplit("}", 1)[1] for branch in branches}


def test_outputs_point_at_routes_that_exist() -> None:
    from starlette.routing import Match

    from functions.api import app
    from media_edge.server import MEDIA_PATH

    outputs = cfn.TEMPLATE["Outputs"]
    for name in ("TwilioVoiceUrl", "TwilioStatusCallbackUrl", "VapiServerUrl"):
        (path,) = _url_paths(outputs[name])
        scope = {"type": "http", "path": path, "method": "POST", "root_path": ""}
        served = any(route.matches(scope)[0] == Match.FULL for route in app.routes)
        assert served, f"{name} points at {path}, which the API does not serve with POST"
    assert _url_paths(outputs["EdgeWebSocketUrl"]) == {MEDIA_PATH}
    assert "DashboardUrl" in outputs


def _schema_enum(resource_type: str, *path: str) -> set[Any]:
    """The allowed values CloudFormation's own schema (shipped with cfn-lint) gives a property."""
    from cfnlint.schema.manager import PROVIDER_SCHEMA_MANAGER

    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", resource_type).schema
    node: dict[str, Any] = schema
    for key in path:
        node = node["properties"][key]
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return set(node["enum"])


@pytest.mark.parametrize(
    ("parameter", "resource_type", "path"),
    [
        ("LogLevel", "AWS::Lambda::Function", ("LoggingConfig", "ApplicationLogLevel")),
        ("LogRetentionDays", "AWS::Logs::LogGroup", ("RetentionInDays",)),
        (
            "TaskAssignPublicIp",
            "AWS::ECS::Service",
            ("NetworkConfiguration", "AwsvpcConfiguration", "AssignPublicIp"),
        ),
    ],
)
def test_every_allowed_parameter_value_is_valid_where_it_goes(
    parameter: str, resource_type: str, path: tuple[str, ...]
) -> None:
    # cfn-lint checks a parameter's default only; a user may pick any allowed value.
    allowed = set(cfn.TEMPLATE["Parameters"][parameter]["AllowedValues"])
    assert allowed <= _schema_enum(resource_type, *path)


def test_dialer_batches_report_item_failures_and_its_queue_outlives_six_timeouts() -> None:
    (event,) = cfn.props("DialerFunction")["Events"].values()
    sqs = event["Properties"]
    assert event["Type"] == "SQS"
    assert sqs["Queue"] == {"Fn::GetAtt": ["DialerQueue", "Arn"]}
    assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert sqs["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "DialerMaxConcurrency"}
    queue = cfn.props("DialerQueue")
    assert queue["VisibilityTimeout"] >= 6 * cfn.props("DialerFunction")["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["DialerDLQ", "Arn"]}


def _statements(function: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in cfn.props(function)["Policies"]
        if isinstance(policy, dict) and "Statement" in policy
        for statement in policy["Statement"]
    ]


@pytest.mark.parametrize("function", ["ApiFunction", "WorkerFunction", "DialerFunction"])
def test_outbound_table_access_is_only_what_each_function_does(function: str) -> None:
    granted = {
        action
        for statement in _statements(function)
        if "OutboundTable" in str(statement["Resource"])
        for action in statement["Action"]
    }
    never = {"dynamodb:Scan", "dynamodb:DeleteTable", "dynamodb:*"}
    assert granted
    assert not granted & never
    if function != "ApiFunction":  # only the admin API deletes (a do-not-call entry)
        assert "dynamodb:DeleteItem" not in granted
    crud = [p for p in cfn.props(function)["Policies"] if "DynamoDBCrudPolicy" in p]
    assert all(p["DynamoDBCrudPolicy"] != {"TableName": {"Ref": "OutboundTable"}} for p in crud)


def test_the_outbound_table_has_the_dialers_index_and_ttl() -> None:
    props = cfn.props("OutboundTable")
    (index,) = props["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "queue"
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["q_pk", "q_sk"]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    dialer_resources = [s["Resource"] for s in _statements("DialerFunction")]
    assert {"Fn::Sub": "${OutboundTable.Arn}/index/queue"} in dialer_resources[0]
