"""In Lambda, bad configuration fails the init with one line naming the variable."""

import os
import subprocess
import sys

import pytest

from infra.local_aws import FAKE_CREDENTIALS


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
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("voicebridge.config.ConfigError:")
    assert variable in last_line


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
