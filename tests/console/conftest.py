"""The console in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright's Python client against the whole local stack (API, emulated WebSocket gateway,
edge, Vapi and Twilio emulators). Without a Chromium these tests are skipped, and the run's
summary says so in capitals (tests/conftest.py); CI installs it first (``.ci/run``).

A failing test leaves a screenshot of its page in ``.artifacts/console/``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from infra.caller import SimulatedCall
from infra.local import LocalStack
from tests.e2e.helpers import FAST, stack_options

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".artifacts" / "console"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SKIP_REASON = "no Chromium: apt-get install chromium (or set CHROMIUM to its path)"


def chromium_path() -> str | None:
    """Debian's package installs /usr/bin/chromium; CHROMIUM points at another one."""
    return (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if chromium_path() is not None:
        return
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_OUTCOME] = report.failed
    return report


_OUTCOME = pytest.StashKey[bool]()


@pytest.fixture(scope="package")
def stack() -> Iterator[LocalStack]:
    with LocalStack(stack_options("console")) as running:
        yield running


@pytest.fixture
def console_stack(stack: LocalStack) -> LocalStack:
    assert stack.vapi is not None
    stack.vapi.script = FAST
    stack.vapi.scripts.clear()
    return stack


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    assert path is not None
    with sync_playwright() as playwright:
        # A fresh profile per launch (Playwright makes one), never the machine's.
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    # Playwright's waits evaluate strings, which the console's CSP forbids (no 'unsafe-eval'):
    # tests bypass it; test_browser.py checks the real page under its CSP separately.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    if request.node.stash.get(_OUTCOME, False):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert errors == [], f"the page threw: {errors}"


def sign_in(page: Any, stack: LocalStack) -> None:
    page.goto(f"{stack.api_url}/console")
    page.fill("#key", stack.env["ADMIN_API_KEY"])
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#calls-view:not([hidden])")
    page.wait_for_selector("#feed-state.up")


def place_call(stack: LocalStack, steps: list[Any], **config: Any) -> tuple[str, Future[Any]]:
    """Start a simulated call on the stack's loop; (its CallSid, the report's future)."""
    caller = SimulatedCall(stack.caller_config(max_seconds=30, **config), steps)
    future = asyncio.run_coroutine_threadsafe(caller.run(), stack.loop.loop)  # type: ignore[union-attr]
    return caller.call_sid, future
