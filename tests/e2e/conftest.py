"""One local stack for the end-to-end package (started once, ~4 s; stopped before other
packages run, so moto's per-process state is theirs again), with leak checks per test."""

import pytest

from infra.local import LocalStack
from tests.e2e.helpers import FAST, assert_no_leaks, stack_options


@pytest.fixture(scope="package")
def stack():
    with LocalStack(stack_options("e2e")) as running:
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
