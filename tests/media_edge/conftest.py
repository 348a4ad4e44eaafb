"""Embedded AWS for the edge's tests that need the real stream-claim table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.local_aws import embedded_aws


@pytest.fixture(scope="package")
def edge_aws() -> Iterator[dict[str, str]]:
    """A moto server on loopback with the template's tables (SESSIONS_TABLE holds the claims),
    for ``python -m media_edge`` processes and the claim's own tests; stopped with the package
    so moto's per-process state is the next package's again."""
    with embedded_aws(prefix="media-edge") as env:
        yield env
