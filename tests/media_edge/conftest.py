"""The edge suite runs twice in ``make test``: on the pure-Python sources, then against the
mypyc build (infra/edge_compile.py) with VOICEBRIDGE_EDGE_BUILD=compiled. That second run must
really import the compiled modules, or it would test the fallback twice: checked first.

It also provides embedded AWS for the tests that need the real stream-claim table, and the
in-process edge with its fakes (``stack``) for the socket-level tests."""

from __future__ import annotations

import asyncio
import importlib
import os
import sysconfig
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from infra import edge_compile
from infra.local_aws import embedded_aws

if TYPE_CHECKING:
    from tests.media_edge.test_server import Stack

COMPILED = os.environ.get("VOICEBRIDGE_EDGE_BUILD") == "compiled"


def loaded_build() -> dict[str, bool]:
    """Each module the build compiles -> whether the imported one is its C extension."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    result = {}
    for path in edge_compile.modules():
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        result[module.__name__] = (module.__file__ or "").endswith(suffix)
    return result


def pytest_configure(config: pytest.Config) -> None:
    if COMPILED:
        build = loaded_build()
        if not all(build.values()):
            pure = sorted(name for name, compiled in build.items() if not compiled)
            raise pytest.UsageError(f"VOICEBRIDGE_EDGE_BUILD=compiled, but {pure} are not")


@pytest.fixture(scope="package")
def edge_aws() -> Iterator[dict[str, str]]:
    """A moto server on loopback with the template's tables (SESSIONS_TABLE holds the claims),
    for ``python -m media_edge`` processes and the claim's own tests; stopped with the package
    so moto's per-process state is the next package's again."""
    with embedded_aws(prefix="media-edge") as env:
        yield env


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """The edge in process with the fake Vapi and Twilio (test_server's ``Stack``), stopped after
    the test, then checked for leaks: nothing the edge or the fakes started may outlive them."""
    from tests.media_edge.test_server import Stack  # at use: conftest loads before the tests

    stack = Stack()
    yield stack
    await stack.stop()
    current = asyncio.current_task()
    await asyncio.sleep(0)
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert leftover == []
    assert stack.edge is None or stack.edge.active_calls == 0
    assert stack.vapi is None or all(ws.close_code is not None for ws in stack.vapi.connections)
