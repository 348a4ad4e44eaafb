"""SnapStart: the template enables it where Lambda allows, and the runtime hooks re-create what a
snapshot must not carry (settings with secrets, Powertools' secret cache, boto3 clients)."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import pytest

from functions import aws, snapstart
from infra import deps
from tests.deploy import cfn
from voicebridge import aws as budgeted
from voicebridge import config


class FakeRuntime(types.ModuleType):
    """Lambda's ``snapshot_restore_py``: records what is registered."""

    def __init__(self) -> None:
        super().__init__("snapshot_restore_py")
        self.before: list[Callable[[], Any]] = []
        self.after: list[Callable[[], Any]] = []

    def register_before_snapshot(self, func: Callable[[], Any]) -> None:
        self.before.append(func)

    def register_after_restore(self, func: Callable[[], Any]) -> None:
        self.after.append(func)


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> FakeRuntime:
    fake = FakeRuntime()
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", fake)
    return fake


def test_without_the_lambda_runtime_nothing_is_registered(monkeypatch):
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # import fails
    assert snapstart.register() is False


def test_after_a_restore_settings_and_secrets_are_re_read(runtime, monkeypatch):
    for name in config.required_vars("api"):
        monkeypatch.setenv(name, f"{name.lower()}-value")
    monkeypatch.setenv("EDGE_PUBLIC_URL", "wss://edge.example.com")
    monkeypatch.setenv("EVENTS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/q")
    assert snapstart.register() is True
    assert runtime.before == [snapstart.warm]
    (after,) = runtime.after
    monkeypatch.setenv("VAPI_API_KEY", "key-when-the-snapshot-was-taken")
    assert config.get_settings("api").vapi_api_key == "key-when-the-snapshot-was-taken"
    monkeypatch.setenv("VAPI_API_KEY", "rotated-key")
    assert config.get_settings("api").vapi_api_key == "key-when-the-snapshot-was-taken"  # cached
    after()
    assert config.get_settings("api").vapi_api_key == "rotated-key"


def test_after_a_restore_clients_and_the_secret_cache_are_new(runtime, monkeypatch):
    from aws_lambda_powertools.utilities.parameters import base

    snapstart.register()
    (after,) = runtime.after
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    before = aws.client("sqs", "http://127.0.0.1:1")
    assert aws.client("sqs", "http://127.0.0.1:1") is before
    session = budgeted.shared_session()  # holds the credentials it resolved for that client
    base.DEFAULT_PROVIDERS["secrets"] = object()  # a provider holding a cached secret
    after()
    assert aws.client("sqs", "http://127.0.0.1:1") is not before
    assert budgeted.shared_session() is not session
    assert "secrets" not in base.DEFAULT_PROVIDERS


def test_warm_leaves_no_client_behind(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws.reset()
    snapstart.warm()
    assert "boto3" in sys.modules
    assert not aws._clients  # what the snapshot holds is imports, never a client or a secret


def test_template_enables_snapstart_on_published_versions_of_both_functions():
    api, worker = (
        cfn.RESOURCES["ApiFunction"]["Properties"],
        cfn.RESOURCES["WorkerFunction"]["Properties"],
    )
    for props in (api, worker):
        assert props["AutoPublishAlias"] == "live"  # the API and the queue invoke the alias
    assert worker["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    # Lambda refuses SnapStart together with provisioned concurrency: the API has one or the other.
    condition, without, with_snapstart = api["SnapStart"]["Fn::If"]
    assert condition == "HasProvisionedConcurrency"
    assert without == {"Ref": "AWS::NoValue"}
    assert with_snapstart == {"ApplyOn": "PublishedVersions"}
    assert api["ProvisionedConcurrencyConfig"]["Fn::If"][0] == "HasProvisionedConcurrency"
    assert cfn.TEMPLATE["Globals"]["Function"]["Runtime"] >= "python3.12"  # SnapStart's minimum


def test_the_bundle_never_ships_its_own_snapshot_restore_py():
    """The runtime runs the hooks registered with ITS copy; one in /var/task would shadow it."""
    assert not any("snapshot" in r for r in deps.requirements("lambda"))


def test_sam_points_the_http_api_and_the_queue_at_the_snapshotted_aliases(monkeypatch):
    """SAM's own transform (offline): with AutoPublishAlias the API Gateway integration, its
    invoke permission and the SQS event source mapping all target the ``live`` alias, i.e. the
    published version SnapStart snapshots (the unpublished $LATEST never runs)."""
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    template = yaml_parse((cfn.ROOT / "template.yaml").read_text())
    template["Globals"]["Function"]["CodeUri"] = "s3://bucket/key"  # sam build's job
    parameters = {
        "EdgeCertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/x",
        "TwilioAccountSid": "AC" + "0" * 32,
    }

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    resources = transform(template, parameters, NoManagedPolicies())["Resources"]
    mappings = [r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    targets = {m["Properties"]["FunctionName"]["Ref"] for m in mappings}
    assert targets == {"WorkerFunctionAliaslive", "DialerFunctionAliaslive"}
    body = resources["HttpApi"]["Properties"]["Body"]
    uri = body["paths"]["$default"]["x-amazon-apigateway-any-method"][
        "x-amazon-apigateway-integration"
    ]["uri"]["Fn::Sub"]
    assert "${ApiFunctionAliaslive}" in uri
    api_permissions = [
        r["Properties"]["FunctionName"]
        for name, r in resources.items()
        if r["Type"] == "AWS::Lambda::Permission" and name.startswith("ApiFunction")
    ]
    assert api_permissions == [{"Ref": "ApiFunctionAliaslive"}]
