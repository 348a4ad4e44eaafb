"""``python -m media_edge`` as a process: config errors, serving, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.frames import CloseCode

from tests.media_edge.fakes import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUBLIC_URL,
    TOKEN_SECRET,
    VAPI_KEY,
    FakeVapi,
    TwilioCaller,
    sig_headers,
)

WAIT_S = 15.0
AWS: dict[str, str] = {}  # the embedded AWS every edge process here claims its streams in


@pytest.fixture(autouse=True)
def _claims_table(edge_aws: dict[str, str]) -> None:
    AWS.update(edge_aws)


def edge_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "VAPI_", "TWILIO_"))}
    env.update(AWS)
    env.update(
        {
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "VAPI_API_KEY": VAPI_KEY,
            "EDGE_PUBLIC_URL": PUBLIC_URL,
            "STREAM_TOKEN_SECRET": TOKEN_SECRET,
            "EDGE_PORT": "0",
        }
    )
    env.update(extra)
    return env


def run_edge(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "media_edge"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_bad_config_exits_2_with_one_line():
    env = edge_env(EDGE_AUDIO_FORMAT="opus")
    result = run_edge(env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "media_edge: EDGE_AUDIO_FORMAT is invalid: must be one of mulaw, pcm16, got 'opus'"
    ]


def test_missing_secret_exits_2():
    env = edge_env()
    del env["STREAM_TOKEN_SECRET"]
    result = run_edge(env)
    assert result.returncode == 2
    assert "STREAM_TOKEN_SECRET is required" in result.stderr


def test_no_aws_region_for_the_claims_table_exits_2_with_one_line():
    env = {k: v for k, v in edge_env().items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    result = run_edge(env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "media_edge: SESSIONS_TABLE: no DynamoDB client: You must specify a region."
    ]


def test_port_in_use_is_one_line_not_a_traceback():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = edge_env(EDGE_PORT=str(taken.getsockname()[1]))
        result = run_edge(env)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("media_edge: cannot serve on 127.0.0.1:")


async def test_uvloop_by_default_and_asyncio_on_request():
    for flag, expected in (("false", "asyncio"), ("true", "uvloop"), (None, "uvloop")):
        env = edge_env() if flag is None else edge_env(EDGE_UVLOOP=flag)  # None: unset
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "media_edge",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            line = await read_listening(proc)
            assert line["eventLoop"].startswith(expected)
        finally:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT_S):
                assert await proc.wait() == 0
            await proc.communicate()


async def read_listening(proc: asyncio.subprocess.Process) -> dict:
    assert proc.stdout is not None
    async with asyncio.timeout(WAIT_S):
        while True:
            line = await proc.stdout.readline()
            assert line, "the edge exited before listening"
            if b'"edge listening"' in line:
                return json.loads(line)


async def read_port(proc: asyncio.subprocess.Process) -> int:
    return int((await read_listening(proc))["port"])


async def test_sigterm_drains_live_calls_then_exits_cleanly():
    vapi = FakeVapi()
    vapi_url = await vapi.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "media_edge",
        env=edge_env(VAPI_BASE_URL=vapi_url, DRAIN_SECONDS="1"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        port = await read_port(proc)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as client, TwilioCaller(port) as caller:
            assert (await client.get("/ready")).status_code == 200
            await caller.start()
            async with asyncio.timeout(WAIT_S):
                await vapi.connected.wait()
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT_S):
                while (await client.get("/ready")).status_code != 503:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"ws://127.0.0.1:{port}/media", additional_headers=sig_headers())
            assert refused.value.response.status_code == 503
            assert caller.ws.close_code is None  # the live call goes on during the drain
            async with asyncio.timeout(WAIT_S):
                # ended when DRAIN_SECONDS ran out
                assert await caller.closed() == CloseCode.GOING_AWAY
        async with asyncio.timeout(WAIT_S):
            assert await proc.wait() == 0
        assert {"type": "end-call"} in vapi.texts
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.communicate()
        await vapi.stop()


async def test_the_edge_logs_which_build_it_runs_and_freezes_its_start_up_heap():
    """``compiled`` is true exactly when the per-frame modules are mypyc's extensions: false on
    the sources, true when ``make test`` reruns this suite on the compiled build."""
    from tests.media_edge.conftest import COMPILED

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "media_edge",
        env=edge_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await read_listening(proc)
        assert proc.stdout is not None
        async with asyncio.timeout(WAIT_S):
            while b'"edge build"' not in (line := await proc.stdout.readline()):
                assert line, "the edge exited before logging its build"
        build = json.loads(line)
        assert build["compiled"] is COMPILED
        # The start-up heap (modules, numpy, websockets, ...) is out of the collector's way.
        assert build["gcFrozen"] > 10_000
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT_S):
            await proc.wait()
        await proc.communicate()
