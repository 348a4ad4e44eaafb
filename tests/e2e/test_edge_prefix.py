"""EDGE_PUBLIC_URL with a path prefix, end to end: the API's TwiML streams to ``<prefix>/media``,
the simulated caller signs that URL as Twilio does, the edge serves it there (and nowhere else)
and claims the stream in the stack's own sessions table."""

from dataclasses import replace

import boto3
import httpx
import pytest

from infra.local import LocalStack
from infra.local_aws import REGION
from tests.e2e.helpers import assert_no_leaks, call, stack_options, talk

pytestmark = pytest.mark.e2e
PREFIX = "/voice/edge"


@pytest.fixture(scope="module")
def prefixed_stack():
    options = replace(stack_options("e2e-prefix"), edge_path=PREFIX)
    with LocalStack(options) as running:
        yield running


async def test_a_call_through_an_edge_url_with_a_path_prefix(prefixed_stack):
    stack = prefixed_stack
    baseline = stack.stack_tasks()
    assert stack.edge_url.endswith(PREFIX)
    report = await call(stack, talk())
    assert report.protocol_errors == []
    assert report.ended_by == "caller-hangup"
    assert report.first_audio_ms is not None  # bridged: the assistant was heard
    assert len(report.response_ms) == 1
    dynamodb = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("dynamodb", endpoint_url=stack.env["AWS_ENDPOINT_URL"])
    claim = dynamodb.get_item(
        TableName=stack.env["SESSIONS_TABLE"],
        Key={"pk": {"S": f"CALL#{report.call_sid}"}, "sk": {"S": "STREAM"}},
    )
    assert claim["Item"]["call_sid"] == {"S": report.call_sid}
    port = stack.env["EDGE_PORT"]
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/media")
    assert response.status_code == 404  # only the prefixed path is the stream's
    assert_no_leaks(stack, baseline)
