"""The console as a supervisor uses it: sign in, watch a call's captions live, catch up late,
step in. Every test drives headless Chromium against the whole local stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.caller import Hangup, Pause, Say, WaitForSilence, WaitForSpeech
from infra.vapi_emulator import Script
from tests.console.conftest import place_call, sign_in
from tests.e2e.helpers import UTTERANCE, eventually

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
STATIC = Path(__file__).resolve().parents[2] / "functions" / "console" / "static"
# What the emulated transcriber "hears": markup, entities, quotes and non-ASCII, which the page
# must show exactly as Vapi sent them (as text, never as HTML).
HEARD = ('Is my order <b>#42</b> & "the rest" shipped? Ça va 🙂', "Thanks, that's all.")


def finals(page: Any) -> list[tuple[str, str]]:
    shown = page.evaluate("window.__console.captions")
    return [(c["role"], c["text"]) for c in shown if c["final"]]


def captions_on_page(page: Any) -> list[tuple[str, str, bool]]:
    return page.evaluate(
        """() => [...document.querySelectorAll('#captions li')].map(li => [
            li.classList.contains('user') ? 'user' : 'assistant',
            li.querySelector('.text').textContent,
            li.classList.contains('partial')])"""
    )


def open_call(page: Any, call_sid: str) -> None:
    """Click the call in the live list as soon as it shows up there."""
    row = page.wait_for_selector(f'#live-calls tr[data-call-sid="{call_sid}"]')
    row.click()
    page.wait_for_selector("#call-view:not([hidden])")


def conversation(turns: int = 1, tail_s: float = 0.5) -> list[Any]:
    steps: list[Any] = [WaitForSilence(silence_ms=700)]
    for _ in range(turns):
        steps += [Say(UTTERANCE), WaitForSpeech(), WaitForSilence(silence_ms=500)]
    return [*steps, Pause(int(tail_s * 1000)), Hangup()]


def test_sign_in_refuses_a_wrong_key_clearly_then_opens_with_the_right_one(
    console_stack: Any, page: Any
) -> None:
    stack = console_stack
    page.goto(f"{stack.api_url}/console")
    page.fill("#key", "not-the-key")
    page.click("#login-form button[type=submit]")
    page.wait_for_function("document.querySelector('#login-error').textContent !== ''")
    assert page.text_content("#login-error") == "That is not the admin key."
    assert page.is_hidden("#calls-view")
    assert page.get_attribute("#key", "type") == "password"
    sign_in(page, stack)
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "vb_console"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert stack.env["ADMIN_API_KEY"] not in page.url
    assert stack.env["ADMIN_API_KEY"] not in cookie["value"]
    page.click("#logout")
    page.wait_for_selector("#login-view:not([hidden])")
    assert page.context.cookies() == []
    # the signed-out session is dead even for a copy of its cookie
    answer = httpx.get(
        f"{stack.api_url}/calls", cookies={"vb_console": cookie["value"]}, timeout=10
    )
    assert answer.status_code == 401


def test_live_captions_arrive_in_order_verbatim_partials_replaced(
    console_stack: Any, page: Any
) -> None:
    stack = console_stack
    stack.vapi.script = Script(
        greeting_ms=1000, think_ms=100, end_of_turn_ms=300, reply_max_ms=1000, transcripts=HEARD
    )
    sign_in(page, stack)
    call_sid, done = place_call(stack, conversation(turns=2))
    open_call(page, call_sid)
    greeting = "Hello, thanks for calling. How can I help?"
    expected = [
        ("assistant", greeting),
        ("user", HEARD[0]),
        ("assistant", f"You said: {HEARD[0]}"),
        ("user", HEARD[1]),
        ("assistant", f"You said: {HEARD[1]}"),
    ]
    page.wait_for_function(
        "n => window.__console.captions.filter(c => c.final).length >= n", arg=len(expected)
    )
    done.result(30)
    assert finals(page) == expected
    assert [(role, text) for role, text, _ in captions_on_page(page)] == expected
    assert not any(partial for *_, partial in captions_on_page(page))
    assert page.query_selector("#captions b") is None  # the caller's "<b>" stayed text
    # The caller's words grew as partials before each final replaced them, in seq order.
    shown = page.evaluate("window.__console.captions")
    user = [c["text"] for c in shown if c["role"] == "user"]
    first = user[: user.index(HEARD[0]) + 1]
    assert len(first) >= 2
    assert all(HEARD[0].startswith(text) for text in first)
    seqs = [c["seq"] for c in shown]
    assert seqs == sorted(seqs)
    assert page.text_content("#events").count("reply after") == 2


def test_a_console_opened_mid_call_gets_everything_so_far_then_the_rest_live(
    console_stack: Any, browser: Any, page: Any
) -> None:
    stack = console_stack
    stack.vapi.script = Script(
        greeting_ms=1000, think_ms=100, end_of_turn_ms=300, reply_max_ms=1000, transcripts=HEARD
    )
    sign_in(page, stack)
    steps = [
        WaitForSilence(silence_ms=700),
        Say(UTTERANCE),
        WaitForSpeech(),
        WaitForSilence(silence_ms=500),
        Pause(2500),  # the late console opens here
        Say(UTTERANCE),
        WaitForSpeech(),
        WaitForSilence(silence_ms=500),
        Hangup(),
    ]
    call_sid, done = place_call(stack, steps)
    open_call(page, call_sid)
    page.wait_for_function("window.__console.captions.filter(c => c.final).length >= 3")
    late_context = browser.new_context(bypass_csp=True)
    late = late_context.new_page()
    try:
        sign_in(late, stack)
        late.goto(f"{stack.api_url}/console#/calls/{call_sid}")
        late.wait_for_function("window.__console.captions.filter(c => c.final).length >= 3")
        assert finals(late)[:3] == finals(page)[:3]  # caught up from the store
        late.wait_for_function("window.__console.captions.filter(c => c.final).length >= 5")
        done.result(30)
        assert finals(late) == finals(page)
        # and the rest came live: partials of the second utterance, not only replayed finals
        second = [c for c in late.evaluate("window.__console.captions") if c["role"] == "user"][1:]
        assert any(not c["final"] for c in second)
    finally:
        late_context.close()


def _control_bodies(stack: Any, vapi_call_id: str) -> list[dict[str, Any]]:
    return [
        r.body
        for r in list(stack.vapi.requests)
        if r.method == "POST" and r.path == f"/{vapi_call_id}/control"
    ]


def _vapi_call_id(stack: Any, call_sid: str) -> str:
    for call_id, emulated in list(stack.vapi.calls.items()):
        metadata = (emulated.record.get("assistantOverrides") or {}).get("metadata") or {}
        if metadata.get("callSid") == call_sid:
            return call_id
    raise AssertionError("no Vapi call for this CallSid")


def _result(page: Any) -> tuple[str, str]:
    page.wait_for_function(
        "['ok', 'failed'].includes(document.querySelector('#control-result').className)"
    )
    text = page.text_content("#control-result")
    kind = page.get_attribute("#control-result", "class")
    page.evaluate("document.querySelector('#control-result').className = ''")
    return kind, text


def test_each_step_in_reaches_the_emulated_vapi_and_is_recorded(
    console_stack: Any, page: Any
) -> None:
    stack = console_stack
    sign_in(page, stack)
    call_sid, done = place_call(stack, [WaitForSilence(silence_ms=700), Pause(30_000), Hangup()])
    open_call(page, call_sid)
    eventually(lambda: _vapi_call_id(stack, call_sid) is not None, what="the Vapi call")
    vapi_id = _vapi_call_id(stack, call_sid)
    page.fill("#say-text", "One moment <please>, I'm checking.")
    page.click("#say-form button")
    assert _result(page)[0] == "ok"
    page.fill("#context-text", "The caller is a premium customer.")
    page.click("#context-form button")
    assert _result(page)[0] == "ok"
    page.click("#mute")
    assert _result(page)[0] == "ok"
    page.click("#unmute")
    assert _result(page)[0] == "ok"
    page.fill("#transfer-to", "the-moon")
    page.click("#transfer-form button")
    kind, text = _result(page)
    assert kind == "failed"
    assert "not an allowed destination" in text
    assert _control_bodies(stack, vapi_id) == [
        {
            "type": "say",
            "content": "One moment <please>, I'm checking.",
            "endCallAfterSpoken": False,
        },
        {
            "type": "add-message",
            "message": {"role": "system", "content": "The caller is a premium customer."},
            "triggerResponseEnabled": False,
        },
        {"type": "control", "control": "mute-assistant"},
        {"type": "control", "control": "unmute-assistant"},
    ]
    # the assistant said the line: its caption shows it verbatim
    page.wait_for_function(
        "window.__console.captions.some(c => c.final && c.text.startsWith('One moment <please>'))"
    )
    page.fill("#transfer-to", "sales")
    page.click("#transfer-form button")
    assert _result(page)[0] == "ok"
    twilio_call = stack.twilio.calls[call_sid]
    (update,) = twilio_call.updates
    assert "<Dial>+15550100009</Dial>" in update["Twiml"]
    done.result(30)  # a redirected call ends its stream, as on Twilio
    record = _record(stack, call_sid, lambda r: len(_steps(r)) == 6)
    steps = _steps(record)
    assert [(s["action"], s["ok"]) for s in steps] == [
        ("say", True),
        ("add-context", True),
        ("mute-assistant", True),
        ("unmute-assistant", True),
        ("transfer", False),
        ("transfer", True),
    ]
    assert all(s["by"].startswith("console:") for s in steps)
    assert steps[0]["text"] == "One moment <please>, I'm checking."


def test_ending_a_call_from_the_console_ends_it_through_vapi(console_stack: Any, page: Any) -> None:
    stack = console_stack
    sign_in(page, stack)
    call_sid, done = place_call(stack, [WaitForSilence(silence_ms=700), Pause(30_000), Hangup()])
    open_call(page, call_sid)
    eventually(lambda: _vapi_call_id(stack, call_sid) is not None, what="the Vapi call")
    page.wait_for_function("document.querySelector('#call-state').textContent === 'live'")
    page.click("#end-call")
    assert _result(page)[0] == "ok"
    report = done.result(15)
    assert report.ended_by != "caller-hangup"  # the call ended before the caller's 30 s
    page.wait_for_function("document.querySelector('#call-state').textContent.startsWith('ended')")
    vapi_id = _vapi_call_id(stack, call_sid)
    assert _control_bodies(stack, vapi_id)[-1] == {"type": "end-call"}
    page.click("#say-form button")  # an action on an ended call is a clear failure
    page.fill("#say-text", "hello?")
    page.click("#say-form button")
    kind, _text = _result(page)
    assert kind == "failed"


def _record(stack: Any, call_sid: str, predicate: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def check() -> bool:
        status, body = stack.get_call(call_sid)
        found["body"] = body
        return status == 200 and predicate(body)

    eventually(check, 15, "call record")
    return found["body"]


def _steps(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in record.get("timeline", []) if e["kind"] == "console.control"]


@pytest.mark.skipif(
    not (STATIC / "picture.js").exists(),
    reason="awaits record12's merge: picture.js, the call record's recording and picture",
)
def test_the_recording_plays_and_the_picture_renders(console_stack: Any, page: Any) -> None:
    stack = console_stack
    sign_in(page, stack)
    call_sid, done = place_call(stack, conversation(turns=1))
    open_call(page, call_sid)
    done.result(30)
    _record(stack, call_sid, lambda r: bool(r.get("recording")) and bool(r.get("picture")))
    page.goto(f"{stack.api_url}/console#/")
    page.goto(f"{stack.api_url}/console#/calls/{call_sid}")
    audio = page.wait_for_selector("#recording audio")
    page.evaluate("document.querySelector('#recording audio').muted = true")
    page.evaluate("document.querySelector('#recording audio').play()")
    page.wait_for_function("document.querySelector('#recording audio').currentTime > 0.2")
    assert audio.evaluate("a => a.duration") > 1.0
    page.wait_for_function("document.querySelector('#picture').children.length > 0")
    assert page.query_selector("#picture canvas, #picture svg") is not None


def test_the_page_works_under_its_own_csp_and_loads_only_its_own_files(
    console_stack: Any, browser: Any
) -> None:
    stack = console_stack
    context = browser.new_context()  # the CSP enforced, as for a user
    page = context.new_page()
    requested: list[str] = []
    violations: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda m: violations.append(m.text) if "Security Policy" in m.text else 0)
    try:
        page.goto(f"{stack.api_url}/console")
        page.fill("#key", stack.env["ADMIN_API_KEY"])
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#feed-state.up")  # the socket to the gateway is allowed too
    finally:
        context.close()
    assert violations == []
    local = (stack.api_url, stack.env["CONSOLE_WS_URL"].replace("/live", ""))
    assert all(url.startswith(local) for url in requested), requested
    policy = httpx.get(f"{stack.api_url}/console", timeout=10).headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert json.dumps(policy).count("unsafe") == 0
