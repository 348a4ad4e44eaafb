import json

import boto3

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
