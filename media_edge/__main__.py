"""``python -m media_edge``: settings from the environment, serve, drain on SIGTERM/SIGINT.

A first signal drains (``/ready`` 503, new streams refused, live calls get up to DRAIN_SECONDS);
a second one ends the remaining calls at once. Bad configuration: one line, exit status 2.
The loop is uvloop unless ``EDGE_UVLOOP=false`` (BENCHMARKS.md: ~10 % less CPU per call).
``EDGE_WORKERS`` > 1 (or ``auto``) makes this process a supervisor of that many workers on one
port (``media_edge.supervisor``); it starts each of them as ``python -m media_edge --worker ...``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

from media_edge import supervisor
from media_edge.server import EdgeServer
from voicebridge.config import ConfigError, Settings, load_settings


async def run(settings: Settings, worker: supervisor.WorkerArgs | None = None) -> None:
    loop = asyncio.get_running_loop()
    signals = asyncio.Queue[int]()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before listening: no window to die in
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    role = await supervisor.worker_role(worker) if worker is not None else None
    server = EdgeServer(settings, worker=role)
    await server.start()
    try:
        await signals.get()
        drain = asyncio.create_task(server.drain())
        second = asyncio.create_task(signals.get())
        await asyncio.wait({drain, second}, return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():  # second signal: stop waiting for live calls
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
            await server.drain(grace_s=0)
        second.cancel()
    finally:
        await server.stop()


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop (the default; it is in the ``edge`` extra) unless EDGE_UVLOOP=false, else asyncio."""
    if not settings.edge_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        print("media_edge: EDGE_UVLOOP=true but uvloop is not installed", file=sys.stderr)
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings("edge")
        worker = supervisor.parse_worker_args(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"media_edge: {exc}", file=sys.stderr)
        return 2
    if worker is not None:
        settings = supervisor.worker_settings(settings, worker)
    elif settings.edge_workers > 1:
        return supervisor.main(settings)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
            runner.run(run(settings, worker))
    except ConfigError as exc:  # found while starting (e.g. no AWS region for the claim table)
        print(f"media_edge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken: one line, not a traceback
        print(
            f"media_edge: cannot serve on {settings.edge_host}:{settings.edge_port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
