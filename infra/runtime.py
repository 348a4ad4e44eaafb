"""Plumbing for the local stack: an event loop on a thread, child processes with captured
output, and a stdout tap that collects EMF metric lines."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TextIO, TypeVar

from voicebridge.process import die_with_parent

T = TypeVar("T")
Render = Callable[[str, str], list[str]]  # (component, output line) -> lines for the console


class LoopThread:
    """An asyncio loop running on its own thread: servers keep real time whatever the caller's
    thread does, and ``run`` hands them coroutines from synchronous code."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def tasks(self) -> set[asyncio.Task[Any]]:
        async def snapshot() -> set[asyncio.Task[Any]]:
            current = asyncio.current_task()
            return {t for t in asyncio.all_tasks() if t is not current and not t.done()}

        return self.run(snapshot())

    def close(self) -> None:
        async def cancel_all() -> None:
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def parse_emf(line: str) -> dict[str, Any] | None:
    """The JSON object if ``line`` is a CloudWatch EMF record, else None."""
    if not line.startswith("{") or '"_aws"' not in line:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "_aws" in record else None


def _is_json_object(line: str) -> bool:
    """A whole JSON object on one line (a structured log or metric, not pretty-printed output)."""
    if not (line.startswith("{") and line.endswith("}")):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


class EmfSink:
    """Collects EMF records from every component (thread-safe)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.records.append(record)

    def values(self, name: str, service: str | None = None) -> list[float]:
        """Every value emitted for metric ``name`` (optionally for one ``service``)."""
        out: list[float] = []
        with self._lock:
            records = list(self.records)
        for record in records:
            if service is not None and record.get("service") != service:
                continue
            declared = {
                metric["Name"]
                for directive in record["_aws"].get("CloudWatchMetrics", [])
                for metric in directive.get("Metrics", [])
            }
            if name in declared and name in record:
                value = record[name]
                out.extend(value if isinstance(value, list) else [value])
        return out

    def clear(self) -> None:
        with self._lock:
            self.records.clear()


class EmfHook:
    """Records the EMF blobs Powertools prints in *this* process (the in-process edge).

    Powertools writes EMF with a bare ``print`` in its CloudWatch provider module; a module-level
    ``print`` there takes precedence over the builtin, so the stack sees every blob whatever
    ``sys.stdout`` currently is (test runners swap it). Removed again on ``uninstall``.
    """

    def __init__(self, sink: EmfSink) -> None:
        self._sink = sink
        self._module: Any = None

    def install(self) -> None:
        from aws_lambda_powertools.metrics.provider.cloudwatch_emf import cloudwatch

        self._module = cloudwatch
        cloudwatch.print = self._print  # type: ignore[attr-defined]

    def uninstall(self) -> None:
        if self._module is not None and getattr(self._module, "print", None) == self._print:
            del self._module.print
        self._module = None

    def _print(self, *args: Any, **kwargs: Any) -> None:
        if args and isinstance(args[0], str):
            record = parse_emf(args[0])
            if record is not None:
                self._sink.add(record)
        builtins.print(*args, **kwargs)


class StdoutTap:
    """Wraps ``sys.stdout`` for the in-process edge's JSON logs and metrics: labelled ``[edge]``,
    or dropped when ``quiet`` (plain text, e.g. the demo's own output, always passes); recent
    log lines are kept for debugging."""

    def __init__(self, quiet: bool, render: Render | None = None) -> None:
        self._quiet = quiet
        self._render = render
        self._original: TextIO = sys.stdout
        self._partial = ""
        self._lock = threading.Lock()
        self.lines: deque[str] = deque(maxlen=2000)  # recent JSON lines (logs), for debugging

    def install(self) -> None:
        self._original = sys.stdout
        sys.stdout = self

    def uninstall(self) -> None:
        if sys.stdout is self:
            sys.stdout = self._original

    def write(self, text: str) -> int:
        # One lock for the split and the writes: several threads print (the edge's loop, the
        # children's output readers) and a TextIOWrapper loses data under concurrent writes.
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                if not _is_json_object(line):
                    self._original.write(line + "\n")
                    continue
                if parse_emf(line) is None:
                    self.lines.append(line)
                if self._quiet:  # quiet drops JSON logs and metrics
                    continue
                if self._render is None:  # raw: label them
                    self._original.write(f"[edge] {line}\n")
                else:
                    for shown in self._render("edge", line):
                        self._original.write(shown + "\n")
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._original.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class ChildProcess:
    """A component in its own process (like its own Lambda); output read line by line."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        sink: EmfSink,
        *,
        quiet: bool,
        pass_fds: Sequence[int] = (),
        render: Render | None = None,
    ) -> None:
        self.name = name
        self._render = render
        self.lines: deque[str] = deque(maxlen=2000)
        self._sink = sink
        self._quiet = quiet
        self.process = subprocess.Popen(
            list(argv),
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            pass_fds=tuple(pass_fds),
            start_new_session=True,  # Ctrl-C reaches the stack, which stops us in order
            preexec_fn=die_with_parent(),  # a crashed or killed stack leaves no orphan
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            record = parse_emf(line)
            if record is not None:
                self._sink.add(record)
            if self._quiet:
                continue
            shown = (
                [f"[{self.name}] {line}"] if self._render is None else self._render(self.name, line)
            )
            if shown:
                sys.stdout.write("".join(f"{text}\n" for text in shown))  # one write: whole lines
                sys.stdout.flush()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 8.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(timeout=5)
        return self.process.returncode
