"""Metric aggregation: bounded values per flush that keep the distribution's percentiles."""

from __future__ import annotations

import json

import numpy as np

from media_edge.io.telemetry import MAX_VALUES, EdgeMetrics, Histogram
from voicebridge import telemetry


def test_few_observations_are_emitted_one_by_one():
    histogram = Histogram()
    for ms in (0.05, 0.2, 3.0):
        histogram.add(ms)
    values = histogram.values()
    assert len(values) == 3
    for got, want in zip(values, (0.05, 0.2, 3.0), strict=True):
        assert abs(got / want - 1) < 0.07  # within one bucket (20 per decade)


def test_many_observations_become_quantiles_that_keep_p50_and_p99():
    rng = np.random.default_rng(7)
    samples = rng.lognormal(mean=np.log(0.08), sigma=0.6, size=50_000)  # ms, like frame costs
    histogram = Histogram()
    for ms in samples:
        histogram.add(float(ms))
    values = np.array(histogram.values())
    assert len(values) == MAX_VALUES
    for q in (50, 90, 99):
        assert abs(np.percentile(values, q) / np.percentile(samples, q) - 1) < 0.15


def test_out_of_range_values_are_clamped_not_lost():
    histogram = Histogram()
    for ms in (0.0, 1e-9, 1e9):
        histogram.add(ms)
    assert histogram.count == 3
    assert len(histogram.values()) == 3


def test_bridge_latency_held_by_a_session_keeps_reporting_after_a_flush(capsys):
    metrics = EdgeMetrics(lambda: 1)
    held = metrics.bridge  # what a CallSession keeps for its per-frame measurement
    held.add(0.2)
    metrics.flush()
    held.add(0.3)  # a frame of a call that outlives the flush
    metrics.flush()
    first, second = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(first[telemetry.BRIDGE_LATENCY]) == 1
    assert len(second[telemetry.BRIDGE_LATENCY]) == 1


def test_flush_emits_counts_gauge_and_errors_by_reason(capsys):
    metrics = EdgeMetrics(lambda: 7)
    metrics.bridge.add(0.1)
    metrics.latency(telemetry.RESPONSE_LATENCY, 640.0)
    metrics.count(telemetry.FRAMES_FILLED, 2)
    metrics.count(telemetry.FRAMES_FILLED, 3)
    metrics.count(telemetry.CALL_ERRORS, 1, reason="flood")
    metrics.count(telemetry.CALL_ERRORS, 1, reason="flood")
    metrics.count(telemetry.CALL_ERRORS, 1, reason="idle_timeout")
    metrics.flush()
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    main, *by_reason = blobs
    assert main[telemetry.ACTIVE_CALLS] == [7.0]
    assert main[telemetry.FRAMES_FILLED] == [5.0]
    assert main[telemetry.CALL_ERRORS] == [3.0]
    assert len(main[telemetry.BRIDGE_LATENCY]) == 1
    assert main["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    reasons = {blob["reason"]: blob[telemetry.CALL_ERRORS] for blob in by_reason}
    assert reasons == {"flood": [2.0], "idle_timeout": [1.0]}
    for blob in by_reason:
        assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["reason", "service"]]
    metrics.flush()  # a new window: only the gauge
    (quiet,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert telemetry.FRAMES_FILLED not in quiet
    assert telemetry.BRIDGE_LATENCY not in quiet
