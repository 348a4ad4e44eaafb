"""``voicebridge`` command line: ``call`` places a simulated call; ``setup`` points a Twilio
number and a Vapi assistant at a deployed stack; ``numbers`` lists numbers and binds them;
``dial``, ``campaign`` and ``dnc`` drive outbound calling (``infra/cli_outbound.py``).

Against the local stack, ``make run`` prints the exact ``call`` command with this run's URLs and
keys; against a deployment, pass its API URL and your Twilio credentials (the caller signs
requests like Twilio, so the API cannot tell the difference).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import wave
from pathlib import Path
from typing import Any

import httpx

from infra import cli_outbound
from infra.audio import load_wav, sample, synth_speech
from infra.caller import (
    CallerConfig,
    Dtmf,
    Hangup,
    Pause,
    Say,
    Step,
    WaitForSilence,
    WaitForSpeech,
    run_call,
)
from infra.caller import report as render
from infra.caller.script import backchannel
from infra.setup import SetupError
from infra.setup import add_parsers as add_setup_parsers
from infra.setup import main as run_setup


def conversation(
    audio,
    *,
    turns: int = 1,
    barge_in_after: float | None = None,
    hangup_mid_reply: bool = False,
    dtmf: str | None = None,
    backchannel_after: float | None = None,
) -> list[Step]:
    """Listen to the greeting, speak ``turns`` times (hearing each reply), optionally say
    "mm-hmm" ``backchannel_after`` seconds into the last reply and/or barge in
    ``barge_in_after`` seconds into it (after the "mm-hmm", if both), then hang up (mid-reply
    if asked)."""
    steps: list[Step] = [WaitForSilence()]
    for turn in range(turns):
        steps.append(Say(audio, f"caller speaks (turn {turn + 1})"))
        if dtmf and turn == 0:
            steps.append(Dtmf(dtmf))
        steps.append(WaitForSpeech())
        last = turn == turns - 1
        if backchannel_after is not None and last:
            steps += [Pause(int(backchannel_after * 1000)), backchannel()]
        if barge_in_after is not None and last:
            steps += [
                Pause(int(barge_in_after * 1000)),
                Say(audio, "caller barges in", barge_in=True),
                WaitForSpeech(),
            ]
        if hangup_mid_reply and last:
            return [*steps, Pause(400), Hangup()]
        if backchannel_after is not None and barge_in_after is None and last:
            # After "mm-hmm" the edge pauses playout until Vapi's verdict (2 s at most): that
            # silence is not the end of the reply.
            steps.append(WaitForSilence(silence_ms=2500))
        else:
            steps.append(WaitForSilence())
    return [*steps, Hangup()]


def _call_parser(sub: argparse._SubParsersAction) -> None:
    call = sub.add_parser("call", help="place a simulated Twilio call", description=__doc__)
    call.add_argument("--api-url", required=True, help="the API as Twilio sees it")
    call.add_argument("--auth-token", required=True, help="Twilio auth token (signs requests)")
    call.add_argument("--account-sid", required=True, help="Twilio account SID (AC...)")
    call.add_argument("--twilio-api", help="local Twilio REST emulator URL (hang-ups, transfers)")
    call.add_argument("--from", dest="from_number", default="+15550100001")
    call.add_argument("--to", dest="to_number", default="+15550100002")
    voice = call.add_mutually_exclusive_group()
    voice.add_argument("--audio", type=Path, help="caller speech WAV (mono 16-bit)")
    voice.add_argument("--synth", type=float, metavar="S", help="generated speech-like audio, S s")
    call.add_argument("--turns", type=int, default=1, help="caller utterances (default 1)")
    call.add_argument("--barge-in-after", type=float, help="talk over the last reply after S s")
    call.add_argument(
        "--backchannel-after", type=float, metavar="S", help='say "mm-hmm" S s into the last reply'
    )
    call.add_argument("--hangup-mid-reply", action="store_true", help="hang up while it talks")
    call.add_argument("--dtmf", help="press this key after the first utterance")
    call.add_argument(
        "--status-order", choices=["inorder", "shuffled", "duplicated"], default="inorder"
    )
    call.add_argument("--heard", type=Path, help="write what the caller heard to this WAV")
    call.add_argument("--max-seconds", type=float, default=60.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voicebridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _call_parser(sub)
    add_setup_parsers(sub)
    cli_outbound.add_parsers(sub)  # dial, campaign, dnc
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is not None:
        return cli_outbound.run(args)
    try:
        if args.command in ("setup", "numbers"):
            return run_setup(args)
        return _call(args)
    except (SetupError, AudioFileError) as exc:
        print(f"voicebridge {args.command}: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"voicebridge {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


class AudioFileError(Exception):
    """The caller's WAV cannot be used (message: one line naming the file)."""


def _caller_audio(args: argparse.Namespace) -> Any:
    if args.synth:
        return synth_speech(args.synth, seed=1)
    if not args.audio:
        return sample("caller_utterance")
    try:
        return load_wav(args.audio)
    except FileNotFoundError:
        raise AudioFileError(f"--audio {args.audio}: no such file") from None
    except OSError as exc:
        raise AudioFileError(f"--audio {args.audio}: {exc.strerror}") from None
    except (ValueError, EOFError, wave.Error) as exc:
        raise AudioFileError(f"--audio {args.audio}: not a usable WAV ({exc})") from None


def _call(args: argparse.Namespace) -> int:
    audio = _caller_audio(args)
    config = CallerConfig(
        api_url=args.api_url.rstrip("/"),
        auth_token=args.auth_token,
        account_sid=args.account_sid,
        from_number=args.from_number,
        to_number=args.to_number,
        twilio_emulator_url=args.twilio_api,
        status_order=args.status_order,
        max_seconds=args.max_seconds,
        heard_wav=args.heard,
    )
    steps = conversation(
        audio,
        turns=args.turns,
        barge_in_after=args.barge_in_after,
        hangup_mid_reply=args.hangup_mid_reply,
        dtmf=args.dtmf,
        backchannel_after=args.backchannel_after,
    )
    try:
        report = asyncio.run(run_call(config, steps))
    except httpx.HTTPError as exc:
        print(f"voicebridge call: cannot reach {config.api_url}: {exc}", file=sys.stderr)
        return 2
    print(render.timeline(report))
    print()
    print(render.latency_table(report))
    print()
    print(render.summary(report))
    if args.heard:
        print(f"what the caller heard: {args.heard}")
    return 1 if report.protocol_errors else 0


if __name__ == "__main__":
    sys.exit(main())
