"""The Makefile installs per purpose: the demo never pulls benchmark-only packages, installs
show progress, and the operate targets run the commands the README documents."""

import re
import subprocess
import tomllib

import pytest

from tests.deploy import cfn

EXTRAS = tomllib.loads((cfn.ROOT / "pyproject.toml").read_text())["project"][
    "optional-dependencies"
]


def make_n(*args: str) -> str:
    """What ``make -n -B`` would run (nothing runs; every target treated as out of date)."""
    result = subprocess.run(
        ["make", "-n", "-B", *args, "AWS_REGION=us-east-1", "STACK=voicebridge"],
        cwd=cfn.ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},  # no aws CLI: no AWS call at all
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def closure(extra: str) -> set[str]:
    """The package names an extra installs, through voicebridge[...] references."""
    names: set[str] = set()
    for requirement in EXTRAS[extra]:
        name = re.split(r"[<>=;\[ ]", requirement, maxsplit=1)[0].lower()
        if name == "voicebridge":
            inner = re.search(r"\[([^\]]+)\]", requirement).group(1)
            for item in inner.split(","):
                names |= closure(item.strip())
        else:
            names.add(name)
    return names


BENCH_ONLY = closure("bench") - closure("local") - closure("test")


def test_benchmark_only_packages_are_only_in_the_bench_extra():
    assert {"onnxruntime", "picows", "pipecat-ai", "soxr", "webrtcvad-wheels"} <= BENCH_ONLY


def test_the_demo_does_not_install_the_compiler_the_tests_use():
    # mypy type-checks and compiles the edge in `make test`; `make demo`/`make run` never need it
    assert "mypy" in closure("test")
    assert "mypy" not in closure("local")


@pytest.mark.parametrize("target", ["demo", "run"])
def test_demo_and_run_install_only_the_local_extra(target):
    commands = make_n(target)
    installs = [line for line in commands.splitlines() if " pip install " in line and "-e" in line]
    assert installs == [
        "PYTHONWARNINGS=ignore .venv/bin/python -m pip install --progress-bar on -e '.[local]'"
    ]
    assert not BENCH_ONLY & closure("local")


def test_test_installs_the_test_extra_and_installs_are_not_silent():
    commands = make_n("test")
    assert "pip install --progress-bar on -e '.[test]'" in commands
    assert "--quiet -e" not in commands
    assert "==> installing voicebridge[test]" in commands


def test_image_builds_arm64_with_buildx_and_registers_qemu_on_other_hosts():
    commands = make_n("image")
    assert "docker buildx build --platform linux/arm64 --load -f infra/Dockerfile" in commands
    assert "docker run --privileged --rm tonistiigi/binfmt --install arm64" in commands
    assert "aarch64|arm64" in commands  # an arm64 host skips the emulation step


def test_logs_follow_all_three_log_groups_and_delete_deletes_the_stack():
    logs = make_n("logs")
    assert "sam logs --region us-east-1 --tail" in logs
    assert logs.count("--cw-log-group") == 3
    for group in ("ApiLogGroup", "WorkerLogGroup", "EdgeLogGroup"):
        assert cfn.RESOURCES[group]["Type"] == "AWS::Logs::LogGroup"
    assert "sam delete --stack-name voicebridge --region us-east-1" in make_n("delete")


def test_deploy_uses_samconfig_environments_not_guided():
    commands = make_n("deploy", "ENV=prod")
    assert "-m infra.deploy --env prod --region us-east-1" in commands
    assert "--guided" not in commands
