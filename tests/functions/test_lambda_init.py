"""In Lambda, bad configuration fails the init with one line per bad variable."""

import os
import subprocess
import sys

import pytest

from infra.local_aws import FAKE_CREDENTIALS
from voicebridge import config


@pytest.mark.parametrize(
    ("module", "variable"),
    [("functions.api", "TWILIO_AUTH_TOKEN"), ("functions.worker", "SESSIONS_TABLE")],
)
def test_missing_config_fails_the_lambda_init(module, variable):
    env = {
        "PATH": os.environ["PATH"],
        "AWS_LAMBDA_FUNCTION_NAME": "voicebridge-test",
        **FAKE_CREDENTIALS,
    }
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    marker = "voicebridge.config.ConfigError:"
    first = next(i for i, line in enumerate(lines) if line.startswith(marker))
    problems = [lines[first].split(": ", 1)[1], *lines[first + 1 :]]
    assert any(line.startswith(f"{variable} is required") for line in problems)
    if module == "functions.api":  # every missing variable at once, not only the first
        assert len(problems) == len(config.required_vars("api")), problems


def test_outside_lambda_the_module_imports_without_config():
    env = {"PATH": os.environ["PATH"], **FAKE_CREDENTIALS}
    result = subprocess.run(
        [sys.executable, "-c", "import functions.api, functions.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
