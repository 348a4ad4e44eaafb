"""EDGE_WORKERS > 1: ``python -m media_edge`` supervises N worker processes on one port.

One asyncio process tops out at one core (BENCHMARKS.md); a task with more vCPUs runs one worker
per CPU. The supervisor reserves EDGE_HOST:EDGE_PORT (bound with SO_REUSEPORT, never listening,
so EDGE_PORT 0 resolves once and a restarted worker always gets the port back) and starts each
worker as ``python -m media_edge --worker I --port P --max-calls M --report-fd F``. Every worker
listens on that port with SO_REUSEPORT, and the kernel spreads new connections over them by a
hash of the addresses, not by load: each worker takes ceil(EDGE_MAX_CALLS / N) calls.

The supervisor owns what is per task:
- signals: SIGTERM/SIGINT go to every worker as SIGTERM (first = drain, second = end the calls
  now, as in single-process mode); workers are in their own session, so a terminal's Ctrl-C
  reaches them once, through here. It exits when the last worker has, 0 if all exited cleanly;
- ECS task protection, on while the sum of the workers' live calls is > 0: each worker writes
  its count, one line per change, to a pipe only it and the supervisor hold;
- the ActiveCalls gauge, the task's sum, at the same flush period (the scaling policy averages
  every sample as calls per task, so workers must not emit their own);
- restarts: a worker that dies before the drain is logged, counted (WorkerExits, and CallErrors
  ``worker_died`` for the calls it held) and restarted after a back-off;
- output: each worker's stdout/stderr comes through a pipe and goes out whole lines at a time, so
  JSON logs and EMF blobs from different workers never interleave mid-line;
- lifetime: workers get PR_SET_PDEATHSIG, so they go (drain and exit) even if this is SIGKILLed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import Any

import httpx

from media_edge.io.protection import TaskProtection
from media_edge.io.telemetry import EdgeMetrics, edge_logger, flush_every
from media_edge.server import WorkerRole
from voicebridge import telemetry
from voicebridge.config import ConfigError, Settings
from voicebridge.process import die_with_parent

WORKER_FLAG = "--worker"
RESTART_DELAY_S = 1.0  # after a worker that ran a while; doubled per quick death, up to:
MAX_RESTART_DELAY_S = 30.0
STABLE_S = 30.0  # a worker that lived this long resets the back-off
MAX_REPORTED_CALLS = 1_000_000
MAX_LINE_BYTES = 1 << 20  # a worker line longer than this goes out in pieces


@dataclass(frozen=True, slots=True)
class WorkerArgs:
    """What the supervisor tells worker ``index`` on its command line."""

    index: int
    port: int
    max_calls: int
    report_fd: int

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "media_edge",
            WORKER_FLAG,
            str(self.index),
            "--port",
            str(self.port),
            "--max-calls",
            str(self.max_calls),
            "--report-fd",
            str(self.report_fd),
        ]


def parse_worker_args(argv: list[str]) -> WorkerArgs | None:
    """None without ``--worker`` (the supervisor, or single-process mode); ConfigError if bad."""
    if WORKER_FLAG not in argv:
        return None
    parser = argparse.ArgumentParser(prog="media_edge", add_help=False, exit_on_error=False)
    parser.add_argument(WORKER_FLAG, dest="index", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-calls", type=int, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentError as exc:
        raise ConfigError(f"bad worker arguments: {exc}") from None
    return WorkerArgs(args.index, args.port, args.max_calls, args.report_fd)


def worker_settings(settings: Settings, args: WorkerArgs) -> Settings:
    """The task's settings as one worker sees them: the resolved port, its share of the calls."""
    return replace(settings, edge_port=args.port, edge_max_calls=args.max_calls)


async def worker_role(args: WorkerArgs) -> WorkerRole:
    """The worker's end of its report pipe, as an asyncio transport: it buffers, so a slow
    supervisor never blocks the worker's calls."""
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(args.report_fd, "wb", buffering=0)
    transport, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, pipe)

    def report(calls: int) -> None:
        if not transport.is_closing():
            transport.write(b"%d\n" % calls)

    return WorkerRole(args.index, report)


class TaskCalls:
    """Live calls per worker -> the task's total, which ActiveCalls and task protection follow."""

    def __init__(self, protection: TaskProtection | None) -> None:
        self._protection = protection
        self._by_worker: dict[int, int] = {}

    @property
    def total(self) -> int:
        return sum(self._by_worker.values())

    def set(self, worker: int, calls: int) -> None:
        self._by_worker[worker] = calls
        if self._protection is not None:
            self._protection.want(self.total > 0)


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind host:port (0: a free one) with SO_REUSEPORT and do not listen: the kernel sends no
    connection to it, but nothing without SO_REUSEPORT (and our uid) can take the port."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's listeners
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.workers = settings.edge_workers
        self.max_calls = math.ceil(settings.edge_max_calls / self.workers)
        self._logger = edge_logger()
        self._protection: TaskProtection | None = None
        self.calls = TaskCalls(None)
        self.metrics = EdgeMetrics(lambda: self.calls.total)
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._draining = asyncio.Event()
        self._port = 0
        self.clean = True  # every worker's last exit was a clean one

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then drain every worker; OSError if the port is taken."""
        loop = asyncio.get_running_loop()
        signals = asyncio.Queue[int]()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signals.put_nowait, sig)
        settings = self.settings
        reserved = reserve_port(settings.edge_host, settings.edge_port)
        self._port = reserved.getsockname()[1]
        http: httpx.AsyncClient | None = None
        background: list[asyncio.Task[None]] = [
            asyncio.create_task(
                flush_every(self.metrics, self.settings.metrics_flush_seconds, self._logger)
            )
        ]
        if settings.ecs_agent_uri:
            http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
            self._protection = TaskProtection(http, settings.ecs_agent_uri, self._logger)
            self.calls = TaskCalls(self._protection)
            background.append(asyncio.create_task(self._protection.run()))
        self._logger.info(
            "supervisor started",
            extra={
                "port": self._port,
                "workers": self.workers,
                "maxCallsPerWorker": self.max_calls,
            },
        )
        slots = asyncio.gather(*(self._keep(index) for index in range(self.workers)))
        try:
            first = asyncio.create_task(signals.get())
            either: set[asyncio.Future[Any]] = {slots, first}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not first.done():  # slots only end after a signal: this is a bug, surface it
                first.cancel()
                slots.result()
            self._logger.info("draining", extra={"activeCalls": self.calls.total})
            self._draining.set()
            self._forward()
            second = asyncio.create_task(signals.get())
            either = {slots, second}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if second.done():  # a second signal: workers end their calls now
                self._forward()
            else:
                second.cancel()
            await slots
        finally:
            slots.cancel()
            for process in self._processes.values():  # only on an error in here
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self._protection is not None:
                await self._protection.release()
            if http is not None:
                await http.aclose()
            self.metrics.flush()
            reserved.close()
        self._logger.info("supervisor stopped", extra={"clean": self.clean})

    def _forward(self) -> None:
        for process in self._processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)

    async def _keep(self, index: int) -> None:
        """Run worker ``index``; restart it (with back-off) whenever it dies before the drain."""
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAY_S
        while True:
            started = loop.time()
            pid, code, calls = await self._run_worker(index)
            if self._draining.is_set():
                self.clean = self.clean and code in (0, -signal.SIGTERM)
                if code not in (0, -signal.SIGTERM):
                    self._logger.warning(
                        "worker failed while stopping",
                        extra={"worker": index, "pid": pid, "exitCode": code},
                    )
                return
            delay = RESTART_DELAY_S if loop.time() - started >= STABLE_S else delay
            self._logger.error(
                "worker exited unexpectedly",
                extra={
                    "worker": index,
                    "pid": pid,
                    "exitCode": code,
                    "liveCalls": calls,
                    "restartInSeconds": delay,
                },
            )
            self.metrics.count(telemetry.WORKER_EXITS, 1)
            if calls:
                self.metrics.count(telemetry.CALL_ERRORS, calls, reason="worker_died")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._draining.wait()
            if self._draining.is_set():
                return
            delay = min(delay * 2, MAX_RESTART_DELAY_S)

    async def _run_worker(self, index: int) -> tuple[int, int, int]:
        """Start worker ``index`` and wait for it: (pid, exit code, calls it held at the end)."""
        read_fd, write_fd = os.pipe()
        args = WorkerArgs(index, self._port, self.max_calls, write_fd)
        try:
            process = await asyncio.create_subprocess_exec(
                *args.argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(write_fd,),
                start_new_session=True,  # signals reach workers through the supervisor only
                preexec_fn=die_with_parent(),
            )
        except (OSError, subprocess.SubprocessError) as exc:  # e.g. out of processes or memory
            os.close(read_fd)
            self._logger.error("worker did not start", extra={"worker": index, "detail": str(exc)})
            return 0, -1, 0
        finally:
            os.close(write_fd)  # the worker holds the only write end: EOF when it is gone
        self._processes[index] = process
        if self._draining.is_set():  # the drain began while it was starting
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        self._logger.info("worker started", extra={"worker": index, "pid": process.pid})
        assert process.stdout is not None
        relay = asyncio.create_task(_relay_lines(process.stdout))
        calls = await self._read_calls(index, read_fd)
        code = await process.wait()
        await relay
        self.calls.set(index, 0)
        del self._processes[index]
        return process.pid, code, calls

    async def _read_calls(self, index: int, read_fd: int) -> int:
        """Follow one worker's live-call reports until it exits; the last count it reported."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        last = 0
        try:
            while line := await reader.readline():
                try:
                    calls = int(line)
                except ValueError:
                    calls = -1
                if not 0 <= calls <= MAX_REPORTED_CALLS:
                    self._logger.warning("bad call report", extra={"worker": index})
                    continue
                last = calls
                self.calls.set(index, calls)
        except ValueError:  # a line over the limit: not a worker of ours; stop listening to it
            self._logger.warning("bad call report", extra={"worker": index})
        finally:
            transport.close()
        return last


async def _relay_lines(stream: asyncio.StreamReader) -> None:
    """Copy a worker's output to ours, whole lines per write (partial lines wait for the rest)."""
    pending = b""
    while chunk := await stream.read(65_536):
        pending += chunk
        cut = pending.rfind(b"\n") + 1 or (len(pending) if len(pending) > MAX_LINE_BYTES else 0)
        if cut:
            _write_out(pending[:cut])
            pending = pending[cut:]
    if pending:
        _write_out(pending + b"\n")


def _write_out(data: bytes) -> None:
    sys.stdout.flush()  # the supervisor's own log lines first, in order
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def main(settings: Settings) -> int:
    """The supervisor process: 0 after a clean drain, 1 if the port cannot be had or a worker
    did not stop cleanly."""
    supervisor = Supervisor(settings)
    try:
        asyncio.run(supervisor.run())
    except OSError as exc:
        print(
            f"media_edge: cannot serve on {settings.edge_host}:{settings.edge_port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0 if supervisor.clean else 1
