"""Run an ASGI app under uvicorn inside an existing event loop (port 0 friendly, no signals).

uvicorn's ``Server.serve`` installs SIGINT/SIGTERM handlers when it runs on the main thread and
re-raises the signal when it stops; the local stack owns signals itself, so this wrapper turns
that off and lets callers start/stop servers as plain coroutines and learn the bound port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any, Literal

import uvicorn


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready TCP socket; binding first lets callers know the port before serving."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class AsgiServer:
    """``await start()`` serves ``app`` on a socket; ``await stop()`` shuts it down gracefully."""

    def __init__(
        self,
        app: Any,
        *,
        sock: socket.socket | None = None,
        lifespan: Literal["auto", "on", "off"] = "off",
        **config: Any,
    ) -> None:
        self._sock = sock or bind()
        self.port: int = self._sock.getsockname()[1]
        self._server = _QuietServer(
            uvicorn.Config(
                app,
                lifespan=lifespan,
                log_level="warning",
                access_log=False,
                ws="none",  # HTTP only: websockets are served by the websockets library
                timeout_graceful_shutdown=2,
                **config,
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # startup failed: surface the error
                raise RuntimeError("ASGI server stopped during startup")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._sock.close()
