"""Live-console benchmark (``make bench-console``): caption latency from the Vapi emulator
emitting a transcript to it being rendered in a console (headless Chromium), at 1 and N
concurrent calls with C consoles open; and the console's first paint.

The whole local stack runs (API, emulated WebSocket gateway, edge, Vapi and Twilio emulators,
moto). Each call talks for several turns with scripted transcripts, so partials flow from both
sides. Every console shows one call's view (console i watches call i mod calls) and is also
subscribed to the calls list, as a supervisor's page is. Latency per caption:

- ``vapi -> page``: the emulator's wall clock right before the transcript frame is written to
  the edge's socket, to the page's ``requestAnimationFrame`` after the caption's DOM update
  (the frame it is painted in); same machine, same clock;
- split at the edge's publish stamp (``ts`` of the event): ``vapi -> edge`` and
  ``edge -> page`` (gateway post + browser).

Only captions that arrived live count (not ones replayed from the store to a late page).
The machine's load average is printed: other work on it shifts the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import time
from collections import defaultdict, deque
from typing import Any

from infra.caller import Hangup, Say, SimulatedCall, WaitForSilence, WaitForSpeech
from infra.local import LocalStack
from infra.vapi_emulator import Script
from infra.vapi_emulator import server as vapi_server
from infra.vapi_emulator.assistant import SendEvent
from tests.console.conftest import CHROMIUM_FLAGS, chromium_path
from tests.e2e.helpers import UTTERANCE, stack_options


def scripted(transcripts: tuple[str | None, ...] = ()) -> Script:
    return Script(
        greeting_ms=1500,
        think_ms=200,
        end_of_turn_ms=300,
        reply_max_ms=1500,
        transcripts=transcripts,
    )


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Emitted:
    """When the emulator wrote each transcript to the edge: (callSid, role, final, text) ->
    wall ms, in order (a key may repeat)."""

    def __init__(self) -> None:
        self.at: dict[tuple[str, str, bool, str], deque[float]] = defaultdict(deque)
        original = vapi_server.VapiEmulator._run

        async def run(emulator: Any, call: Any, ws: Any, actions: list[Any]) -> None:
            for action in actions:
                message = action.message if isinstance(action, SendEvent) else None
                if ws is not None and message and message.get("type") == "transcript":
                    metadata = (call.record.get("assistantOverrides") or {}).get("metadata") or {}
                    key = (
                        str(metadata.get("callSid")),
                        message["role"],
                        message["transcriptType"] == "final",
                        message["transcript"],
                    )
                    self.at[key].append(time.time() * 1000)
                await original(emulator, call, ws, [action])

        vapi_server.VapiEmulator._run = run  # type: ignore[method-assign,assignment]


def script_for(n: int) -> Script:
    words = [f"{WORDS[(n + i) % len(WORDS)]}{n}" for i in range(4)]
    return scripted((" ".join(words), " ".join(reversed(words))))


def steps() -> list[Any]:
    turn = [Say(UTTERANCE), WaitForSpeech(), WaitForSilence(silence_ms=600)]
    return [WaitForSilence(silence_ms=800), *turn, *turn, Hangup()]


def sign_in(page: Any, stack: LocalStack) -> None:
    page.goto(f"{stack.api_url}/console")
    page.fill("#key", stack.env["ADMIN_API_KEY"])
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#feed-state.up")


def run_point(stack: LocalStack, pages: list[Any], calls: int, emitted: Emitted) -> dict[str, Any]:
    assert stack.vapi is not None
    assert stack.loop is not None
    sids = [f"CA{os.urandom(16).hex()}" for _ in range(calls)]
    for n, sid in enumerate(sids):
        stack.vapi.scripts[sid] = script_for(n)
    for i, page in enumerate(pages):
        page.evaluate("window.__console.captions = []")
        page.goto(f"{stack.api_url}/console#/calls/{sids[i % calls]}")
        page.wait_for_selector("#call-view:not([hidden])")
    time.sleep(1.0)  # the edge's subscriber read covers the new subscriptions
    load_before = os.getloadavg()[0]
    futures = []
    for sid in sids:
        caller = SimulatedCall(stack.caller_config(max_seconds=60, call_sid=sid), steps())
        futures.append(asyncio.run_coroutine_threadsafe(caller.run(), stack.loop.loop))
        time.sleep(0.02)  # calls arrive over a second, not in one instant
    for future in futures:
        future.result(120)
    time.sleep(1.0)
    total, to_edge, from_edge = [], [], []
    for page in pages:
        seen: dict[tuple[str, str, bool, str], int] = defaultdict(int)
        for shown in page.evaluate("window.__console.captions"):
            key = (shown["callSid"], shown["role"], shown["final"], shown["text"])
            index = seen[key]  # the n-th time this text shows is its n-th emission
            seen[key] += 1
            if shown["replayed"] or index >= len(emitted.at.get(key, ())):
                continue
            sent = emitted.at[key][index]
            total.append(shown["shownAt"] - sent)
            to_edge.append(shown["publishedAt"] - sent)
            from_edge.append(shown["shownAt"] - shown["publishedAt"])
    return {
        "calls": calls,
        "consoles": len(pages),
        "captions": len(total),
        "p50": percentile(total, 0.5),
        "p95": percentile(total, 0.95),
        "edge_p50": percentile(to_edge, 0.5),
        "page_p50": percentile(from_edge, 0.5),
        "page_p95": percentile(from_edge, 0.95),
        "load": (load_before, os.getloadavg()[0]),
    }


def first_paint(browser: Any, stack: LocalStack, runs: int = 5) -> dict[str, float]:
    paints, lists = [], []
    for _ in range(runs):
        context = browser.new_context(bypass_csp=True)
        page = context.new_page()
        page.goto(f"{stack.api_url}/console")
        page.wait_for_selector("#login-view:not([hidden])")
        fcp = page.evaluate(
            "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1"
        )
        paints.append(float(fcp))
        started = time.monotonic()
        page.fill("#key", stack.env["ADMIN_API_KEY"])
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#recent-calls tbody tr")
        lists.append((time.monotonic() - started) * 1000)
        context.close()
    return {"fcp_p50": statistics.median(paints), "list_p50": statistics.median(lists)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--consoles", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise SystemExit("bench-console needs Chromium: apt-get install chromium")
    emitted = Emitted()
    options = stack_options("bench-console", EDGE_IDLE_TIMEOUT_SECONDS="60")
    # moto in its own process: in AWS, DynamoDB is not in the edge's process (its handling of
    # the feed's reads and writes would otherwise take the GIL from the edge's event loop)
    options = dataclasses.replace(options, aws_own_process=True)
    with LocalStack(options) as stack, sync_playwright() as playwright:
        assert stack.vapi is not None
        stack.vapi.script = scripted()
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        pages = []
        for _ in range(args.consoles):
            page = browser.new_context(bypass_csp=True).new_page()
            sign_in(page, stack)
            pages.append(page)
        print(f"load average at start: {os.getloadavg()}  (nproc {os.cpu_count()})")
        results = [run_point(stack, pages, n, emitted) for n in (1, args.calls)]
        paint = first_paint(browser, stack)
        browser.close()
    print(
        "| calls | consoles | captions | vapi->page p50 | p95 | vapi->edge p50 | edge->page p50 "
        "| p95 | load avg (1 min) before/after |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['calls']} | {r['consoles']} | {r['captions']} | {r['p50']:.0f} ms | "
            f"{r['p95']:.0f} ms | {r['edge_p50']:.1f} ms | {r['page_p50']:.0f} ms | "
            f"{r['page_p95']:.0f} ms | {r['load'][0]:.2f} / {r['load'][1]:.2f} |"
        )
    base, loaded = results[0], results[-1]
    print(f"p95 at {loaded['calls']} calls / p95 at 1 call: {loaded['p95'] / base['p95']:.2f}x")
    print(
        f"first contentful paint of /console: {paint['fcp_p50']:.0f} ms (median of 5); "
        f"sign-in to the calls list rendered: {paint['list_p50']:.0f} ms"
    )


if __name__ == "__main__":
    main()
