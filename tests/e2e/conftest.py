"""One local stack for the end-to-end package (started once, ~4 s; stopped before other
packages run, so moto's per-process state is theirs again), with leak checks per test."""

import pytest

from infra.local import LocalStack, StackOptions
from tests.e2e.helpers import EDGE_ENV, FAST, assert_no_leaks


@pytest.fixture(scope="package")
def stack():
    options = StackOptions(
        api_port=0,
        edge_port=0,
        quiet=True,
        environ={},
        script=FAST,
        overrides=EDGE_ENV,
        aws_prefix="e2e",
    )
    with LocalStack(options) as running:
        yield running


@pytest.fixture
def clean_stack(stack):
    """The stack, checked after the test for leaked sessions, tasks and sockets."""
    baseline = stack.stack_tasks()
    stack.vapi.script = FAST
    stack.vapi.scripts.clear()
    stack.emf.clear()
    yield stack
    assert_no_leaks(stack, baseline)
