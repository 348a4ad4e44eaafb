"""EDGE_WORKERS > 1: the supervisor and its workers, as real processes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.frames import CloseCode

from media_edge.io.protection import TaskProtection
from media_edge.io.telemetry import EdgeMetrics, edge_logger
from media_edge.protocol.twilio import apology_twiml
from media_edge.server import WORKER_HEADER
from media_edge.supervisor import TaskCalls
from tests.media_edge.fakes import ACCOUNT_SID, FakeVapi, HttpFake, TwilioCaller, sig_headers
from tests.media_edge.test_main import _claims_table, edge_env, run_edge  # noqa: F401 (fixture)
from voicebridge import config, telemetry
from voicebridge.config import ConfigError, load_settings

WAIT_S = 15.0
ON = {"ProtectionEnabled": True, "ExpiresInMinutes": 10}
OFF = {"ProtectionEnabled": False}


class Supervised:
    """``python -m media_edge`` with EDGE_WORKERS=2; its JSON output (its own and the workers',
    which it relays) collected line by line."""

    def __init__(self, **env: str) -> None:
        self.env = edge_env(EDGE_WORKERS="2", METRICS_FLUSH_SECONDS="1", **env)
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "media_edge",
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        await self.until(lambda: len(self.logs("edge build")) == 2)  # both adopt connections
        (started,) = self.logs("supervisor started")
        self.port = started["port"]
        # Only the supervisor listens on the task's port; a worker's own listener is private.
        assert self.port not in {line["port"] for line in self.logs("edge listening")}

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            if raw.startswith(b"{"):
                self.lines.append(json.loads(raw))  # a torn line would fail here
                self._changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def logs(self, message: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("message") == message]

    def metric(self, name: str, since: int = 0) -> list[float]:
        return [v for line in self.lines[since:] if "_aws" in line for v in line.get(name, [])]

    def worker_pids(self) -> dict[int, int]:
        """The latest pid of each worker slot."""
        return {line["worker"]: line["pid"] for line in self.logs("worker started")}

    async def stop(self) -> None:
        if self.proc is None:
            return
        pids = list(self.worker_pids().values())
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        for pid in pids:  # they go with the supervisor; this only spares a failed test's orphans
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        await self._reader
        await self.proc.communicate()


@pytest.fixture
async def supervised() -> AsyncIterator[Callable[..., Any]]:
    started: list[Supervised] = []

    async def start(**env: str) -> Supervised:
        edge = Supervised(**env)
        started.append(edge)
        await edge.start()
        return edge

    yield start
    for edge in started:
        await edge.stop()


def state(pid: int) -> str | None:
    """The process's state letter in /proc (R, S, T, Z, ...); None once it has been reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]  # after the command name, which may hold spaces


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for whoever adopted it counts as exited)."""
    return state(pid) in (None, "Z")


def stopped(pid: int) -> bool:
    """In the stopped state (after SIGSTOP took effect, not merely sent)."""
    return state(pid) == "T"


async def poll(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def until_ready_is(status: int, port: int) -> None:
    """Poll /ready; a connection the kernel gave a worker that is just exiting is reset (its
    accept queue goes with it), which only means: ask again."""
    async with asyncio.timeout(WAIT_S):
        while True:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                if (await get(port, "/ready"))[0] == status:
                    return


async def get(port: int, path: str) -> tuple[int, str | None]:
    """One request on a new connection (the kernel picks a worker per connection): the status
    and the answering worker."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
    finally:
        writer.close()
    headers = dict(line.split(": ", 1) for line in head[1:] if line)
    return int(head[0].split()[1]), headers.get(WORKER_HEADER)


async def workers_answering(port: int, path: str, status: int, tries: int = 200) -> set[str | None]:
    """Which workers answered ``path`` with ``status``, over new connections until both have."""
    seen: set[str | None] = set()
    for _ in range(tries):
        code, worker = await get(port, path)
        if code == status:
            seen.add(worker)
        if len(seen) == 2:
            break
    return seen


async def test_both_workers_get_connections_through_the_supervisors_port(supervised):
    edge = await supervised()
    assert len(set(edge.worker_pids().values())) == 2
    assert await workers_answering(edge.port, "/health", 200) == {"0", "1"}
    assert await workers_answering(edge.port, "/ready", 200) == {"0", "1"}
    assert edge.proc is not None
    edge.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(WAIT_S):
        assert await edge.proc.wait() == 0


def sid(n: int) -> str:
    return f"CA{n:032x}"


async def place(edge: Supervised, caller: TwilioCaller) -> int:
    """Start ``caller``'s call; the worker the supervisor reports it on."""
    await caller.start()
    await edge.until(
        lambda: any(r["callSid"] == caller.call_sid for r in edge.logs("call registered"))
    )
    (line,) = [r for r in edge.logs("call registered") if r["callSid"] == caller.call_sid]
    return int(line["worker"])


async def test_each_connection_goes_to_the_worker_with_the_fewest_open_ones(supervised):
    """Not the kernel's hash: four calls alternate, then, with worker 0's two ended, the next
    two both go to worker 0."""
    vapi = FakeVapi()
    vapi_url = await vapi.start()
    try:
        edge = await supervised(VAPI_BASE_URL=vapi_url, POWERTOOLS_LOG_LEVEL="DEBUG")
        callers = [TwilioCaller(edge.port, call_sid=sid(n)) for n in range(6)]
        async with contextlib.AsyncExitStack() as stack:
            placed = []
            for caller in callers[:4]:
                await stack.enter_async_context(caller)
                placed.append(await place(edge, caller))
            assert placed == [0, 1, 0, 1]  # ties go to the lower index
            for caller in (callers[0], callers[2]):  # worker 0's calls end
                await caller.stop()
                async with asyncio.timeout(WAIT_S):
                    await caller.closed()
            await edge.until(lambda: edge.metric(telemetry.ACTIVE_CALLS)[-1:] == [2.0])
            await asyncio.sleep(0.3)  # and its "closed" reports are in
            for caller in callers[4:]:
                await stack.enter_async_context(caller)
                placed.append(await place(edge, caller))
            assert placed[4:] == [0, 0]
    finally:
        await vapi.stop()


async def test_a_dead_workers_calls_get_the_apology_and_vapi_sees_its_socket_close(supervised):
    """SIGKILL mid-call: Twilio's stream stays open (the supervisor holds it) until Twilio REST
    has swapped the call's TwiML for the apology, then closes; the Vapi socket closes with the
    worker (Vapi ends such a call: endedReason phone-call-provider-closed-websocket, in
    #/components/schemas/Call/properties/endedReason/enum). The other worker's call goes on."""
    twilio = HttpFake(lambda m, p, b: (200, {"status": "in-progress"}))
    vapi = FakeVapi()
    twilio_url, vapi_url = await twilio.start(), await vapi.start()
    try:
        edge = await supervised(
            VAPI_BASE_URL=vapi_url, TWILIO_API_BASE=twilio_url, POWERTOOLS_LOG_LEVEL="DEBUG"
        )
        async with (
            TwilioCaller(edge.port, call_sid=sid(1)) as a,
            TwilioCaller(edge.port, call_sid=sid(2)) as b,
        ):
            assert [await place(edge, a), await place(edge, b)] == [0, 1]
            await poll(lambda: len(vapi.connections) == 2)
            a_vapi = next(
                ws
                for ws, body in zip(vapi.connections, vapi.bodies, strict=True)
                if body["assistantOverrides"]["metadata"]["callSid"] == a.call_sid
            )
            os.kill(edge.worker_pids()[0], signal.SIGKILL)
            async with asyncio.timeout(WAIT_S):
                await a_vapi.wait_closed()  # the kernel closed it with the process
            async with asyncio.timeout(WAIT_S):
                await a.closed()
            # The stream closed only after the redirect had been made.
            ((method, path, _, body),) = twilio.requests
            assert method == "POST"
            assert path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{a.call_sid}.json"
            form = urllib.parse.parse_qs(body.decode())
            assert form["Twiml"] == [apology_twiml(None)]
            (redirected,) = edge.logs("calls of a dead worker redirected")
            assert (redirected["worker"], redirected["calls"], redirected["redirected"]) == (
                0,
                1,
                1,
            )
            assert b.ws is not None
            assert b.ws.close_code is None  # worker 1's call is untouched
            await edge.until(lambda: sum(edge.metric(telemetry.WORKER_EXITS)) == 1)
    finally:
        await twilio.stop()
        await vapi.stop()


async def test_sigterm_drains_every_worker_with_protection_and_calls_summed_per_task(supervised):
    agent = HttpFake(lambda m, p, b: (200, {"protection": {}}))
    vapi = FakeVapi()
    agent_url, vapi_url = await agent.start(), await vapi.start()
    try:
        edge = await supervised(ECS_AGENT_URI=agent_url, VAPI_BASE_URL=vapi_url, DRAIN_SECONDS="60")
        assert edge.proc is not None
        async with TwilioCaller(edge.port) as caller:
            await caller.start()
            async with asyncio.timeout(WAIT_S):
                await vapi.connected.wait()
            await edge.until(lambda: len(agent.requests) == 1)  # protection on: a call is live
            mark = len(edge.lines)
            await edge.until(lambda: len(edge.metric(telemetry.ACTIVE_CALLS, mark)) >= 3)
            # One value per flush, the task's sum: a worker emitting its own (0 on the idle one)
            # would show here.
            assert set(edge.metric(telemetry.ACTIVE_CALLS, mark)) == {1.0}

            pids = edge.worker_pids()
            edge.proc.send_signal(signal.SIGTERM)
            await until_ready_is(503, edge.port)
            # All drain together: the idle worker is done at once and exits, the other refuses
            # new streams and answers /ready 503 whichever connection it is.
            await poll(lambda: sum(gone(pid) for pid in pids.values()) == 1)
            (busy,) = (i for i, pid in pids.items() if not gone(pid))
            for _ in range(10):
                assert await get(edge.port, "/ready") == (503, str(busy))
                with pytest.raises(InvalidStatus) as refused:
                    await connect(
                        f"ws://127.0.0.1:{edge.port}/media", additional_headers=sig_headers()
                    )
                assert refused.value.response.status_code == 503
            assert caller.ws is not None
            assert caller.ws.close_code is None  # the call goes on
            await caller.stop()  # it ends by itself; the drain is then over
            async with asyncio.timeout(WAIT_S):
                await caller.closed()
        async with asyncio.timeout(WAIT_S):
            assert await edge.proc.wait() == 0
        assert [json.loads(body) for _, _, _, body in agent.requests] == [ON, OFF]
        assert edge.metric(telemetry.ACTIVE_CALLS)[-1] == 0.0
        assert edge.logs("supervisor stopped")[0]["clean"] is True
    finally:
        await agent.stop()
        await vapi.stop()


async def test_a_second_signal_ends_the_calls_at_once(supervised):
    vapi = FakeVapi()
    twilio = HttpFake(lambda m, p, b: (200, {}))
    vapi_url, twilio_url = await vapi.start(), await twilio.start()
    try:
        edge = await supervised(
            VAPI_BASE_URL=vapi_url, TWILIO_API_BASE=twilio_url, DRAIN_SECONDS="600"
        )
        assert edge.proc is not None
        async with TwilioCaller(edge.port) as caller:
            await caller.start()
            async with asyncio.timeout(WAIT_S):
                await vapi.connected.wait()
            edge.proc.send_signal(signal.SIGINT)  # Ctrl-C, then SIGTERM: any two signals
            await until_ready_is(503, edge.port)
            assert caller.ws is not None
            assert caller.ws.close_code is None
            edge.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT_S):  # far inside DRAIN_SECONDS
                assert await caller.closed() == CloseCode.GOING_AWAY
        async with asyncio.timeout(WAIT_S):
            assert await edge.proc.wait() == 0
        assert {"type": "end-call"} in vapi.texts
        # Workers that stop cleanly ended their calls themselves: no apology on top.
        assert not twilio.requests
        assert not edge.logs("calls of a dead worker redirected")
    finally:
        await vapi.stop()
        await twilio.stop()


async def test_two_signals_end_the_calls_even_when_a_worker_takes_both_at_once(supervised):
    # A worker that does not run between the two forwards (busy, descheduled) must still see
    # two signals: the kernel merges a second pending SIGTERM into the first (a drain only).
    vapi = FakeVapi()
    vapi_url = await vapi.start()
    try:
        edge = await supervised(VAPI_BASE_URL=vapi_url, DRAIN_SECONDS="600")
        assert edge.proc is not None
        async with TwilioCaller(edge.port) as caller:
            await caller.start()
            async with asyncio.timeout(WAIT_S):
                await vapi.connected.wait()
            workers = list(edge.worker_pids().values())
            for pid in workers:
                os.kill(pid, signal.SIGSTOP)
            await poll(lambda: all(stopped(pid) for pid in workers))  # before a signal reaches one
            try:
                edge.proc.send_signal(signal.SIGTERM)
                await edge.until(lambda: bool(edge.logs("draining")))
                edge.proc.send_signal(signal.SIGTERM)
                await edge.until(lambda: bool(edge.logs("ending the calls")))
            finally:
                for pid in workers:
                    os.kill(pid, signal.SIGCONT)
            async with asyncio.timeout(WAIT_S):  # far inside DRAIN_SECONDS
                assert await caller.closed() == CloseCode.GOING_AWAY
        async with asyncio.timeout(WAIT_S):
            assert await edge.proc.wait() == 0
    finally:
        await vapi.stop()


async def test_a_worker_that_dies_is_logged_counted_and_restarted(supervised):
    edge = await supervised()
    victim = edge.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    await edge.until(lambda: edge.worker_pids()[0] != victim)
    (exited,) = edge.logs("worker exited unexpectedly")
    assert (exited["worker"], exited["pid"], exited["exitCode"]) == (0, victim, -signal.SIGKILL)
    await edge.until(lambda: len(edge.logs("edge listening")) == 3)
    await edge.until(lambda: sum(edge.metric(telemetry.WORKER_EXITS)) == 1)
    assert await workers_answering(edge.port, "/health", 200) == {"0", "1"}
    assert not gone(edge.worker_pids()[1])  # the other worker was left alone


async def test_sigkill_of_the_supervisor_takes_the_workers_down(supervised):
    edge = await supervised()
    pids = list(edge.worker_pids().values())
    assert edge.proc is not None
    edge.proc.kill()
    await edge.proc.wait()
    await poll(lambda: all(gone(pid) for pid in pids))
    with pytest.raises(ConnectionRefusedError):
        await get(edge.port, "/health")


async def test_protection_and_active_calls_follow_the_sum_over_workers(capsys):
    agent = HttpFake(lambda m, p, b: (200, {"protection": {}}))
    url = await agent.start()
    try:
        async with httpx.AsyncClient() as http:
            protection = TaskProtection(http, url, edge_logger())
            reconcile = asyncio.create_task(protection.run())
            calls = TaskCalls(protection)
            calls.set(0, 1)
            await poll(lambda: len(agent.requests) == 1)
            calls.set(1, 2)
            calls.set(0, 0)  # worker 1 still holds calls: protection stays on
            assert calls.total == 2
            capsys.readouterr()
            EdgeMetrics(lambda: calls.total).flush()
            (blob,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            assert blob[telemetry.ACTIVE_CALLS] == [2.0]
            calls.set(1, 0)
            await poll(lambda: len(agent.requests) == 2)
            reconcile.cancel()
        assert [json.loads(body) for _, _, _, body in agent.requests] == [ON, OFF]
    finally:
        await agent.stop()


@pytest.mark.parametrize("value", ["0", "two"])
def test_bad_edge_workers_is_a_one_line_config_error(value):
    result = run_edge(edge_env(EDGE_WORKERS=value))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "media_edge: EDGE_WORKERS is invalid: must be a number of processes from 1 to 256 or "
        f"auto, got {value!r}"
    ]


def test_edge_workers_auto_is_the_cpus_this_process_may_use(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CGROUP_CPU_MAX", tmp_path / "none")  # no quota: the mask
    monkeypatch.setattr(config, "CGROUP_V1_QUOTA", tmp_path / "none")
    settings = load_settings("edge", edge_env(EDGE_WORKERS="auto"))
    assert settings.edge_workers == len(os.sched_getaffinity(0))
    assert load_settings("edge", edge_env()).edge_workers == 1
    assert load_settings("edge", edge_env(EDGE_WORKERS="")).edge_workers == 1
    for bad in ("-1", "257", "1.5"):
        with pytest.raises(ConfigError, match="EDGE_WORKERS is invalid"):
            load_settings("edge", edge_env(EDGE_WORKERS=bad))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("25000 100000", 1), ("200000 100000", 2), ("150000 100000", 2), ("max 100000", None)],
)
def test_edge_workers_auto_follows_a_cgroup_v2_cpu_quota(tmp_path, monkeypatch, cpu_max, expected):
    """A 0.25 vCPU Fargate task may see every CPU of its host: the quota is what it gets."""
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    monkeypatch.setattr(config, "CGROUP_CPU_MAX", tmp_path / "cpu.max")
    cpus = len(os.sched_getaffinity(0))
    workers = load_settings("edge", edge_env(EDGE_WORKERS="auto")).edge_workers
    assert workers == (cpus if expected is None else min(cpus, expected))


def test_edge_workers_auto_follows_a_cgroup_v1_cpu_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CGROUP_CPU_MAX", tmp_path / "absent")
    (tmp_path / "quota").write_text("50000\n")
    (tmp_path / "period").write_text("100000\n")
    monkeypatch.setattr(config, "CGROUP_V1_QUOTA", tmp_path / "quota")
    monkeypatch.setattr(config, "CGROUP_V1_PERIOD", tmp_path / "period")
    assert load_settings("edge", edge_env(EDGE_WORKERS="auto")).edge_workers == 1
