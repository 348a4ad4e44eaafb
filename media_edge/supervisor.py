"""EDGE_WORKERS > 1: ``python -m media_edge`` supervises N worker processes behind one port.

One asyncio process tops out at one core (BENCHMARKS.md); a task with more vCPUs runs one worker
per CPU. The supervisor listens on EDGE_HOST:EDGE_PORT itself, accepts every connection and
hands it to the worker with the fewest open connections, over a Unix socket with SCM_RIGHTS
(``python -m media_edge --worker I --max-calls M --report-fd F --handoff-fd H``). Calls are long
and cost about the same each, so open connections are the load; the kernel's SO_REUSEPORT hash
would spread them blindly, and a reuseport BPF program that reads load needs CAP_BPF or
unprivileged BPF, which Fargate does not give. Each worker takes ceil(EDGE_MAX_CALLS / N) calls
(it answers 503 beyond that); its own listener is on a private loopback port, unused.

The supervisor owns what is per task:
- signals: SIGTERM/SIGINT reach every worker, the first as SIGTERM (drain), the second as SIGINT
  (end the calls now), as in single-process mode: two SIGTERMs sent before the worker ran would
  be one pending signal to the kernel, a drain that never ends the calls; workers are in their
  own session, so a terminal's Ctrl-C reaches them once, through here. It exits when the last
  worker has, 0 if all exited cleanly;
- ECS task protection, on while the sum of the workers' live calls is > 0, and the ActiveCalls
  gauge, the task's sum (the scaling policy averages every sample as calls per task, so workers
  must not emit their own). Each worker writes lines to a pipe only it and the supervisor hold:
  its live-call count on each change, ``ready`` once it adopts connections, ``closed ID`` for
  each handed connection it has closed, ``+CallSid`` / ``-CallSid`` as its calls start and end;
- a crashed worker's calls: the supervisor keeps its own descriptor of every connection it
  handed out until the worker reports it closed, so when a worker dies, Twilio's stream stays
  open; the supervisor swaps each of the dead worker's calls (by CallSid) to the edge's
  apology TwiML (or the fallback number) through Twilio REST, then closes the streams. The
  worker's Vapi sockets close with the process, which ends those calls on Vapi's side
  (``endedReason`` ``phone-call-provider-closed-websocket``); the worker is restarted after a
  back-off, counted (WorkerExits, CallErrors ``worker_died``) and logged;
- output: each worker's stdout/stderr comes through a pipe and goes out whole lines at a time, so
  JSON logs and EMF blobs from different workers never interleave mid-line;
- lifetime: workers get PR_SET_PDEATHSIG, so they go (drain and exit) even if this is SIGKILLed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from media_edge.io.protection import TaskProtection
from media_edge.io.session import REST_TIMEOUT_S
from media_edge.io.telemetry import EdgeMetrics, edge_logger, flush_every
from media_edge.protocol.twilio import apology_twiml
from media_edge.server import EdgeServer, TwilioSocket, WorkerRole
from voicebridge import telemetry
from voicebridge.config import ConfigError, Settings
from voicebridge.process import die_with_parent
from voicebridge.twilio_rest import TwilioRestError, update_call

WORKER_FLAG = "--worker"
RESTART_DELAY_S = 1.0  # after a worker that ran a while; doubled per quick death, up to:
MAX_RESTART_DELAY_S = 30.0
STABLE_S = 30.0  # a worker that lived this long resets the back-off
MAX_REPORTED_CALLS = 1_000_000
MAX_LINE_BYTES = 1 << 20  # a worker line longer than this goes out in pieces
MAX_REPORT_BYTES = 128  # one report line (a count, ``closed ID``, ``+CallSid``)
SID_REPORT_S = 0.2  # how often a worker tells the supervisor which calls it holds
ACCEPT_BACKLOG = 4096
MAX_PENDING = 1024  # connections held while no worker is ready; beyond that they are closed


@dataclass(frozen=True, slots=True)
class WorkerArgs:
    """What the supervisor tells worker ``index`` on its command line."""

    index: int
    max_calls: int
    report_fd: int
    handoff_fd: int

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "media_edge",
            WORKER_FLAG,
            str(self.index),
            "--max-calls",
            str(self.max_calls),
            "--report-fd",
            str(self.report_fd),
            "--handoff-fd",
            str(self.handoff_fd),
        ]


def parse_worker_args(argv: list[str]) -> WorkerArgs | None:
    """None without ``--worker`` (the supervisor, or single-process mode); ConfigError if bad."""
    if WORKER_FLAG not in argv:
        return None
    parser = argparse.ArgumentParser(prog="media_edge", add_help=False, exit_on_error=False)
    parser.add_argument(WORKER_FLAG, dest="index", type=int, required=True)
    parser.add_argument("--max-calls", type=int, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--handoff-fd", type=int, required=True)
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentError as exc:
        raise ConfigError(f"bad worker arguments: {exc}") from None
    return WorkerArgs(args.index, args.max_calls, args.report_fd, args.handoff_fd)


def worker_settings(settings: Settings, args: WorkerArgs) -> Settings:
    """The task's settings as one worker sees them: its share of the calls, and a private
    loopback listener (its connections come from the supervisor)."""
    return replace(settings, edge_host="127.0.0.1", edge_port=0, edge_max_calls=args.max_calls)


class WorkerLink:
    """A worker's two channels to its supervisor: the report pipe (lines out, through an asyncio
    transport that buffers, so a slow supervisor never blocks the worker's calls) and the
    handoff socket (connections in, one per SCM_RIGHTS message)."""

    def __init__(self, args: WorkerArgs, reports: asyncio.WriteTransport) -> None:
        self.args = args
        self._reports = reports
        self._handoff = socket.socket(fileno=args.handoff_fd)
        self._handoff.setblocking(False)
        self._server: EdgeServer | None = None
        self._sids: set[str] = set()
        self._sync: asyncio.Task[None] | None = None
        self._adopting: set[asyncio.Task[None]] = set()
        self.role = WorkerRole(args.index, lambda calls: self.report(b"%d" % calls))

    @classmethod
    async def open(cls, args: WorkerArgs) -> WorkerLink:
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(args.report_fd, "wb", buffering=0)
        transport, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, pipe)
        return cls(args, transport)

    def report(self, line: bytes) -> None:
        if not self._reports.is_closing():
            self._reports.write(line + b"\n")

    def serve(self, server: EdgeServer) -> None:
        """Adopt the connections the supervisor hands over, and keep it told of our calls."""
        self._server = server
        asyncio.get_running_loop().add_reader(self._handoff.fileno(), self._adopt)
        self._sync = asyncio.create_task(self._sync_sids(server))
        self.report(b"ready")

    def close(self) -> None:
        """At exit, after the server has stopped (every call ended): say so, adopt no more."""
        if self._sync is not None:
            self._sync.cancel()
        for sid in self._sids:
            self.report(b"-" + sid.encode())
        self._sids = set()
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._handoff.fileno())
        self._handoff.close()

    def closed(self, conn_id: int) -> None:
        self.report(b"closed %d" % conn_id)

    def _adopt(self) -> None:
        assert self._server is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._handoff, 32, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                loop.remove_reader(self._handoff.fileno())
                return
            if not fds:  # EOF (the supervisor is gone) or a message without a connection
                if not data:
                    loop.remove_reader(self._handoff.fileno())
                    return
                continue
            try:
                conn_id = int(data)
            except ValueError:
                conn_id = -1
            sock = socket.socket(fileno=fds[0])
            sock.setblocking(False)
            task = loop.create_task(self._adopt_one(self._server, sock, conn_id))
            self._adopting.add(task)  # held until done: a task nobody references may vanish
            task.add_done_callback(self._adopting.discard)

    async def _adopt_one(self, server: EdgeServer, sock: socket.socket, conn_id: int) -> None:
        factory = functools.partial(HandedSocket, server, self, conn_id)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(factory, sock)
        except OSError as exc:  # e.g. the peer is already gone: nothing to serve, say so
            edge_logger().warning("handed connection failed", extra={"detail": str(exc)})
            sock.close()
            self.closed(conn_id)

    async def _sync_sids(self, server: EdgeServer) -> None:
        while True:
            current = server.call_sids
            for sid in current - self._sids:
                self.report(b"+" + sid.encode())
            for sid in self._sids - current:
                self.report(b"-" + sid.encode())
            self._sids = current
            await asyncio.sleep(SID_REPORT_S)


class HandedSocket(TwilioSocket):
    """A connection the supervisor accepted: as any, plus ``closed ID`` back when it is gone
    (the supervisor then drops its own descriptor, which lets the socket close for real)."""

    def __init__(self, server: EdgeServer, link: WorkerLink, conn_id: int) -> None:
        super().__init__(server)
        self._link = link
        self._conn_id = conn_id

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._link.closed(self._conn_id)


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


def listen(host: str, port: int) -> socket.socket:
    """The task's listener on host:port (0: a free one), non-blocking; only this process
    accepts on it."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's listeners
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(ACCEPT_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(eq=False)
class Slot:
    """One worker as the supervisor sees it. ``handed`` holds the supervisor's own descriptor
    of every connection the worker has not reported closed: its load, and what keeps a dead
    worker's calls open until they are redirected."""

    index: int
    channel: socket.socket | None = None  # the handoff socket's supervisor end
    ready: bool = False
    handed: dict[int, socket.socket] = field(default_factory=dict)
    sids: set[str] = field(default_factory=set)

    def close_handed(self) -> None:
        for conn in self.handed.values():
            conn.close()
        self.handed.clear()


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
        self._slots = [Slot(index) for index in range(self.workers)]
        self._next_id = 0
        self._pending: list[socket.socket] = []  # accepted while no worker was ready
        self._draining = asyncio.Event()
        self._http: httpx.AsyncClient | None = None
        self._redirects: set[asyncio.Task[None]] = set()
        self._port = 0
        self.clean = True  # every worker's last exit was a clean one

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then drain every worker; OSError if the port is taken."""
        loop = asyncio.get_running_loop()
        signals = asyncio.Queue[int]()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signals.put_nowait, sig)
        settings = self.settings
        listener = listen(settings.edge_host, settings.edge_port)
        self._port = listener.getsockname()[1]
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(REST_TIMEOUT_S))
        background: list[asyncio.Task[None]] = [
            asyncio.create_task(
                flush_every(self.metrics, self.settings.metrics_flush_seconds, self._logger)
            )
        ]
        if settings.ecs_agent_uri:
            self._protection = TaskProtection(self._http, settings.ecs_agent_uri, self._logger)
            self.calls = TaskCalls(self._protection)
            background.append(asyncio.create_task(self._protection.run()))
        loop.add_reader(listener.fileno(), self._accept, listener)
        self._logger.info(
            "supervisor started",
            extra={
                "port": self._port,
                "workers": self.workers,
                "maxCallsPerWorker": self.max_calls,
            },
        )
        slots = asyncio.gather(*(self._keep(slot) for slot in self._slots))
        try:
            first = asyncio.create_task(signals.get())
            await asyncio.wait(_either(slots, first), return_when=asyncio.FIRST_COMPLETED)
            if not first.done():  # slots only end after a signal: this is a bug, surface it
                first.cancel()
                slots.result()
            self._logger.info("draining", extra={"activeCalls": self.calls.total})
            self._draining.set()
            self._forward(signal.SIGTERM)
            second = asyncio.create_task(signals.get())
            await asyncio.wait(_either(slots, second), return_when=asyncio.FIRST_COMPLETED)
            if second.done():  # a second signal: workers end their calls now
                self._logger.info("ending the calls", extra={"activeCalls": self.calls.total})
                self._forward(signal.SIGINT)  # not SIGTERM again: the kernel would merge them
            else:
                second.cancel()
            await slots
            await asyncio.gather(*self._redirects, return_exceptions=True)
        finally:
            loop.remove_reader(listener.fileno())
            listener.close()
            slots.cancel()
            for process in self._processes.values():  # only on an error in here
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            for slot in self._slots:
                slot.close_handed()
            for conn in self._pending:
                conn.close()
            for task in [*background, *self._redirects]:
                task.cancel()
            await asyncio.gather(*background, *self._redirects, return_exceptions=True)
            if self._protection is not None:
                await self._protection.release()
            await self._http.aclose()
            self.metrics.flush()
        self._logger.info("supervisor stopped", extra={"clean": self.clean})

    def _forward(self, sig: signal.Signals) -> None:
        for process in self._processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)

    # -- connections ------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        """Every pending connection to the ready worker with the fewest open ones."""
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of descriptors: the next readiness retries
                self._logger.warning("accept failed", extra={"detail": str(exc)})
                return
            self._hand(conn)

    def _hand(self, conn: socket.socket) -> None:
        ready = sorted((s for s in self._slots if s.ready), key=lambda s: len(s.handed))
        for slot in ready:
            assert slot.channel is not None
            self._next_id += 1
            try:
                socket.send_fds(slot.channel, [b"%d" % self._next_id], [conn.fileno()])
            except OSError:  # its queue is full or it is going: the next one
                continue
            slot.handed[self._next_id] = conn
            return
        if len(self._pending) < MAX_PENDING:  # no worker up yet (start, restart): it waits
            self._pending.append(conn)
        else:
            conn.close()

    def _hand_pending(self) -> None:
        pending, self._pending = self._pending, []
        for conn in pending:
            self._hand(conn)

    # -- workers ------------------------------------------------------------------------------

    async def _keep(self, slot: Slot) -> None:
        """Run a worker in ``slot``; restart it (with back-off) whenever it dies before the
        drain, after redirecting the calls it held."""
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAY_S
        index = slot.index
        while True:
            started = loop.time()
            pid, code, calls = await self._run_worker(slot)
            if self._draining.is_set():
                clean = code in (0, -signal.SIGTERM)
                self.clean = self.clean and clean
                if not clean:
                    self._logger.warning(
                        "worker failed while stopping",
                        extra={"worker": index, "pid": pid, "exitCode": code},
                    )
                    self._orphans(slot)  # it did not end its calls itself
                slot.close_handed()  # a clean worker ended them (and said so, mostly)
                slot.sids.clear()
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
            self._orphans(slot)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._draining.wait()
            if self._draining.is_set():
                return
            delay = min(delay * 2, MAX_RESTART_DELAY_S)

    def _orphans(self, slot: Slot) -> None:
        """A worker is gone: its calls (known by CallSid) get the apology through Twilio REST,
        then their streams close; connections without a call yet just close."""
        handed, sids = dict(slot.handed), sorted(slot.sids)
        slot.handed.clear()
        slot.sids.clear()
        if not sids:
            for conn in handed.values():
                conn.close()
            return
        task = asyncio.create_task(self._redirect(slot.index, sids, list(handed.values())))
        self._redirects.add(task)
        task.add_done_callback(self._redirects.discard)

    async def _redirect(self, index: int, sids: list[str], conns: list[socket.socket]) -> None:
        settings = self.settings
        twiml = apology_twiml(settings.edge_fallback_number or None)

        async def one(sid: str) -> bool:
            assert self._http is not None
            try:
                async with asyncio.timeout(REST_TIMEOUT_S):
                    await update_call(  # UPDATED or ALREADY_ENDED: either way the caller is out
                        self._http,
                        settings.twilio_api_base,
                        settings.twilio_account_sid or "",
                        settings.twilio_auth_token or "",
                        sid,
                        twiml=twiml,
                    )
                return True
            except (TwilioRestError, TimeoutError, ValueError) as exc:
                self._logger.error(
                    "twilio fallback failed", extra={"callSid": sid, "detail": str(exc)}
                )
                self.metrics.count(telemetry.CALL_ERRORS, 1, reason="twilio_fallback_failed")
                return False

        try:
            done = await asyncio.gather(*(one(sid) for sid in sids))
            self._logger.warning(
                "calls of a dead worker redirected",
                extra={"worker": index, "calls": len(sids), "redirected": sum(done)},
            )
        finally:
            for conn in conns:  # Twilio now ends each stream itself; ours goes too
                conn.close()

    async def _run_worker(self, slot: Slot) -> tuple[int, int, int]:
        """Start the worker of ``slot`` and wait for it: (pid, exit code, calls it held)."""
        index = slot.index
        read_fd, write_fd = os.pipe()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        args = WorkerArgs(index, self.max_calls, write_fd, theirs.fileno())
        try:
            process = await asyncio.create_subprocess_exec(
                *args.argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(write_fd, theirs.fileno()),
                start_new_session=True,  # signals reach workers through the supervisor only
                preexec_fn=die_with_parent(),
            )
        except (OSError, subprocess.SubprocessError) as exc:  # e.g. out of processes or memory
            os.close(read_fd)
            ours.close()
            self._logger.error("worker did not start", extra={"worker": index, "detail": str(exc)})
            return 0, -1, 0
        finally:
            os.close(write_fd)  # the worker holds the only write end: EOF when it is gone
            theirs.close()
        slot.channel = ours
        self._processes[index] = process
        if self._draining.is_set():  # the drain began while it was starting
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        self._logger.info("worker started", extra={"worker": index, "pid": process.pid})
        assert process.stdout is not None
        relay = asyncio.create_task(_relay_lines(process.stdout))
        try:
            calls = await self._read_reports(slot, read_fd)
            code = await process.wait()
            await relay
        finally:
            slot.ready = False
            slot.channel = None
            ours.close()
        self.calls.set(index, 0)
        del self._processes[index]
        return process.pid, code, calls

    async def _read_reports(self, slot: Slot, read_fd: int) -> int:
        """Follow one worker's reports until it exits; the last call count it reported."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_REPORT_BYTES)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        last = 0
        try:
            while line := await reader.readline():
                calls = self._report(slot, line.strip())
                if calls is not None:
                    last = calls
        except ValueError:  # a line over the limit: not a worker of ours; stop listening to it
            self._logger.warning("bad call report", extra={"worker": slot.index})
        finally:
            transport.close()
        return last

    def _report(self, slot: Slot, line: bytes) -> int | None:
        """Apply one report line; the new call count if it was one."""
        if line.isdigit() and int(line) <= MAX_REPORTED_CALLS:
            self.calls.set(slot.index, int(line))
            return int(line)
        word, _, rest = line.partition(b" ")
        if word == b"closed" and rest.isdigit():
            conn = slot.handed.pop(int(rest), None)
            if conn is not None:
                conn.close()
        elif line == b"ready":
            slot.ready = True
            self._hand_pending()
        elif line[:1] in (b"+", b"-") and line[1:3] == b"CA" and line[1:].isalnum():
            sid = line[1:].decode()
            if line[:1] == b"+":
                slot.sids.add(sid)
                self._logger.debug("call registered", extra={"worker": slot.index, "callSid": sid})
            else:
                slot.sids.discard(sid)
        else:
            self._logger.warning("bad call report", extra={"worker": slot.index})
        return None


def _either(*futures: asyncio.Future[Any]) -> set[asyncio.Future[Any]]:
    """What ``asyncio.wait`` takes, for futures of different result types."""
    return set(futures)


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
