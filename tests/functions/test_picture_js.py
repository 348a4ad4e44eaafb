"""picture.js in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

No browser download and no socket: the harness and the module are served to the page by a
Playwright route from the repository's files. Without Chromium (or Playwright) every test here
is skipped with a reason saying so (``-ra`` prints it). A failing test leaves a screenshot in
``PICTURE_SCREENSHOTS`` (default: the test's tmp dir) and says where.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "functions" / "console" / "static" / "picture.js"
HARNESS = Path(__file__).with_name("picture_harness.html")
ORIGIN = "http://picture.test"
WIDTH = 960
LEFT, RIGHT = 74, 12  # picture.js LAYOUT: the plot spans [LEFT, WIDTH - RIGHT]

KNOWN: dict[str, Any] = {  # a 20 s call with every kind of mark, times in ms
    "version": 1,
    "startedAt": 1_800_000_000_000,
    "durationMs": 20_000,
    "bucketMs": 100,
    "levels": {
        "caller": [-99] * 20 + [-20] * 30 + [-99] * 150,
        "assistant": [-99] * 60 + [-25] * 50 + [-99] * 90,
    },
    "turns": {
        "caller": [[2000, 5000], [12000, 13000]],
        "assistant": [[6000, 11000], [14000, 18000]],
    },
    "vapiSpeech": [[2100, 5100], [12100, 13100]],
    "pauses": [{"fromMs": 12100, "toMs": 12600, "source": "speech-update", "outcome": "cleared"}],
    "interruptions": [{"at": 12600, "cleared": True}],
    "clears": [{"at": 12600, "droppedMs": 2300}],
    "replies": [{"at": 6000, "latencyMs": 700}, {"at": 14000, "latencyMs": 1800}],
    "firstAudio": {"at": 900, "latencyMs": 900},
    "dropped": 0,
}


def _chromium() -> str | None:
    found = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    return found if found and Path(found).exists() else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    if executable is None:
        pytest.skip("BROWSER TESTS SKIPPED: no Chromium (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="BROWSER TESTS SKIPPED: Playwright is not installed"
    )
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


def _serve(route: Any) -> None:
    files = {"/harness.html": (HARNESS, "text/html"), "/picture.js": (MODULE, "text/javascript")}
    path = route.request.url.removeprefix(ORIGIN)
    if path not in files:
        route.fulfill(status=404, body="not found")
        return
    source, kind = files[path]
    route.fulfill(status=200, body=source.read_bytes(), content_type=kind)


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 400})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route(f"{ORIGIN}/**", _serve)
    page.goto(f"{ORIGIN}/harness.html")
    page.wait_for_function("window.harnessReady === true")
    page.errors = errors
    yield page
    context.close()


@contextlib.contextmanager
def screenshot_on_failure(page: Any, name: str, tmp_path: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        folder = Path(os.environ.get("PICTURE_SCREENSHOTS") or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        shot = folder / f"{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failing picture: {shot}")
        raise


def draw(page: Any, picture: Any) -> None:
    page.evaluate(
        "([p, width]) => window.picture.drawCallPicture("
        "document.getElementById('picture'), p, {width})",
        [picture, WIDTH],
    )


def count(page: Any, selector: str) -> int:
    return int(page.locator(f"#picture svg {selector}").count())


def x_of(ms: float, duration: float) -> float:
    return LEFT + ms / duration * (WIDTH - LEFT - RIGHT)


def test_a_known_picture_draws_every_turn_clear_and_latency(page, tmp_path):
    draw(page, KNOWN)
    with screenshot_on_failure(page, "known", tmp_path):
        assert page.errors == []
        assert count(page, "rect.turn.caller") == 2
        assert count(page, "rect.turn.assistant") == 2
        assert count(page, "rect.vapi-speech") == 2
        assert count(page, "rect.pause") == 1
        assert count(page, "path.interruption") == 1
        assert count(page, "g.clear") == 1
        assert count(page, "g.latency") == 2
        assert count(page, "g.first-audio") == 1
        labels = page.locator("#picture svg g.latency text").all_text_contents()
        assert labels == ["700 ms", "1800 ms"]
        assert "2300 ms" in page.locator("#picture svg g.clear text").text_content()
        # on one time axis: a turn starts where its time says
        second = page.locator("#picture svg rect.turn.assistant").nth(1)
        assert float(second.get_attribute("x")) == pytest.approx(x_of(14_000, 20_000), abs=0.5)
        bracket = page.locator("#picture svg g.latency").nth(0).locator("line").first
        assert float(bracket.get_attribute("x1")) == pytest.approx(x_of(5300, 20_000), abs=0.5)
        # levels: an envelope per leg, loud where the audio was
        for leg in ("caller", "assistant"):
            assert page.locator(f"#picture svg path.level.{leg}").get_attribute("d")
        d = page.locator("#picture svg path.level.caller").get_attribute("d")
        points = [tuple(map(float, p.split(","))) for p in re.findall(r"[\d.]+,[\d.]+", d)]
        mid = points[0][1]
        loud = [x for x, y in points if y < mid - 1]  # above the centre line: sound
        assert min(loud) == pytest.approx(x_of(2000, 20_000), abs=1)
        assert max(loud) == pytest.approx(x_of(5000, 20_000), abs=1)
        label = page.locator("#picture svg").get_attribute("aria-label")
        assert "2 replies" in label
        assert "median latency 1800 ms" in label


SAMPLE = """async (points) => {
  // the drawing as the browser renders it, onto a canvas whose pixels can be read
  const svg = document.querySelector("#picture svg");
  const image = new Image();
  image.src = "data:image/svg+xml;charset=utf-8," +
    encodeURIComponent(new XMLSerializer().serializeToString(svg));
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = svg.width.baseVal.value;
  canvas.height = svg.height.baseVal.value;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  return points.map(([x, y]) => Array.from(context.getImageData(x, y, 1, 1).data));
}"""


def test_the_drawing_is_the_pixels_it_says(page, tmp_path):
    """Sample rendered pixels: the clear's red line, the caller's blue envelope, and nothing
    where the caller was silent."""
    draw(page, KNOWN)
    with screenshot_on_failure(page, "pixels", tmp_path):
        clear = page.locator("#picture svg g.clear line")
        lane_y = float(clear.get_attribute("y1")) + 20
        level = page.locator("#picture svg path.level.caller")
        mid = float(page.locator("#picture svg g.lane.caller rect").first.get_attribute("y")) + 28
        points = [
            [int(x_of(12_600, 20_000)), round(lane_y)],  # the clear (2 px wide)
            [round(x_of(3500, 20_000)), round(mid)],  # the caller talking
            [round(x_of(9000, 20_000)), round(mid)],  # the caller silent
        ]
        red, talking, silent = page.evaluate(SAMPLE, points)
        assert level.get_attribute("fill") == "#2f6fd6"
        assert red[0] > 150
        assert max(red[1], red[2]) < 90
        assert talking[2] > talking[0] + 60  # blue
        assert abs(silent[0] - silent[2]) < 20  # the lane's grey, no envelope


def test_live_deltas_merge_into_the_same_picture(page, tmp_path):
    """The live feed sends deltas (open spans again as they grow); merged they draw as the
    stored picture does."""
    from media_edge.protocol.vapi import VapiSpeechUpdate, VapiUserInterrupted
    from tests.media_edge.test_call_recording import REPLY_A, Sim

    sim = Sim(vad=True)
    sim.run(300, caller=0xFF)
    sim.run(800, caller=0x05)
    sim.run(500, caller=0xFF)
    sim.say(REPLY_A, 2000)
    sim.run(700, caller=0xFF)
    sim.feed(VapiSpeechUpdate("user", "started"))
    sim.run(300, caller=0x05)
    sim.feed(VapiUserInterrupted())
    sim.run(1500, caller=0xFF)
    sim.hang_up()
    merged = page.evaluate(
        "(deltas) => deltas.reduce((p, d) => window.picture.mergePicture(p, d), null)",
        json.loads(json.dumps(sim.published)),
    )
    stored = sim.picture
    with screenshot_on_failure(page, "live", tmp_path):
        assert merged["levels"] == stored["levels"]
        assert merged["turns"] == stored["turns"]
        assert merged["clears"] == stored["clears"]
        assert merged["replies"] == stored["replies"]
        assert merged["interruptions"] == stored["interruptions"]
        assert [p["fromMs"] for p in merged["pauses"]] == [p["fromMs"] for p in stored["pauses"]]
        draw(page, merged)
        live = {s: count(page, s) for s in ("rect.turn", "g.clear", "g.latency", "rect.pause")}
        draw(page, stored)
        assert live == {s: count(page, s) for s in live}
        assert live["g.clear"] == 1
        assert page.errors == []


def test_nothing_in_the_data_becomes_markup(page, tmp_path):
    hostile = json.loads(json.dumps(KNOWN))
    hostile["pauses"][0]["source"] = "<img src=x onerror=window.owned=1>"
    draw(page, hostile)
    with screenshot_on_failure(page, "hostile", tmp_path):
        assert count(page, "img") == 0
        assert page.evaluate("window.owned") is None
        title = page.locator("#picture svg rect.pause title").text_content()
        assert "<img" in title  # shown as text


@pytest.mark.parametrize(
    "picture",
    [None, {}, {"levels": {"caller": [1, "x"]}, "turns": {"caller": [[5, None]]}, "replies": [{}]}],
)
def test_missing_or_partial_data_draws_without_errors(page, tmp_path, picture):
    draw(page, picture)
    with screenshot_on_failure(page, "partial", tmp_path):
        assert page.errors == []
        assert count(page, "") >= 1  # an axis at least
        assert page.locator("#picture svg").get_attribute("width") == str(WIDTH)
