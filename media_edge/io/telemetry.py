"""Edge logs and metrics: Powertools JSON logs per call, EMF metrics aggregated between flushes.

Per-frame numbers (BridgeLatency: ~100 values per second per call) cannot go out one by one:
Powertools/EMF takes at most 100 values per metric per blob. Every millisecond metric is
therefore kept as a log-scale histogram (20 buckets per decade, about +-6 % per value) and each
flush emits, per metric, either every observation (when there were at most 99) or 99 evenly
spaced quantiles of the window. CloudWatch percentiles over those values track the true
distribution to about one bucket, p99 included, at a fixed cost per flush whatever the load.
Counts are summed; ActiveCalls is sampled at flush; CallErrors also goes out per ``reason``.
Under the supervisor (EDGE_WORKERS > 1) workers pass no ``active_calls``: the supervisor emits the
task's sum, since the scaling policy averages every ActiveCalls sample as "calls per task".
"""

from __future__ import annotations

import asyncio
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from voicebridge import telemetry

MAX_VALUES = 99  # Powertools flushes a metric by itself at 100 values
_PER_DECADE = 20
_LOW_DECADE = -3  # 1 us
_BUCKETS = 8 * _PER_DECADE  # 1 us .. 100 s


def edge_logger() -> Logger:
    return Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or telemetry.SERVICE_EDGE)


class Histogram:
    """Counts per log-scale bucket; O(1) memory and a log10 per observation."""

    __slots__ = ("count", "counts")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Empty it in place: the hot path holds a reference to the live histogram."""
        self.counts = [0] * _BUCKETS
        self.count = 0

    def add(self, ms: float) -> None:
        index = int((math.log10(ms) - _LOW_DECADE) * _PER_DECADE) if ms > 0.0 else 0
        self.counts[0 if index < 0 else _BUCKETS - 1 if index >= _BUCKETS else index] += 1
        self.count += 1

    @staticmethod
    def value(index: int) -> float:
        """The geometric centre of a bucket, in ms."""
        return 10 ** (_LOW_DECADE + (index + 0.5) / _PER_DECADE)

    def values(self) -> list[float]:
        """All observations (bucket centres) if few, else MAX_VALUES evenly spaced quantiles."""
        out: list[float] = []
        if self.count <= MAX_VALUES:
            for index, n in enumerate(self.counts):
                out.extend([self.value(index)] * n)
            return out
        targets = [(i + 0.5) * self.count / MAX_VALUES for i in range(MAX_VALUES)]
        seen = 0
        t = 0
        for index, n in enumerate(self.counts):
            seen += n
            while t < MAX_VALUES and targets[t] <= seen:
                out.append(self.value(index))
                t += 1
        return out


class EdgeMetrics:
    """In-process aggregation; ``flush()`` writes EMF (one blob + one per error reason)."""

    def __init__(self, active_calls: Callable[[], int] | None, service: str | None = None) -> None:
        self._service = (
            service or os.environ.get("POWERTOOLS_SERVICE_NAME") or telemetry.SERVICE_EDGE
        )
        self._active_calls = active_calls
        self.bridge = Histogram()  # sessions keep it and call .add: reset, never replaced
        self._latencies: dict[str, Histogram] = {}
        self._counts: dict[str, float] = {}
        self._errors: dict[str, int] = {}

    def latency(self, name: str, ms: float) -> None:
        histogram = self._latencies.get(name)
        if histogram is None:
            histogram = self._latencies[name] = Histogram()
        histogram.add(ms)

    def count(self, name: str, value: float, reason: str | None = None) -> None:
        self._counts[name] = self._counts.get(name, 0.0) + value
        if reason is not None:
            self._errors[reason] = self._errors.get(reason, 0) + int(value)

    def flush(self) -> None:
        """Emit everything gathered since the last flush, then start a new window."""
        sink = EphemeralMetrics(namespace=telemetry.NAMESPACE, service=self._service)
        if self._active_calls is not None:
            sink.add_metric(telemetry.ACTIVE_CALLS, MetricUnit.Count, self._active_calls())
        histograms = {telemetry.BRIDGE_LATENCY: self.bridge, **self._latencies}
        for name, histogram in histograms.items():
            for value in histogram.values():
                sink.add_metric(name, MetricUnit.Milliseconds, value)
        for name, total in self._counts.items():
            sink.add_metric(name, MetricUnit.Count, total)
        _flush(sink)
        for reason, total in self._errors.items():
            by_reason = EphemeralMetrics(namespace=telemetry.NAMESPACE, service=self._service)
            by_reason.add_dimension("reason", reason)
            by_reason.add_metric(telemetry.CALL_ERRORS, MetricUnit.Count, total)
            _flush(by_reason)
        self.bridge.reset()
        self._latencies = {}
        self._counts = {}
        self._errors = {}


async def flush_every(metrics: EdgeMetrics, interval_s: int, logger: Logger) -> None:
    """Flush ``metrics`` every ``interval_s`` (at least 1) until cancelled; a failing flush is
    logged: metrics must never take the edge down."""
    while True:
        await asyncio.sleep(max(1, interval_s))
        try:
            metrics.flush()
        except Exception:
            logger.exception("metrics flush failed")


def _flush(sink: EphemeralMetrics) -> None:
    with warnings.catch_warnings():  # "no metrics" after an auto-flush at 100 values is fine
        warnings.simplefilter("ignore")
        sink.flush_metrics()


def log_call(logger: Logger, level: str, message: str, keys: dict[str, str], **fields: Any) -> None:
    """A call's log line: callSid/streamSid (once known) plus the event's fields."""
    extra = {k: v for k, v in keys.items() if v}
    extra.update(fields)
    getattr(logger, level)(message, extra=extra)
