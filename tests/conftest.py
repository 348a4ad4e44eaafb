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
