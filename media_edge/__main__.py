"""``python -m media_edge``: settings from the environment, serve, drain on SIGTERM/SIGINT.

A first signal drains (``/ready`` 503, new streams refused, live calls get up to DRAIN_SECONDS);
a second one ends the remaining calls at once. Bad configuration: one line, exit status 2.
The loop is uvloop unless ``EDGE_UVLOOP=false`` (BENCHMARKS.md: ~10 % less CPU per call).
``EDGE_WORKERS`` > 1 (or ``auto``) makes this process a supervisor of that many workers on one
port (``media_edge.supervisor``); it starts each of them as ``python -m media_edge --worker ...``.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import sysconfig
from collections.abc import Callable

from media_edge import supervisor
from media_edge.core import call
from media_edge.io.telemetry import edge_logger
from media_edge.server import EdgeServer
from voicebridge.config import ConfigError, Settings, load_settings


async def run(settings: Settings, worker: supervisor.WorkerArgs | None = None) -> None:
    loop = asyncio.get_running_loop()
    signals = asyncio.Queue[int]()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before listening: no window to die in
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    link = await supervisor.WorkerLink.open(worker) if worker is not None else None
    server = EdgeServer(settings, worker=link.role if link is not None else None)
    await server.start()
    if link is not None:  # connections come from the supervisor, through the drain too
        link.serve(server)
    quiet_gc()
    edge_logger().info(
        "edge build", extra={"compiled": compiled_build(), "gcFrozen": gc.get_freeze_count()}
    )
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
        if link is not None:
            link.close()


# A young collection every 50 000 net container allocations instead of 700: a frame's objects
# (events, actions, parsed JSON) die by reference counting and never reach the collector, so at
# 700 it ran hundreds of times a second under load for nothing; the older generations as before.
GC_THRESHOLDS = (50_000, 10, 10)


def quiet_gc() -> None:
    """After start-up: move everything imported and built so far (~100k objects: modules,
    numpy, websockets, Powertools) to the permanent generation, so a full collection no longer
    walks it (tens of ms with every call waiting), and collect the young generation rarely."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def compiled_build() -> bool:
    """True when the per-frame modules run as mypyc's C extensions (the image's default build,
    infra/edge_compile.py), False on the pure-Python sources."""
    return (call.__file__ or "").endswith(sysconfig.get_config_var("EXT_SUFFIX"))


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


USAGE = """usage: python -m media_edge [--help]

The voicebridge media edge: bridges Twilio Media Streams to Vapi's websocket transport on
EDGE_HOST:EDGE_PORT (/media, /health, /ready). Configured only by the environment: required
TWILIO_AUTH_TOKEN, TWILIO_ACCOUNT_SID, VAPI_API_KEY, EDGE_PUBLIC_URL, STREAM_TOKEN_SECRET; the
rest (EDGE_PORT, EDGE_WORKERS, EDGE_MAX_CALLS, ...) is listed in README.md#configuration.
SIGTERM drains (DRAIN_SECONDS), a second signal ends the calls. With EDGE_WORKERS > 1 this
process supervises workers it starts as `python -m media_edge --worker ...` (internal).
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE, end="")
        return 0
    try:
        settings = load_settings("edge")
        worker = supervisor.parse_worker_args(args)
    except ConfigError as exc:
        for problem in exc.problems:  # every bad variable, one line each
            print(f"media_edge: {problem}", file=sys.stderr)
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
