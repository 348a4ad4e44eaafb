"""Powertools Logger (JSON) and Metrics (EMF) for the control plane, named by ``telemetry``.

Each Lambda function is one service: ``POWERTOOLS_SERVICE_NAME`` from the template wins, else the
telemetry default for that function. The CallSid lives in a ContextVar that a log filter copies
onto every record: Powertools' ``append_keys`` is process-global, which under an ASGI server
running requests concurrently would stamp one call's lines with another call's CallSid.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from voicebridge import telemetry

__all__ = [
    "MetricUnit",
    "bind_call_sid",
    "call_context",
    "elapsed_ms",
    "logger_for",
    "metrics_for",
]

_call_sid: ContextVar[str | None] = ContextVar("callSid", default=None)


class _CallSidFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        call_sid = _call_sid.get()
        if call_sid and not hasattr(record, "callSid"):
            record.callSid = call_sid
        return True


def _service(default: str) -> str:
    return os.environ.get("POWERTOOLS_SERVICE_NAME") or default


def logger_for(default_service: str) -> Logger:
    """A JSON logger for the service (one per Lambda function) that adds the bound CallSid."""
    logger = Logger(service=_service(default_service))
    logger.addFilter(_CallSidFilter())
    return logger


def metrics_for(default_service: str) -> EphemeralMetrics:
    """An EMF metrics sink in the shared namespace, dimension ``service`` only. Ephemeral: its
    buffer is its own (``Metrics`` shares one per process), so when the local stack runs the API
    and the worker in one process, a flush never carries the other service's metrics."""
    return EphemeralMetrics(namespace=telemetry.NAMESPACE, service=_service(default_service))


def bind_call_sid(call_sid: str | None) -> None:
    """Stamp ``call_sid`` on every later log line of the current request (task/context)."""
    _call_sid.set(call_sid)


@contextmanager
def call_context(call_sid: str | None) -> Iterator[None]:
    """Stamp ``call_sid`` on every log line inside the block, and only there."""
    token = _call_sid.set(call_sid)
    try:
        yield
    finally:
        _call_sid.reset(token)


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - started) * 1000.0
