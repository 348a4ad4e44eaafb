import json
import os
import pathlib
import subprocess

import boto3
import pytest

from infra.local_aws import embedded_aws, load_template


def test_template_short_tags_load_as_intrinsics():
    queue = load_template()["Resources"]["EventsQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["EventsDLQ", "Arn"]}


def test_embedded_aws_builds_what_the_template_defines():
    template = load_template()["Resources"]
    with embedded_aws(prefix="t") as env:
        kwargs = {"endpoint_url": env["AWS_ENDPOINT_URL"], "region_name": "us-east-1"}
        dynamodb = boto3.client("dynamodb", **kwargs)
        sqs = boto3.client("sqs", **kwargs)
        ttl = dynamodb.describe_time_to_live(TableName=env["SESSIONS_TABLE"])
        assert (
            ttl["TimeToLiveDescription"]["AttributeName"]
            == (template["SessionsTable"]["Properties"]["TimeToLiveSpecification"]["AttributeName"])
        )
        keys = dynamodb.describe_table(TableName=env["IDEMPOTENCY_TABLE"])["Table"]["KeySchema"]
        assert keys == template["IdempotencyTable"]["Properties"]["KeySchema"]
        attrs = sqs.get_queue_attributes(QueueUrl=env["EVENTS_QUEUE_URL"], AttributeNames=["All"])
        redrive = json.loads(attrs["Attributes"]["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"].endswith("t-EventsDLQ")
        assert (
            redrive["maxReceiveCount"]
            == template["EventsQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
        )
        assert attrs["Attributes"]["VisibilityTimeout"] == "180"


def test_embedded_aws_compresses_a_queues_visibility_timeout_on_request():
    with embedded_aws(prefix="v", visibility={"DialerQueue": 15}) as env:
        sqs = boto3.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")

        def visibility(queue: str) -> str:
            attributes = sqs.get_queue_attributes(QueueUrl=env[queue], AttributeNames=["All"])
            return attributes["Attributes"]["VisibilityTimeout"]

        assert visibility("DIALER_QUEUE_URL") == "15"
        assert visibility("EVENTS_QUEUE_URL") == "180"  # the template's, untouched


def test_a_visibility_for_a_queue_the_template_lacks_is_refused():
    aws = embedded_aws(prefix="w", visibility={"DialQueue": 15})
    with pytest.raises(ValueError, match="no such queue in the template: DialQueue"), aws:
        pass


def test_embedded_aws_builds_the_recordings_bucket_as_the_template_does():
    props = load_template()["Resources"]["RecordingsBucket"]["Properties"]
    with embedded_aws(prefix="rec") as env:  # moto's state is per process: another prefix
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
        bucket = env["RECORDINGS_BUCKET"]
        assert bucket == "rec-recordingsbucket"
        encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {
            "SSEAlgorithm": "AES256"
        }
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert block == props["PublicAccessBlockConfiguration"]
        rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
        days = load_template()["Parameters"]["RecordingsExpireDays"]["Default"]
        assert rules["expire-recordings"]["Expiration"] == {"Days": days}
        assert rules["expire-recordings"]["Filter"] == {"Prefix": "recordings/"}
        assert rules["abort-unfinished-uploads"]["AbortIncompleteMultipartUpload"] == {
            "DaysAfterInitiation": 1
        }


def test_embedded_aws_in_its_own_process_serves_the_same_and_stops_with_us():
    """``own_process``: moto runs in a child (benchmarks keep its work off the edge's GIL)."""

    def children() -> list[str]:
        found = subprocess.run(
            ["pgrep", "-f", "-P", str(os.getpid()), "infra.local_aws"],
            capture_output=True,
            text=True,
            check=False,
        )
        return found.stdout.split()

    with embedded_aws(prefix="child", own_process=True) as env:
        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        assert env["SESSIONS_TABLE"] in dynamodb.list_tables()["TableNames"]
        (child,) = children()
    assert not pathlib.Path(f"/proc/{child}").exists()  # stopped and reaped
