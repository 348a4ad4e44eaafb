"""cfn-lint and sam validate on template.yaml, offline: fake credentials, every proxy a dead end.

Pointing HTTP(S)_PROXY at a closed loopback port makes any network call fail, so a pass here
proves the checks need neither credentials nor network (as in CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OFFLINE_ENV = {
    "PATH": os.environ.get("PATH", ""),
    "HOME": os.environ.get("HOME", "/tmp"),
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "SAM_CLI_TELEMETRY": "0",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=OFFLINE_ENV, capture_output=True, text=True, timeout=60, check=False
    )


def test_cfn_lint_finds_nothing() -> None:
    result = run(str(BIN / "cfn-lint"), "template.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_accepts_the_template() -> None:
    # The SAM transform itself: catches event/property typos that cfn-lint lets through.
    result = run(
        str(BIN / "sam"), "validate", "--region", "us-east-1", "--template", "template.yaml"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_cfn_lint_fails_on_a_broken_template(tmp_path: Path) -> None:
    # The check above can fail: a misspelt ALB property must be reported.
    broken = (
        (ROOT / "template.yaml")
        .read_text()
        .replace("ProtocolVersion: HTTP1", "ProtocolVersn: HTTP1")
    )
    target = tmp_path / "template.yaml"
    target.write_text(broken)
    result = run(str(BIN / "cfn-lint"), str(target))
    assert result.returncode != 0
    assert "ProtocolVersn" in result.stdout


def test_sam_validate_catches_an_event_typo_cfn_lint_misses(tmp_path: Path) -> None:
    # cfn-lint 1.58 passes this template; the SAM transform rejects it.
    template = (ROOT / "template.yaml").read_text()
    broken = template.replace("FunctionResponseTypes: [", "FunctionResponseType: [")
    assert broken != template
    target = tmp_path / "template.yaml"
    target.write_text(broken)
    result = run(str(BIN / "sam"), "validate", "--region", "us-east-1", "--template", str(target))
    assert result.returncode != 0
    assert "FunctionResponseType" in result.stdout + result.stderr
