"""Embedded AWS: a moto server on loopback, with the tables, queues and buckets of the template.

The template is the single source of truth: this module reads its ``AWS::DynamoDB::Table``,
``AWS::SQS::Queue`` and ``AWS::S3::Bucket`` resources and creates the same things (keys, TTL
attribute, redrive policy, visibility timeout; a bucket's encryption, public access block and
lifecycle rules) in moto, so the local stack and the tests cannot drift from what deploys. A
resource behind a condition (the recordings bucket) is created too: locally every option is on.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import yaml

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"
REGION = "us-east-1"

# Logical id in the template -> the environment variable the code reads it from.
RESOURCE_ENV: Mapping[str, str] = {
    "SessionsTable": "SESSIONS_TABLE",
    "IdempotencyTable": "IDEMPOTENCY_TABLE",
    "EventsQueue": "EVENTS_QUEUE_URL",
    "EventsDLQ": "EVENTS_DLQ_URL",
    "OutboundTable": "OUTBOUND_TABLE",
    "DialerQueue": "DIALER_QUEUE_URL",
    "DialerDLQ": "DIALER_DLQ_URL",
    "ConsoleConnectionsTable": "CONSOLE_CONNECTIONS_TABLE",
    "ConsoleEventsTable": "CONSOLE_EVENTS_TABLE",
    "RecordingsBucket": "RECORDINGS_BUCKET",
}

FAKE_CREDENTIALS: Mapping[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation short tags (``!Ref``, ``!GetAtt``, ...)."""


def _cfn_tag(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template as plain data, intrinsic functions in their long form."""
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def _resources(template: Mapping[str, Any], kind: str) -> dict[str, Mapping[str, Any]]:
    return {
        name: resource.get("Properties", {})
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def _parameter(template: Mapping[str, Any], value: Any) -> Any:
    """A ``!Ref`` to a parameter, as its default (the local stack deploys the defaults)."""
    if isinstance(value, dict) and "Ref" in value:
        return template["Parameters"][value["Ref"]]["Default"]
    return value


def _lifecycle_rule(template: Mapping[str, Any], rule: Mapping[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule as S3's API spells it."""
    spec: dict[str, Any] = {
        "ID": rule["Id"],
        "Status": rule["Status"],
        "Filter": {"Prefix": rule.get("Prefix", "")},
    }
    if "ExpirationInDays" in rule:
        spec["Expiration"] = {"Days": int(_parameter(template, rule["ExpirationInDays"]))}
    if "AbortIncompleteMultipartUpload" in rule:
        spec["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    return spec


def create_buckets(
    s3: Any, template: Mapping[str, Any] | None = None, prefix: str = "voicebridge"
) -> dict[str, str]:
    """Create the template's buckets with their encryption, public access block and lifecycle;
    return the env vars that name them."""
    template = template or load_template()
    env: dict[str, str] = {}
    for name, props in _resources(template, "AWS::S3::Bucket").items():
        bucket = f"{prefix}-{name}".lower()
        s3.create_bucket(Bucket=bucket)
        if "BucketEncryption" in props:
            rules = [  # CloudFormation's name for what S3's API calls Apply...ByDefault
                {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
                for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            ]
            s3.put_bucket_encryption(
                Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules}
            )
        if "PublicAccessBlockConfiguration" in props:
            s3.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"],
            )
        lifecycle = props.get("LifecycleConfiguration", {}).get("Rules", [])
        if lifecycle:
            s3.put_bucket_lifecycle_configuration(
                Bucket=bucket,
                LifecycleConfiguration={
                    "Rules": [_lifecycle_rule(template, rule) for rule in lifecycle]
                },
            )
        env[RESOURCE_ENV.get(name, name)] = bucket
    return env


def create_resources(
    dynamodb: Any,
    sqs: Any,
    template: Mapping[str, Any] | None = None,
    prefix: str = "voicebridge",
    visibility: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """Create the template's tables and queues; return the env vars that name them.

    ``visibility`` replaces queues' VisibilityTimeout (template resource name -> seconds): tests
    compress time with it, so a message held by a killed consumer comes back while they wait.
    """
    template = template or load_template()
    env: dict[str, str] = {}
    for name, props in _resources(template, "AWS::DynamoDB::Table").items():
        table_name = f"{prefix}-{name}"
        spec: dict[str, Any] = {
            "TableName": table_name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if "GlobalSecondaryIndexes" in props:
            spec["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        dynamodb.create_table(**spec)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(TableName=table_name, TimeToLiveSpecification=ttl)
        env[RESOURCE_ENV.get(name, name)] = table_name

    queues = _resources(template, "AWS::SQS::Queue")
    unknown = sorted(set(visibility or {}) - set(queues))
    if unknown:
        raise ValueError(f"no such queue in the template: {', '.join(unknown)}")
    arns: dict[str, str] = {}
    # Dead-letter queues first: a queue's redrive policy names its DLQ's ARN.
    for name in sorted(queues, key=lambda n: "RedrivePolicy" in queues[n]):
        props = queues[name]
        attributes = {
            key: str(props[key])
            for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds")
            if key in props
        }
        if visibility and name in visibility:
            attributes["VisibilityTimeout"] = str(visibility[name])
        redrive = props.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arns[target], "maxReceiveCount": redrive["maxReceiveCount"]}
            )
        url = sqs.create_queue(QueueName=f"{prefix}-{name}", Attributes=attributes)["QueueUrl"]
        arns[name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        env[RESOURCE_ENV.get(name, name)] = url
    return env


def _moto_server() -> Any:
    """moto's threaded server, with DynamoDB requests served one at a time.

    moto's DynamoDB backend is not thread-safe: TransactWriteItems deep-copies the table for its
    rollback while another request thread changes it ("dictionary changed size during
    iteration", an HTTP 500). DynamoDB itself serialises nothing, but it never fails that way, so
    the embedded AWS takes a lock around DynamoDB calls. SQS is left concurrent: a long poll
    waits inside its request and must not hold anyone else up.
    """
    import threading

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    class SerialDynamoDB(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            lock = threading.Lock()

            def serve(environ: dict[str, Any], start_response: Any) -> Any:
                if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
                    return app(environ, start_response)
                with lock:
                    return list(app(environ, start_response))

            self._server = make_server(
                self._ip_address, self._port, serve, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per AWS request
    return SerialDynamoDB(ip_address="127.0.0.1", port=0, verbose=False)


@contextmanager
def embedded_aws(
    prefix: str = "voicebridge",
    *,
    own_process: bool = False,
    visibility: Mapping[str, int] | None = None,
) -> Iterator[dict[str, str]]:
    """Start moto on 127.0.0.1 (free port), create the resources, yield the env pointing at it.

    The yielded mapping holds ``AWS_ENDPOINT_URL``, fake credentials and the resource variables;
    callers export it to the processes they start (or ``os.environ`` for in-process use).
    ``own_process``: moto runs in a child process (``python -m infra.local_aws``) rather than in
    threads of this one, where its request handling competes for the GIL with whatever else
    runs here (the local stack's in-process edge): closer to AWS, another machine, for a
    benchmark that loads both. ``visibility``: as in ``create_resources``.
    """
    if own_process:
        stop, endpoint = _moto_process()
    else:
        server = _moto_server()
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        stop = server.stop
    try:
        env = {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        env.update(
            create_resources(
                session.client("dynamodb", endpoint_url=endpoint),
                session.client("sqs", endpoint_url=endpoint),
                prefix=prefix,
                visibility=visibility,
            )
        )
        env.update(create_buckets(session.client("s3", endpoint_url=endpoint), prefix=prefix))
        yield env
    finally:
        stop()


def _moto_process() -> tuple[Callable[[], None], str]:
    """``python -m infra.local_aws`` (the same serial-DynamoDB moto) in a child that dies with
    this process; (stop, endpoint)."""
    from voicebridge.process import die_with_parent

    child = subprocess.Popen(
        [sys.executable, "-m", "infra.local_aws"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent(),
    )
    assert child.stdout is not None
    line = child.stdout.readline()  # the port, once it listens
    if not line.strip().isdigit():
        child.kill()
        raise RuntimeError(f"embedded AWS did not start: {line!r}")

    def stop() -> None:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)

    return stop, f"http://127.0.0.1:{int(line)}"


def main() -> None:
    """Serve the embedded AWS until terminated; print the port once listening."""
    server = _moto_server()
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


def export(env: Mapping[str, str]) -> None:
    """Put ``env`` into this process's environment (for in-process clients)."""
    os.environ.update(env)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # for sigwait
    main()
