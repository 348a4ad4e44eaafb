"""Powertools Logger (JSON) and Metrics (EMF) for the control plane, named by ``telemetry``.

Each Lambda function is one service: ``POWERTOOLS_SERVICE_NAME`` from the template wins, else the
telemetry default for that function. The CallSid is appended to the logger for the duration of a
request or record, so every line about a call carries it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from voicebridge import telemetry

__all__ = ["MetricUnit", "call_context", "elapsed_ms", "logger_for", "metrics_for"]


def _service(default: str) -> str:
    return os.environ.get("POWERTOOLS_SERVICE_NAME") or default


def logger_for(default_service: str) -> Logger:
    """A JSON logger for the service (one per Lambda function)."""
    return Logger(service=_service(default_service))


def metrics_for(default_service: str) -> Metrics:
    """An EMF metrics sink in the shared namespace, dimension ``service`` only."""
    return Metrics(namespace=telemetry.NAMESPACE, service=_service(default_service))


@contextmanager
def call_context(logger: Logger, call_sid: str | None) -> Iterator[None]:
    """Put ``callSid`` on every log line inside the block, and take it off afterwards."""
    if not call_sid:
        yield
        return
    logger.append_keys(callSid=call_sid)
    try:
        yield
    finally:
        logger.remove_keys(["callSid"])


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - started) * 1000.0
