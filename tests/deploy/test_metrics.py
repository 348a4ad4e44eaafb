"""Every metric the template alarms on, scales on or charts is one the code really emits.

For the app's own namespace the check is three-way: the name is a ``voicebridge.telemetry``
constant; the code of the service named in the dimension references that constant; and that
service's real metrics sink prints EMF with exactly that namespace and dimension set.
AWS-namespace metrics must name the template's own resources.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import cfn
from voicebridge import telemetry

ROOT = Path(__file__).resolve().parents[2]
METRIC_NAMES = {
    value
    for name, value in vars(telemetry).items()
    if name.isupper()
    and isinstance(value, str)
    and name != "NAMESPACE"
    and not name.startswith("SERVICE_")
}
USES = [*cfn.alarm_metrics(), *cfn.scaling_metrics(), *cfn.dashboard_metrics()]
APP_USES = [u for u in USES if u.namespace == telemetry.NAMESPACE]


def _service_sources(service: str) -> list[Path]:
    if service == telemetry.SERVICE_EDGE:
        return sorted((ROOT / "media_edge").rglob("*.py"))
    worker = ROOT / "functions" / "worker.py"
    if service == telemetry.SERVICE_WORKER:
        return [worker]
    return [p for p in sorted((ROOT / "functions").rglob("*.py")) if p != worker]


def _constants_used(service: str) -> set[str]:
    """Metric names the service's code passes by their telemetry constant."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in _service_sources(service))
    return {getattr(telemetry, c) for c in re.findall(r"telemetry\.([A-Z][A-Z_]+)", text)}


def _emf_blobs(output: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]


def _emitted(service: str, metric: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """EMF the service's real sink prints for one value of ``metric``."""
    if service == telemetry.SERVICE_EDGE:
        from media_edge.io.telemetry import EdgeMetrics

        sink = EdgeMetrics(lambda: 3, service=service)
        if metric == telemetry.BRIDGE_LATENCY:
            sink.bridge.add(0.2)
        elif metric != telemetry.ACTIVE_CALLS:
            sink.latency(metric, 12.0)
        sink.flush()
    else:
        from functions.observability import MetricUnit, metrics_for

        metrics = metrics_for(service)
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()
    blobs = _emf_blobs(capsys.readouterr().out)
    return [
        b
        for b in blobs
        if any(m["Name"] == metric for d in b["_aws"]["CloudWatchMetrics"] for m in d["Metrics"])
    ]


def test_the_app_namespace_is_watched() -> None:
    assert APP_USES, "no alarm, scaling policy or chart on the app's own metrics"


@pytest.mark.parametrize("use", APP_USES, ids=[f"{u.where}:{u.name}" for u in APP_USES])
def test_app_metric_is_emitted_by_the_named_service(
    use: cfn.MetricUse, capsys: pytest.CaptureFixture[str]
) -> None:
    assert use.name in METRIC_NAMES, f"{use.name} is not a voicebridge.telemetry metric"
    dims = dict(use.dimensions)
    assert list(dims) == ["service"], f"{use.where}: the code emits dimension 'service' only"
    service = dims["service"]
    assert use.name in _constants_used(service), f"{service} never emits {use.name}"
    blobs = _emitted(service, use.name, capsys)
    assert blobs, f"{service}'s sink printed no EMF for {use.name}"
    for blob in blobs:
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == use.namespace
        assert directive["Dimensions"] == [["service"]]
        assert blob["service"] == service


def test_call_errors_by_reason_keep_the_service_only_series(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # CallErrors also goes out per reason; what the template watches is the service-only series.
    from media_edge.io.telemetry import EdgeMetrics

    sink = EdgeMetrics(lambda: 0, service=telemetry.SERVICE_EDGE)
    sink.count(telemetry.CALL_ERRORS, 1, reason="vapi-closed")
    sink.flush()
    dimension_sets = [
        d["Dimensions"]
        for blob in _emf_blobs(capsys.readouterr().out)
        for d in blob["_aws"]["CloudWatchMetrics"]
        if any(m["Name"] == telemetry.CALL_ERRORS for m in d["Metrics"])
    ]
    assert sorted(sorted(d[0]) for d in dimension_sets) == [["reason", "service"], ["service"]]


EXPECTED_AWS_DIMENSIONS = {
    "AWS/ApiGateway": [{"ApiId": {"Ref": "HttpApi"}}, {"ApiId": "<HttpApi>"}],
    "AWS/Lambda": [
        {"FunctionName": {"Ref": "ApiFunction"}},
        {"FunctionName": "<ApiFunction>"},
        {"FunctionName": "<WorkerFunction>"},
    ],
    "AWS/SQS": [
        {"QueueName": {"Fn::GetAtt": ["EventsQueue", "QueueName"]}},
        {"QueueName": {"Fn::GetAtt": ["EventsDLQ", "QueueName"]}},
        {"QueueName": {"Fn::GetAtt": ["DialerDLQ", "QueueName"]}},
        {"QueueName": "<EventsQueueName>"},
        {"QueueName": "<EventsDLQName>"},
    ],
    "ECS/ContainerInsights": [
        {
            "ClusterName": {"Ref": "EdgeCluster"},
            "ServiceName": {"Fn::GetAtt": ["EdgeService", "Name"]},
        },
        {"ClusterName": "<EdgeCluster>", "ServiceName": "<EdgeServiceName>"},
    ],
    "AWS/ECS": [{"ClusterName": "<EdgeCluster>", "ServiceName": "<EdgeServiceName>"}],
}
AWS_USES = [u for u in USES if u.namespace != telemetry.NAMESPACE]


@pytest.mark.parametrize("use", AWS_USES, ids=[f"{u.where}:{u.name}" for u in AWS_USES])
def test_aws_metric_names_this_stacks_resources(use: cfn.MetricUse) -> None:
    assert dict(use.dimensions) in EXPECTED_AWS_DIMENSIONS[use.namespace], use


def test_dashboard_placeholders_name_this_stacks_resources() -> None:
    _, variables = cfn.props("Dashboard")["DashboardBody"]["Fn::Sub"]
    assert variables == {
        "EdgeServiceName": {"Fn::GetAtt": ["EdgeService", "Name"]},
        "EventsQueueName": {"Fn::GetAtt": ["EventsQueue", "QueueName"]},
        "EventsDLQName": {"Fn::GetAtt": ["EventsDLQ", "QueueName"]},
    }
    # The others (<HttpApi>, <ApiFunction>, ...) are Refs to resources of those names.
    for use in cfn.dashboard_metrics():
        for _, value in use.dimensions:
            name = value.strip("<>")
            assert name in variables or name in cfn.RESOURCES or not value.startswith("<"), use


REQUIRED_ALARMS = {
    ("AWS/ApiGateway", "Latency", "p99"),
    ("AWS/Lambda", "Duration", "p99"),
    (telemetry.NAMESPACE, telemetry.BRIDGE_LATENCY, "p99"),
    (telemetry.NAMESPACE, telemetry.RESPONSE_LATENCY, "p90"),
    (telemetry.NAMESPACE, telemetry.FIRST_AUDIO_LATENCY, "p90"),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum"),
    ("AWS/ApiGateway", "5xx", "Sum"),
    ("ECS/ContainerInsights", "RunningTaskCount", "Minimum"),
}


def test_every_promised_alarm_exists_and_notifies_the_topic() -> None:
    alarms = cfn.of_type("AWS::CloudWatch::Alarm")
    found = {
        (p["Namespace"], p["MetricName"], p.get("ExtendedStatistic") or p["Statistic"])
        for p in (a["Properties"] for a in alarms.values())
    }
    assert found >= REQUIRED_ALARMS, REQUIRED_ALARMS - found
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
    dlq = next(
        a["Properties"]
        for a in alarms.values()
        if a["Properties"]["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["EventsDLQ", "QueueName"]}
    )
    assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
