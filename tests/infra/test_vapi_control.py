"""The Vapi emulator's live control (``call.monitor.controlUrl``) and its transcripts: partials
that grow word by word, then the final (``#/components/schemas/ClientMessageTranscript``)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect

from infra.vapi_emulator.assistant import Script, ScriptedCall, SendEvent
from tests.infra.test_vapi_assistant import Clock, make, speech_frames
from tests.infra.test_vapi_emulator import AUTH, emulator, make_assistant, make_call  # noqa: F401


def transcripts(actions, role):
    return [
        (a.message["transcriptType"], a.message["transcript"])
        for a in actions
        if isinstance(a, SendEvent) and a.message["type"] == "transcript"
        if a.message["role"] == role
    ]


def test_the_callers_words_grow_as_partials_then_the_final_replaces_them():
    call = make(Script(think_ms=100, end_of_turn_ms=200, transcripts=("Yes, my order #42!",)))
    clock = Clock(call)
    call.start(0.0)
    clock.silence(1500)  # the greeting
    clock.actions.clear()
    clock.feed(speech_frames(1.5))
    clock.silence(300)
    heard = transcripts(clock.actions, "user")
    assert heard[-1] == ("final", "Yes, my order #42!")  # as the transcriber writes it
    partials = [text for kind, text in heard if kind == "partial"]
    assert partials == [
        "Yes,",
        "Yes, my",
        "Yes, my order",
        "Yes, my order #42!",
    ]  # a word more each


def test_the_assistants_words_follow_its_audio_and_an_interruption_cuts_the_final():
    call = ScriptedCall(
        {"id": "c"},
        {"firstMessage": "one two three four five six"},
        ("mulaw", 8000),
        Script(greeting_ms=1200),
        now_ms=0.0,
        wall_ms=1e12,
    )
    actions = call.start(0.0)
    now = 0.0
    while now < 600:
        now += 20
        actions += call.tick(now)
    actions += call.text(json.dumps({"type": "control", "control": "mute-assistant"}), now)
    said = transcripts(actions, "assistant")
    assert said[:2] == [("partial", "one"), ("partial", "one two")]
    assert said[-1] == ("final", "one two three four five six")  # a mute is not a barge-in


async def test_the_control_url_is_served_as_strictly_as_the_schema(emulator):  # noqa: F811
    async with httpx.AsyncClient() as client:
        assistant = await make_assistant(client, emulator)
        created = (await make_call(client, emulator, assistant)).json()
        control = created["monitor"]["controlUrl"]
        assert control.endswith(f"/{created['id']}/control")
        off = await make_call(
            client,
            emulator,
            assistant,
            assistantOverrides={"monitorPlan": {"controlEnabled": False}},
        )
        assert "monitor" not in off.json()
        bad_plan = await make_call(
            client, emulator, assistant, assistantOverrides={"monitorPlan": {"control": True}}
        )
        assert bad_plan.status_code == 400
        say = {"type": "say", "content": "Please hold."}
        assert (await client.post(control, json=say)).status_code == 409  # not connected yet
        for invalid in (
            {"type": "hangup"},
            {"type": "say"},
            {"type": "control", "control": "mute-everyone"},
            {"type": "add-message", "message": {"role": "boss", "content": "x"}},
            {"type": "transfer", "destination": {"type": "number", "number": "555"}},
            {"message": say},  # the docs send the message itself, not wrapped
        ):
            answer = await client.post(control, json=invalid)
            assert answer.status_code == 400, invalid
        unknown = control.replace(created["id"], "0" * 36)
        assert (await client.post(unknown, json=say)).status_code == 404
        url = created["transport"]["websocketCallUrl"]
        async with connect(url, additional_headers=AUTH) as socket:
            await asyncio.sleep(1.2)  # the greeting ends
            assert (await client.post(control, json=say)).status_code == 200
            heard = []
            async with asyncio.timeout(5):
                while not any(t == ("final", "Please hold.") for t in heard):
                    message = await socket.recv()
                    if isinstance(message, str):
                        event = json.loads(message)
                        if event["type"] == "transcript" and event["role"] == "assistant":
                            heard.append((event["transcriptType"], event["transcript"]))
            ended = await client.post(control, json={"type": "end-call"})
            assert ended.status_code == 200
        await asyncio.sleep(0.2)
        assert (await client.post(control, json=say)).status_code == 404  # the call has ended
    assert emulator.requests[-1].path.endswith("/control")


@pytest.mark.parametrize("interrupt", [False, True])
def test_say_waits_for_the_current_speech_unless_told_to_interrupt(interrupt):
    call = make(Script(greeting_ms=2000))
    actions = call.start(0.0)
    message = {"type": "say", "content": "Hold on.", "interruptAssistantEnabled": interrupt}
    actions = call.text(json.dumps(message), 500.0)
    said = transcripts(actions, "assistant")
    if interrupt:
        assert said == [("final", "Hello")]  # the greeting ends now, the line starts
    else:
        assert said == []  # queued behind the greeting
        clock = Clock(call)
        clock.now = 500.0
        clock.silence(4000)
        assert ("final", "Hold on.") in transcripts(clock.actions, "assistant")
