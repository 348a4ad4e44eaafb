"""``--help`` on every entry point prints usage and exits 0 at once: nothing starts, nothing
needs configuration (``python -m media_edge --help`` used to start a server)."""

import subprocess
import sys

import pytest

ENTRY_POINTS = [
    (["-m", "media_edge"], "EDGE_PORT"),
    (["-m", "infra.local"], "API_PORT"),
    (["-m", "infra.demo"], "make demo"),
    (["-m", "infra.worker_loop"], "usage"),
    (["-m", "infra.deploy"], "TWILIO_ACCOUNT_SID"),
    (["-m", "infra.vapi_emulator"], "usage"),
    (["-m", "functions.sign_twilio"], "usage"),
    (["-m", "infra.cli"], "setup"),
    (["-m", "infra.cli", "call"], "--audio"),
    (["-m", "infra.cli", "setup"], "--dry-run"),
    (["-m", "infra.cli", "numbers", "bind"], "--assistant-id"),
]


@pytest.mark.parametrize(
    ("argv", "mentions"), ENTRY_POINTS, ids=[" ".join(a) for a, _ in ENTRY_POINTS]
)
def test_help_prints_usage_and_starts_nothing(argv, mentions):
    result = subprocess.run(
        [sys.executable, *argv, "--help"],
        env={"PATH": "/usr/bin:/bin"},  # no configuration at all
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
    assert mentions in result.stdout
    assert result.stderr == ""
