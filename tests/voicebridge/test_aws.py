"""voicebridge.aws: every client states its budget and comes from the process's one session."""

from __future__ import annotations

import pytest

from functions import aws as function_clients
from media_edge.io.artifacts import dynamodb_client
from media_edge.io.recording import s3_client
from voicebridge import aws

LOCAL = "http://127.0.0.1:9"
BUDGET = aws.Budget(connect_timeout=1.0, read_timeout=2.0, max_attempts=2)


@pytest.fixture(autouse=True)
def _region(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_the_functions_and_the_edge_load_the_service_models_once():
    """A session keeps its own copy of every model it loads (~10 MB per client's session)."""
    loaders = {
        id(c._loader)
        for c in (
            function_clients.client("sqs", LOCAL),
            function_clients.client("dynamodb", LOCAL, function_clients.WORKER),
            dynamodb_client(LOCAL),
            s3_client(LOCAL),
        )
    }
    assert loaders == {id(aws.shared_session()._session.get_component("data_loader"))}


def test_a_forgotten_session_is_replaced_by_a_new_one():
    session = aws.shared_session()
    aws.forget_shared_session()
    assert aws.shared_session() is not session


@pytest.mark.parametrize(("endpoint", "style"), [(LOCAL, "path"), (None, None)])
def test_s3_signs_with_sigv4_and_addresses_a_local_endpoint_by_path(endpoint, style):
    config = aws.client("s3", BUDGET, endpoint).meta.config
    assert config.signature_version == "s3v4"
    assert (config.s3 or {}).get("addressing_style") == style
    assert (config.connect_timeout, config.read_timeout) == (1.0, 2.0)


def test_other_services_keep_their_own_signing():
    assert aws.client("dynamodb", BUDGET, LOCAL).meta.config.signature_version == "v4"
