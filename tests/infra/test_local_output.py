"""``make run``'s console: one human line per call event, raw JSON only with --json, and the
friendly failures of ``python -m infra.local`` (busy ports, --help)."""

import json
import re
import signal
import subprocess
import sys

from infra.asgi import bind
from infra.local_output import LOG_LINES, METRIC_LINES, render
from tests.infra.test_local_main import free_ports, start_stack

CALL = "CAb3aa144b453e4d47bdff93217d596461"


def log(message, **fields):
    record = {"level": "INFO", "message": message, "timestamp": "2026-12-01 15:06:02,377+0000"}
    return json.dumps({**record, "service": "voicebridge-edge", "callSid": CALL, **fields})


def emf(**values):
    metrics = [{"Name": name, "Unit": "Milliseconds"} for name in values]
    directive = {"Namespace": "Voicebridge", "Dimensions": [["service"]], "Metrics": metrics}
    return json.dumps(
        {
            "_aws": {"Timestamp": 1796137562000, "CloudWatchMetrics": [directive]},
            "service": "voicebridge-edge",
            **values,
        }
    )


def test_each_call_event_becomes_one_readable_line():
    (line,) = render(
        "edge",
        log(
            "call ended", reason="twilio_stop", durationMs=17464, framesPlayed=368, framesCleared=21
        ),
    )
    assert line == (
        "15:06:02.377  CAb3aa144b…  ended          twilio_stop after 17.5 s; "
        "368 frames played, 21 cleared"
    )
    (connected,) = render("edge", log("vapi connected", vapiCallId="347e91e2-6bf6", heldMs=20))
    assert "Vapi connected" in connected
    assert "20 ms of caller audio held" in connected
    (speaking,) = render("edge", log("caller speaking"))
    assert speaking.endswith("caller         speaking (Vapi's speech-update)")
    (reply,) = render("edge", log("assistant replied", responseMs=840))
    assert reply.endswith("reply          assistant replied 840 ms after the caller stopped")
    (resumed,) = render("edge", log("barge-in: playout resumed", why="speech-update", pausedMs=420))
    assert resumed.endswith("no interruption: playout resumed after 420 ms")
    assert render("edge", emf(ResponseLatency=[840.4])) == []  # told once, by the log line


def test_noise_is_dropped_and_unknown_problems_are_kept():
    assert render("worker", log("event applied", outcome="ringing")) == []
    assert render("api", emf(WebhookLatency=[3.0])) == []
    assert render("api", log("some detail")) == []
    (warning,) = render("api", log("something odd", level="WARNING"))
    assert "WARNING" in warning
    assert "[api] something odd" in warning
    assert render("api", "Traceback (most recent call last):") == [
        "[api] Traceback (most recent call last):"
    ]


def test_the_tables_name_real_log_messages_and_metrics():
    from voicebridge import telemetry

    names = {getattr(telemetry, n) for n in dir(telemetry) if n.isupper()}
    assert set(METRIC_LINES) <= names
    sources = "".join(
        p.read_text()
        for p in __import__("pathlib").Path(__file__).resolve().parents[2].glob("*/**/*.py")
        if ".venv" not in p.parts and "tests" not in p.parts
    )
    missing = [m for m in LOG_LINES if f'"{m}"' not in sources]
    assert not missing, f"no code logs these messages any more: {missing}"


def test_make_run_prints_call_events_not_json():
    process, _, _, banner = start_stack(subprocess.PIPE)
    try:
        call = re.search(r"(\.venv/bin/voicebridge call .*)", banner).group(1)
        argv = [sys.executable, "-m", "infra.cli", *call.split()[1:]]
        argv = [a for a in argv if a not in ("--heard", "heard.wav")]
        subprocess.run(argv, capture_output=True, timeout=90, check=True)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert '"_aws"' not in out
    assert not re.search(r"^\[\w+\] \{", out, re.M), out
    for label in ("call in", "stream", "Vapi connected", "caller", "reply", "barge-in", "ended"):
        assert re.search(rf"^\S+  CA\w+…\s+{label}", out, re.M), (label, out)


def test_json_shows_the_raw_lines(capsys):
    from infra.runtime import StdoutTap

    line = log("call ended", reason="twilio_stop", durationMs=1)
    for render_with, expected in ((None, f"[edge] {line}"), (render, "ended")):
        tap = StdoutTap(quiet=False, render=render_with)
        tap.install()
        try:
            print(line)
        finally:
            tap.uninstall()
        assert expected in capsys.readouterr().out
    assert (
        "--json"
        in subprocess.run(
            [sys.executable, "-m", "infra.local", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )


def test_a_busy_port_names_its_variable_in_one_line():
    holder = bind("127.0.0.1", 0)
    holder.listen(1)
    busy = holder.getsockname()[1]
    (free,) = free_ports(1)
    try:
        for env in (
            {"API_PORT": str(busy), "EDGE_PORT": str(free)},
            {"API_PORT": str(free), "EDGE_PORT": str(busy)},
        ):
            variable = next(k for k, v in env.items() if v == str(busy))
            result = subprocess.run(
                [sys.executable, "-m", "infra.local"],
                env={**_base_env(), **env},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 1
            err = result.stderr.strip()
            assert len(err.splitlines()) == 1, err
            assert f"{variable}={busy}" in err
            assert "in use" in err
    finally:
        holder.close()


def _base_env():
    import os

    from voicebridge.config import ENV_NAMES

    return {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
