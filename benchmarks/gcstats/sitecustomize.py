"""``+gcstats`` (benchmarks.edge): every garbage collection in the edge, timed.

Put on the edge's PYTHONPATH by the benchmark only; with VB_GC_STATS set, each collection's
(CLOCK_MONOTONIC time, generation, pause in ms) goes to that file as JSON when the process
exits; the benchmark keeps those inside its measuring window."""

import atexit
import gc
import json
import os
import time

_PATH = os.environ.get("VB_GC_STATS", "")
if _PATH:
    _pauses: list[tuple[float, int, float]] = []
    _started = [0.0]

    def _timer(phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            _started[0] = now
        else:
            _pauses.append((time.monotonic(), info["generation"], (now - _started[0]) * 1000))

    def _dump() -> None:
        with open(_PATH, "w") as out:
            json.dump(_pauses, out)

    gc.callbacks.append(_timer)
    atexit.register(_dump)
