"""``voicebridge call``: the caller's script from the flags, and a clear failure without an API."""

import httpx

from infra import cli
from infra.audio import synth_speech
from infra.caller import Dtmf, Hangup, Pause, Say, WaitForSilence, WaitForSpeech
from infra.caller.script import BACKCHANNEL_MS
from infra.cli import conversation, main
from infra.vapi_emulator.assistant import ACK_MAX_MS


def test_conversation_with_barge_in_and_dtmf():
    audio = synth_speech(0.5)
    steps = conversation(audio, turns=2, barge_in_after=0.8, dtmf="5")
    kinds = [type(step) for step in steps]
    assert kinds == [
        WaitForSilence,
        Say,
        Dtmf,
        WaitForSpeech,
        WaitForSilence,  # turn 1
        Say,
        WaitForSpeech,
        Pause,
        Say,
        WaitForSpeech,
        WaitForSilence,  # turn 2 + barge-in
        Hangup,
    ]
    assert steps[7].ms == 800
    assert steps[8].barge_in


def test_backchannel_is_a_short_mm_hmm_during_the_last_reply_not_a_barge_in():
    steps = conversation(synth_speech(0.5), backchannel_after=1.2)
    assert [type(s) for s in steps] == [
        WaitForSilence,
        Say,
        WaitForSpeech,
        Pause,
        Say,
        WaitForSilence,
        Hangup,
    ]
    assert steps[3].ms == 1200
    assert steps[5].silence_ms > 2000  # the edge's pause while Vapi decides is not the end
    mm_hmm = steps[4]
    assert not mm_hmm.barge_in
    assert mm_hmm.audio.size == 8 * BACKCHANNEL_MS
    assert BACKCHANNEL_MS < ACK_MAX_MS  # the emulated Vapi hears it as an acknowledgement


def test_backchannel_after_is_a_cli_option(monkeypatch):
    seen = {}

    async def fake_run_call(config, steps):
        seen["steps"] = steps
        raise httpx.ConnectError("no")

    monkeypatch.setattr(cli, "run_call", fake_run_call)
    argv = ["call", "--api-url", "http://x", "--auth-token", "t", "--account-sid", "AC1"]
    assert main([*argv, "--backchannel-after", "0.5"]) == 2
    assert any(isinstance(s, Pause) and s.ms == 500 for s in seen["steps"])


def test_hangup_mid_reply_ends_while_the_assistant_talks():
    steps = conversation(synth_speech(0.5), hangup_mid_reply=True)
    assert [type(s) for s in steps[-4:]] == [Say, WaitForSpeech, Pause, Hangup]


def test_unreachable_api_is_one_line_and_status_2(capsys):
    code = main(
        [
            "call",
            "--api-url",
            "http://127.0.0.1:9",
            "--auth-token",
            "t",
            "--account-sid",
            "AC1",
            "--synth",
            "0.2",
        ]
    )
    assert code == 2
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def _call_with_audio(path):
    return main(
        [
            "call",
            "--api-url",
            "http://127.0.0.1:9",
            "--auth-token",
            "t",
            "--account-sid",
            "AC1",
            "--audio",
            str(path),
        ]
    )


def test_a_missing_or_unusable_wav_is_one_line_and_status_1(tmp_path, capsys):
    not_wav = tmp_path / "notes.wav"
    not_wav.write_text("not audio")
    for path, message in [
        (tmp_path / "missing.wav", "no such file"),
        (not_wav, "not a usable WAV"),
        (tmp_path, "Is a directory"),
    ]:
        assert _call_with_audio(path) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"voicebridge call: --audio {path}: {message}"), err
        assert len(err.strip().splitlines()) == 1
