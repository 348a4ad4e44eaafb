"""Cold start with and without Lambda SnapStart, as far as it can be measured off AWS.

Each figure is the median over fresh interpreters (``--runs``), timed in-process:
- ``import functions.api`` (and ``functions.worker``): the init a cold start pays without
  SnapStart (plus the runtime's own start, which this machine cannot show);
- ``warm()``: what the before-snapshot hook adds to init, paid once per published version;
- ``reset()``: the after-restore hook, paid by every restored environment (inside AWS's
  "Restore Duration", with the snapshot's own restore, which only AWS can measure);
- the first AWS client (DynamoDB) a request makes after a plain init vs after a restored warm
  one: boto3's import moves out of the first request;
- the other clients the functions make (SQS, the Lambda fallback, the console's management
  API, the worker's DynamoDB budget) after that first one, and the memory all five hold: what
  sharing one boto3 session saves (each session loads its own copy of the models).

    python -m benchmarks.snapstart [--runs 9]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import json, os, time
def mb(): return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
t0 = time.perf_counter()
import {module}
t1 = time.perf_counter()
from functions import aws, snapstart
if {warm}:
    snapstart.warm()
t2 = time.perf_counter()
if {warm}:  # restored: the after-restore hook runs first
    snapstart.reset()
t3 = time.perf_counter()
m3 = mb()
aws.client("dynamodb", None)  # the first request's first AWS call
t4 = time.perf_counter()
for service, budget in (("sqs", aws.WEBHOOK), ("lambda", aws.FALLBACK),
                        ("apigatewaymanagementapi", aws.WEBHOOK), ("dynamodb", aws.WORKER)):
    aws.client(service, None, budget)
t5 = time.perf_counter()
ms = {{"import": t1 - t0, "warm": t2 - t1, "reset": t3 - t2, "first_client": t4 - t3,
      "next_clients": t5 - t4}}
print(json.dumps({{**{{k: v * 1000 for k, v in ms.items()}}, "clients_mb": mb() - m3}}))
"""


def probe(module: str, warm: bool) -> dict[str, float]:
    env = dict(
        os.environ, AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x"
    )
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", PROBE.format(module=module, warm=warm)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found: dict[str, float] = json.loads(out.strip().splitlines()[-1])  # ms, and MB
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    print(
        "| function | init: import ms | warm() ms (before snapshot) | reset() ms (after restore) "
        "| first DynamoDB client, plain init ms | same, after warm ms "
        "| 4 more clients, after warm ms | 5 clients' memory, after warm MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for module in ("functions.api", "functions.worker"):
        plain = [probe(module, warm=False) for _ in range(args.runs)]
        warm = [probe(module, warm=True) for _ in range(args.runs)]

        def med(runs: list[dict[str, float]], key: str) -> float:
            return statistics.median(r[key] for r in runs)

        print(
            f"| {module} | {med(plain, 'import'):.0f} | {med(warm, 'warm'):.0f} "
            f"| {med(warm, 'reset'):.2f} | {med(plain, 'first_client'):.0f} "
            f"| {med(warm, 'first_client'):.0f} | {med(warm, 'next_clients'):.0f} "
            f"| {med(warm, 'clients_mb'):.1f} |"
        )


if __name__ == "__main__":
    main()
