"""Soak (`make bench-soak`): the shipped edge under 100 full-duplex calls for 30 minutes.

Same harness as ``benchmarks.edge`` (edge pinned to CPU 0, load generator with N Twilio callers
and a fake Vapi echoing every frame on CPU 1), one long window sampled every ``--sample-s``:
the edge's CPU % of a core, RSS, open descriptors, frames sent and received, and latency
p50/p99 per interval. Flat means: no trend in CPU, RSS or descriptors once the calls are up,
and every frame sent was received. Writes the samples (JSON lines) and a PNG of them, and
prints a summary with each series' first-to-last-third change.

    python -m benchmarks.soak_edge [--minutes 30] [--calls 100] [--variant shipped]
                                   [--sample-s 10] [--out benchmarks/soak_edge.png]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.edge import run_point
from infra.local_aws import embedded_aws

ROOT = Path(__file__).resolve().parent.parent


def thirds(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    """Median of the first and of the last third of the run (the middle is left out)."""
    n = max(1, len(rows) // 3)
    return statistics.median(r[key] for r in rows[:n]), statistics.median(r[key] for r in rows[-n:])


def plot(rows: list[dict[str, Any]], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["t_s"] / 60 for r in rows]
    panels = [
        ("cpu_pct", "edge CPU, % of a core"),
        ("rss_mb", "edge RSS, MB"),
        ("fds", "edge open descriptors"),
        ("p99_ms", "added latency p99 per interval, ms"),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 9), sharex=True)
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.plot(minutes, [r[key] for r in rows], linewidth=1)
        ax.set_ylabel(label, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes into the window")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--variant", default="shipped")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--no-echo", action="store_true", help="caller audio only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "soak_edge.png")
    args = parser.parse_args()
    log_dir = Path(tempfile.gettempdir()) / "voicebridge-bench-edge"
    log_dir.mkdir(parents=True, exist_ok=True)
    samples = log_dir / "soak_edge.jsonl"
    with embedded_aws(prefix="bench-soak") as aws:  # the edge claims each stream in DynamoDB
        result = run_point(
            args.variant,
            args.calls,
            args.minutes * 60,
            log_dir,
            aws,
            echo=not args.no_echo,
            samples=(samples, args.sample_s),
        )
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    lost = result["frames_sent_total"] - result["frames_received_total"]
    duplex = "caller only" if args.no_echo else "full duplex"
    title = (
        f"{args.variant}: {args.calls} {duplex} calls, {args.minutes:g} min, "
        f"{result['frames_sent_total']} frames sent, {lost} lost"
    )
    plot(rows, title, args.out)
    print(json.dumps(result))
    print(f"\n{title}; samples: {samples}; plot: {args.out}\n")
    print("| series | first third (median) | last third (median) | change |")
    print("|---|---:|---:|---:|")
    for key in ("cpu_pct", "rss_mb", "fds", "p50_ms", "p99_ms"):
        first, last = thirds(rows, key)
        change = (last - first) / first * 100 if first else float("nan")
        print(f"| {key} | {first:g} | {last:g} | {change:+.1f} % |")


if __name__ == "__main__":
    main()
