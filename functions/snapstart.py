"""Lambda SnapStart runtime hooks for every function (template.yaml enables SnapStart on their
published versions; the API's provisioned concurrency, which SnapStart does not support, turns
it off for the API).

With SnapStart, Lambda runs the init phase once when a version is published and resumes every
new execution environment from a snapshot of it, so init's cost (``import functions.api``: FastAPI
alone is ~440 ms) leaves the cold start. ``register()`` (called at import by every handler
modules) hooks two things into the runtime's ``snapshot_restore_py``:
- before the snapshot, ``warm()``: import what the first request would otherwise import (boto3
  and the parts of botocore a client needs, httpx), so restored environments start with it;
- after each restore, ``reset()``: the one place that forgets what must not outlive the snapshot:
  settings with their secrets (a secret may have rotated since publishing), Powertools' secret
  cache, the boto3 clients and their session (credentials and connections of the snapshotted
  environment). The
  first request re-reads and re-creates them. Nothing else made during init holds a client:
  stores and idempotency layers are built on first use, through ``functions.aws``.
Outside Lambda (no ``snapshot_restore_py``), ``register()`` does nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType

from functions import aws
from voicebridge.config import reset_settings_cache

WARM_CLIENTS = ("dynamodb", "sqs", "secretsmanager")  # what the functions call on AWS


def warm() -> None:
    """Import (and throw away a client of) each AWS service the functions use."""
    import boto3
    import httpx  # noqa: F401  (tools and the admin API call out with it)

    session = boto3.session.Session()
    make: Callable[..., object] = session.client  # one of many typed overloads per service
    for service in WARM_CLIENTS:
        make(service, region_name=session.region_name or "us-east-1")


def reset() -> None:
    """After a restore: settings and secrets are re-read, AWS clients re-created, on next use."""
    reset_settings_cache()
    parameters = sys.modules.get("aws_lambda_powertools.utilities.parameters")
    if parameters is not None:  # not imported: nothing cached (and no boto3 import here)
        parameters.clear_caches()
    aws.reset()


def _hooks() -> ModuleType | None:
    try:
        import snapshot_restore_py  # provided by Lambda's Python runtimes (3.12+)
    except ImportError:
        return None
    module: ModuleType = snapshot_restore_py
    return module


def register() -> bool:
    """Hook ``warm`` and ``reset`` into the runtime; False where there is no SnapStart runtime."""
    hooks = _hooks()
    if hooks is None:
        return False
    hooks.register_before_snapshot(warm)
    hooks.register_after_restore(reset)
    return True
