"""The container's contract, without Docker: ``python -m media_edge`` started with the task
definition's environment answers both health-check commands (task definition and Dockerfile),
and exits cleanly on SIGTERM, the signal ECS sends (and the Dockerfile's STOPSIGNAL)."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy import cfn

ROOT = Path(__file__).resolve().parents[2]


def _health_commands(port: int) -> list[list[str]]:
    """Both probes, pointed at ``port``, as argv lists run with the container's python."""
    task = cfn.edge_container()["HealthCheck"]["Command"]
    assert task[0] == "CMD"
    task_probe = [sys.executable, *task[2:]]
    task_probe[-1] = task_probe[-1].replace(":8080/", f":{port}/")
    docker = ast.literal_eval(dict(cfn.dockerfile())["HEALTHCHECK"].split(" CMD ", 1)[1])
    docker_probe = [sys.executable, *docker[1:]]
    return [task_probe, docker_probe]


@pytest.fixture
def edge() -> Iterator[tuple[subprocess.Popen[str], int, dict[str, str]]]:
    env = {
        **cfn.edge_env_with_defaults(),
        "EDGE_HOST": "127.0.0.1",  # loopback in tests; the template binds 0.0.0.0 for the ALB
        "EDGE_PORT": "0",
        # What ECS adds to every task's environment (its credentials come from the task role):
        # https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-environment-variables.html
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",  # the one boto3 reads
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "media_edge"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        port = 0
        assert process.stdout is not None
        for line in process.stdout:  # JSON log lines; the first one that says where it listens
            if line.startswith("{") and json.loads(line).get("message") == "edge listening":
                port = int(json.loads(line)["port"])
                break
        assert port, "the edge never reported its port"
        yield process, port, {**env, "EDGE_PORT": str(port)}
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        if process.stdout:
            process.stdout.close()


def test_health_checks_pass_then_sigterm_stops_the_edge(
    edge: tuple[subprocess.Popen[str], int, dict[str, str]],
) -> None:
    process, port, env = edge
    probes = _health_commands(port)
    for probe in probes:
        result = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0  # no calls: draining ends at once
    for probe in probes:  # and the probes do fail when nothing answers
        result = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
