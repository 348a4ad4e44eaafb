"""Hermetic defaults for every test: fake AWS credentials, no real endpoints."""

import pytest

from infra.local_aws import FAKE_CREDENTIALS
from voicebridge.config import reset_settings_cache


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch):
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    reset_settings_cache()
    yield
    reset_settings_cache()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say it loudly when the browser tests did not run (no Chromium), and where they ran."""
    from tests.console.conftest import SKIP_REASON, chromium_path

    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if "browser" in getattr(report, "keywords", {}) and SKIP_REASON in str(report.longrepr)
    ]
    ran = [
        report
        for status in ("passed", "failed")
        for report in terminalreporter.stats.get(status, [])
        if "browser" in getattr(report, "keywords", {}) and report.when == "call"
    ]
    if skipped:
        terminalreporter.write_sep(
            "!", f"BROWSER TESTS SKIPPED ({len(skipped)}): {SKIP_REASON}", red=True, bold=True
        )
    elif ran:
        terminalreporter.write_line(f"browser tests: {len(ran)} ran in {chromium_path()}")
