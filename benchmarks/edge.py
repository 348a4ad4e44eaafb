"""Media edge under load (`make bench-edge`): CPU per call, added latency, memory per call.

Three processes per point: the edge (`python -m media_edge`, pinned to CPU 0), and a load
generator (pinned to CPU 1) holding N Twilio-speaking callers and a fake Vapi. Callers upgrade
with a valid X-Twilio-Signature, send ``connected`` + ``start`` with a minted stream token, then
20 ms media frames in real time, and echo ``mark``s when their simulated playout reaches them.
The fake Vapi answers ``POST /call`` with a ``websocketCallUrl`` and echoes every audio frame
back, so the edge carries audio both ways all the time (the worst case: the assistant never
stops talking). Added latency = caller's send of a frame -> fake Vapi's receipt of it (one
process, one clock), raw. The floor is a naive relay (JSON -> base64 -> forward, no DSP, no
pacing) measured in the same run.

The load generator speaks WebSocket by hand over asyncio protocols (pre-built frames, zero mask
key) so that it stays far cheaper than the edge it measures; its own CPU is reported too.

Each frame is tagged by its content: 160 bytes of one mu-law code out of 32 with distinct
levels. In pcm16 mode the edge decodes and resamples it; a constant frame stays constant (bar
its edges), so the fake Vapi reads the tag back from the middle sample either way.

The edge's run-queue wait (/proc/pid/schedstat) is reported next to its CPU: on a shared
machine, a point where the edge waited for a CPU measures the neighbours as much as the edge.

Variants: ``naive``, ``naive-picows``, ``pipecat``, ``pipecat-novad``, ``shipped``, ``mulaw``,
``pcm16``, with suffixes ``+uvloop``, ``+mypyc``, ``+w2``, ``+record`` and ``+gcstats``
(combinable, e.g. ``mulaw+w2+uvloop``) and an optional ``@REV`` (e.g. ``shipped@1a48a0a``).
- ``naive``: a websockets relay (JSON -> base64 -> forward, no checks, DSP or pacing), the floor;
  ``naive-picows``: the same on picows (Cython framing) under uvloop.
- ``pipecat``: the same bridge built from pipecat (benchmarks/pipecat_peer.py: its Twilio
  serializer and WebSocket transports, Silero VAD, default resampling); ``pipecat-novad``:
  without the VAD.
- ``shipped``: exactly what the image runs: the per-frame modules compiled by
  infra/edge_compile.py (as the Dockerfile's builder stage does), uvloop, one process.
- ``mulaw``/``pcm16``: the edge from the sources (pure Python) on plain asyncio, unless
  ``+uvloop``; ``+mypyc`` compiles them as ``shipped`` does.
- ``+w2``: EDGE_WORKERS=2, the supervisor and two workers. The workers are pinned to CPUs 0 and
  1, the supervisor and the load generator are not (they share the CPUs with the workers);
  CPU, RSS and run-queue wait are then summed over the supervisor and its workers (also given
  per process), so the CPU column can pass 100 % of a core.
- ``+record``: every call recorded (``RECORDINGS_BUCKET``: the stereo WAV spooled and uploaded
  to the embedded S3 in 5 MiB parts while the call runs). Without it the edge runs as the
  template deploys it by default (``RecordingsEnabled`` false): no bucket, no recording.
- ``+gcstats``: every garbage collection in the edge is timed (benchmarks/gcstats); those in the
  window are reported.
- ``@REV``: the edge from that git revision (``git archive``), for an A/B of one change measured
  in one run.

    python -m benchmarks.edge [--calls 1 100 250] [--window 10] [--variants naive pipecat
                              shipped mulaw+uvloop] [--no-echo]
    python -m benchmarks.edge --core   # CPU per frame through the sans-I/O core, in process
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import hashlib
import http
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from media_edge.dsp import ulaw_decode
from voicebridge import stream_token
from voicebridge.twilio_signature import sign

AUTH_TOKEN = "bench-twilio-auth-token"
ACCOUNT_SID = "AC" + "0" * 32
TOKEN_SECRET = "bench-stream-token-secret"
VAPI_KEY = "bench-vapi-key"
FRAME_S = 0.020
BUCKETS = 10  # callers are spread over 10 send phases per 20 ms, as real calls would be
TAG_CODES = [0x90 + 2 * i for i in range(16)] + [0x10 + 2 * i for i in range(16)]
TAG_LEVELS = ulaw_decode(bytes(TAG_CODES)).astype(int)
TAG_PAYLOADS = [base64.b64encode(bytes([c]) * 160).decode() for c in TAG_CODES]
# A received code maps to the tag within one mu-law step of it (a resampler's ripple on a
# constant frame moves the code by a step at most; the peer's extra resamplers do that).
CODE_TO_TAG = {
    code + d: i for i, code in enumerate(TAG_CODES) for d in (-1, 1, 0)
}  # exact codes last, so they win
# After 16 kHz resampling a constant frame's middle is within +-2 of the decoded level.
LEVEL_TO_TAG = {int(level) + d: i for i, level in enumerate(TAG_LEVELS) for d in range(-2, 3)}
TAG_PROBES = (16, 48, 80, 112, 144)  # samples into a 20 ms block where its tag is read
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ROOT = Path(__file__).resolve().parent.parent
# Each load generator's CallSids are its own: the edges of one run share a claims table, which
# admits one stream per CallSid.
RUN_ID = os.urandom(4).hex()


# ---------------------------------------------------------------------------------------------
# Minimal RFC 6455 framing for the load generator


def ws_frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """One final frame. Client frames carry a zero mask key: masking is then the identity."""
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([0x80 | opcode, bit | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, bit | 127]) + n.to_bytes(8, "big")
    return head + (b"\0\0\0\0" if masked else b"") + payload


def unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n or key == b"\0\0\0\0":
        return payload
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little"
    )


class FrameParser:
    """Incremental frame parser: ``feed(data)`` -> [(opcode, payload)] (unmasked)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.buf
        buf += data
        out = []
        at = 0
        while len(buf) - at >= 2:
            b0, b1 = buf[at], buf[at + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if len(buf) - at < 4:
                    break
                n, head = int.from_bytes(buf[at + 2 : at + 4], "big"), 4
            elif n == 127:
                if len(buf) - at < 10:
                    break
                n, head = int.from_bytes(buf[at + 2 : at + 10], "big"), 10
            key = b""
            if b1 & 0x80:
                key, head = bytes(buf[at + head : at + head + 4]), head + 4
            if len(buf) - at < head + n:
                break
            payload = bytes(buf[at + head : at + head + n])
            out.append((b0 & 0x0F, unmask(payload, key) if key else payload))
            at += head + n
        del buf[:at]
        return out


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()  # noqa: S324


# ---------------------------------------------------------------------------------------------
# The load generator process: callers + fake Vapi


@dataclass
class Stats:
    window: tuple[float, float] = (0.0, 0.0)
    latencies: list[float] = field(default_factory=list)
    frames_sent: int = 0
    frames_received: int = 0
    tag_mismatches: int = 0
    twilio_media_in: int = 0
    marks_echoed: int = 0
    bridged: int = 0
    rejected: int = 0


class Caller(asyncio.Protocol):
    """One Twilio Media Streams connection."""

    def __init__(self, index: int, port: int, public_url: str, stats: Stats) -> None:
        self.index = index
        self.call_sid = f"CA{RUN_ID}{index:024x}"
        self.stream_sid = f"MZ{index:032x}"
        self.port = port
        self.public_url = public_url
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.handshake = bytearray()
        self.open = False
        self.parser = FrameParser()
        self.sent_at: list[float] = []
        self.sending = False
        self.bridged = False
        self.play_end = 0.0
        self.loop = asyncio.get_running_loop()
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        key = base64.b64encode(os.urandom(16)).decode()
        signature = sign(AUTH_TOKEN, self.public_url + "/media")
        transport.write(  # type: ignore[attr-defined]
            (
                f"GET /media HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nX-Twilio-Signature: {signature}\r\n\r\n"
            ).encode()
        )

    def send_text(self, text: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ws_frame(0x1, text.encode(), masked=True))

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.handshake += data
            end = self.handshake.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.handshake.startswith(b"HTTP/1.1 101"):
                self.stats.rejected += 1
                assert self.transport is not None
                self.transport.close()
                return
            self.open = True
            data, self.handshake = bytes(self.handshake[end + 4 :]), bytearray()
            self.start()
        for opcode, payload in self.parser.feed(data):
            if opcode == 0x1:
                self.on_text(payload)
            elif opcode == 0x9:
                assert self.transport is not None
                self.transport.write(ws_frame(0xA, payload, masked=True))
            elif opcode == 0x8:
                assert self.transport is not None
                self.transport.close()

    def start(self) -> None:
        token = stream_token.mint(TOKEN_SECRET, self.call_sid, "asst-bench", time.time(), 300)
        self.send_text(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "accountSid": ACCOUNT_SID,
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"token": token, "from": "+15550001111", "to": "+15550002222"},
        }
        self.send_text(
            json.dumps(
                {
                    "event": "start",
                    "sequenceNumber": "1",
                    "streamSid": self.stream_sid,
                    "start": start,
                }
            )
        )

    def on_text(self, payload: bytes) -> None:
        """Edge -> Twilio: play media on a simulated clock, echo marks when they have played."""
        now = self.loop.time()
        if b'"mark"' in payload:
            name = json.loads(payload)["mark"]["name"]
            echo = json.dumps(
                {
                    "event": "mark",
                    "streamSid": self.stream_sid,
                    "sequenceNumber": "0",
                    "mark": {"name": name},
                }
            )
            self.loop.call_at(max(now, self.play_end), self.echo_mark, echo)
        elif b'"media"' in payload:
            self.stats.twilio_media_in += 1
            start = payload.find(b'"payload":"') + 11
            frames = (payload.find(b'"', start) - start) * 3 // 4 // 160
            self.play_end = max(now, self.play_end) + max(1, frames) * FRAME_S

    def echo_mark(self, echo: str) -> None:
        self.stats.marks_echoed += 1
        self.send_text(echo)

    def send_media(self) -> None:
        k = len(self.sent_at)
        self.sent_at.append(time.perf_counter())
        self.send_text(
            f'{{"event":"media","sequenceNumber":"{k + 2}","streamSid":"{self.stream_sid}",'
            f'"media":{{"track":"inbound","chunk":"{k + 1}","timestamp":"{k * 20}",'
            f'"payload":"{TAG_PAYLOADS[k % 32]}"}}}}'
        )

    def stop(self) -> None:
        self.sending = False
        self.send_text(
            json.dumps(
                {
                    "event": "stop",
                    "sequenceNumber": "999999",
                    "streamSid": self.stream_sid,
                    "stop": {"accountSid": ACCOUNT_SID, "callSid": self.call_sid},
                }
            )
        )
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ws_frame(0x8, (1000).to_bytes(2, "big"), masked=True))

    def connection_lost(self, exc: Exception | None) -> None:
        self.sending = False
        self.closed.set()


class VapiConnection(asyncio.Protocol):
    """Fake Vapi: ``POST /call`` (keep-alive HTTP) or the transport socket (echoes audio)."""

    def __init__(self, server: FakeVapi) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.parser: FrameParser | None = None
        self.caller: Caller | None = None
        self.expect = -1  # index of the next frame from this caller (-1: not aligned yet)
        self.pcm16 = server.pcm16

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.parser is not None:
            self.frames(self.parser.feed(data))
            return
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            length = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            method, path, _ = head[0].split(" ", 2)
            if headers.get("upgrade", "").lower() == "websocket":
                self.upgrade(path, headers)
                rest, self.buf = bytes(self.buf), bytearray()
                if rest:
                    self.data_received(rest)
                return
            self.rest(method, path, body, headers)

    def rest(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        assert self.transport is not None
        if (
            method != "POST"
            or path != "/call"
            or headers.get("authorization") != f"Bearer {VAPI_KEY}"
        ):
            self.transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            return
        call = json.loads(body)
        sid = call["assistantOverrides"]["metadata"]["callSid"]
        answer = json.dumps(
            {
                "id": f"vapi-{sid}",
                "transport": {
                    "provider": "vapi.websocket",
                    "websocketCallUrl": f"ws://127.0.0.1:{self.server.port}/transport/{sid}",
                },
            }
        ).encode()
        self.transport.write(
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(answer)}\r\n\r\n".encode()
            + answer
        )

    def upgrade(self, path: str, headers: dict[str, str]) -> None:
        assert self.transport is not None
        self.transport.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_key(headers['sec-websocket-key'])}\r\n\r\n"
            ).encode()
        )
        self.parser = FrameParser()
        self.caller = self.server.callers.get(path.rsplit("/", 1)[-1])
        if self.caller is not None:
            self.caller.bridged = True
            self.server.stats.bridged += 1
            if self.server.stats.bridged == len(self.server.callers):
                self.server.all_bridged.set()

    def frames(self, frames: list[tuple[int, bytes]]) -> None:
        assert self.transport is not None
        for opcode, payload in frames:
            if opcode == 0x2:
                self.on_audio(payload)
                if self.server.echo:  # the "assistant" talks all the time
                    self.transport.write(ws_frame(0x2, payload, masked=False))
            elif opcode == 0x9:
                self.transport.write(ws_frame(0xA, payload, masked=False))
            elif opcode == 0x8:
                self.transport.write(ws_frame(0x8, payload[:2], masked=False))
                self.transport.close()

    def on_audio(self, payload: bytes) -> None:
        """Each whole 20 ms block of the message (our edge sends one per message, pipecat two;
        filled-in silence has no tag) is matched to the frame it carries, by its tag."""
        now = time.perf_counter()
        caller = self.caller
        if caller is None:
            return
        block = 640 if self.pcm16 else 160
        start = len(payload) % block
        for at in range(start, len(payload), block):
            tag = self.tag_of(payload, at)
            if tag >= 0:
                self.on_frame(caller, tag, now)

    def tag_of(self, payload: bytes, at: int) -> int:
        """The tag most probes of the block at ``at`` read, -1 if none (e.g. silence)."""
        votes = [0] * 32
        for probe in TAG_PROBES:
            if self.pcm16:
                i = at + 4 * probe  # 16 kHz: two samples per 8 kHz sample, two bytes each
                tag = LEVEL_TO_TAG.get(int.from_bytes(payload[i : i + 2], "little", signed=True))
            else:
                tag = CODE_TO_TAG.get(payload[at + probe])
            if tag is not None:
                votes[tag] += 1
        best = max(range(32), key=votes.__getitem__)
        return best if votes[best] * 2 > len(TAG_PROBES) else -1

    def on_frame(self, caller: Caller, tag: int, now: float) -> None:
        stats = self.server.stats
        sent = caller.sent_at
        k = self.expect
        if k < 0 or k >= len(sent) or k % 32 != tag:
            if k >= 0:
                stats.tag_mismatches += 1
            # (Re)align: the newest frame sent with this tag.
            k = len(sent) - 1
            while k >= 0 and k % 32 != tag:
                k -= 1
            if k < 0:
                return
        self.expect = k + 1
        stats.frames_received += 1
        start, end = stats.window
        if start <= sent[k] < end:
            stats.latencies.append((now - sent[k]) * 1000)


class FakeVapi:
    def __init__(self, port: int, pcm16: bool, stats: Stats, echo: bool) -> None:
        self.port = port
        self.echo = echo
        self.pcm16 = pcm16
        self.stats = stats
        self.callers: dict[str, Caller] = {}
        self.all_bridged = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: VapiConnection(self), "127.0.0.1", self.port, backlog=2048
        )


def proc_tree(pid: int) -> list[int]:
    """``pid`` and its descendants: the edge's supervisor and workers (EDGE_WORKERS > 1)."""
    pids, at = [pid], 0
    while at < len(pids):
        for children in Path(f"/proc/{pids[at]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids += [int(child) for child in children.read_text().split()]
        at += 1
    return pids


def proc_cpu_s(pids: list[int]) -> float:
    """CPU time (user + system) summed over ``pids``; a process gone since counts nothing."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def proc_runq_wait_s(pids: list[int]) -> float:
    """Time runnable but waiting for a CPU (schedstat), summed: contention, not work."""
    try:
        return sum(int(Path(f"/proc/{p}/schedstat").read_text().split()[1]) for p in pids) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def proc_rss_kb(pids: list[int]) -> int:
    """Resident memory summed over ``pids`` (shared pages count once per process)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def listeners(port: int) -> int:
    """Sockets listening on ``port`` (this network namespace)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                count += int(local.rsplit(":", 1)[1], 16) == port and state == "0A"
    return count


async def ticker(callers: list[Caller], stop: asyncio.Event) -> None:
    """Every 2 ms, the callers of one send phase send their next frame (catching up if late)."""
    loop = asyncio.get_running_loop()
    step = FRAME_S / BUCKETS
    t0 = loop.time()
    tick = 0
    while not stop.is_set():
        due = t0 + tick * step
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        for caller in callers[tick % BUCKETS :: BUCKETS]:
            if caller.sending:
                caller.send_media()
        tick += 1


def proc_fds(pids: list[int]) -> int:
    """Open descriptors summed over ``pids``."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


async def sample_edge(
    args: argparse.Namespace, edge: list[int], callers: list[Caller], stats: Stats, wall0: float
) -> None:
    """The soak's time series (benchmarks/soak_edge.py): every ``--sample-s`` through the
    window, one JSON line to ``--samples``: the edge's CPU % of a core over the interval, RSS,
    open descriptors, frames sent and received so far, and the interval's latency p50/p99."""
    cpu_prev, t_prev, lat_at = proc_cpu_s(edge), wall0, 0
    with open(args.samples, "w") as out:  # noqa: ASYNC230  (one small write per interval)
        while (now := time.perf_counter()) < wall0 + args.window:
            await asyncio.sleep(min(args.sample_s, wall0 + args.window - now))
            now, cpu = time.perf_counter(), proc_cpu_s(edge)
            window = np.array(stats.latencies[lat_at:] or [np.nan])
            lat_at = len(stats.latencies)
            row = {
                "t_s": round(now - wall0, 2),
                "cpu_pct": round((cpu - cpu_prev) / (now - t_prev) * 100, 2),
                "rss_mb": round(proc_rss_kb(edge) / 1024, 2),
                "fds": proc_fds(edge),
                "frames_sent": sum(len(c.sent_at) for c in callers),
                "frames_received": stats.frames_received,
                "p50_ms": round(float(np.percentile(window, 50)), 3),
                "p99_ms": round(float(np.percentile(window, 99)), 3),
            }
            out.write(json.dumps(row) + "\n")
            out.flush()
            cpu_prev, t_prev = cpu, now


async def loadgen(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats()
    vapi = FakeVapi(args.vapi_port, args.mode == "pcm16", stats, echo=not args.no_echo)
    await vapi.start()
    loop = asyncio.get_running_loop()
    public_url = f"ws://127.0.0.1:{args.edge_port}"
    edge = proc_tree(args.edge_pid)  # the supervisor's workers are up before the load starts
    rss0 = proc_rss_kb(edge)
    callers: list[Caller] = []
    stop = asyncio.Event()
    tick_task = asyncio.create_task(ticker(callers, stop))
    ramp = max(1.0, args.calls / 50)  # 50 new calls per second
    for i in range(args.calls):
        caller = Caller(i, args.edge_port, public_url, stats)
        vapi.callers[caller.call_sid] = caller
        callers.append(caller)
        await loop.create_connection(functools.partial(_same, caller), "127.0.0.1", args.edge_port)
        await asyncio.sleep(ramp / args.calls)
    # Audio starts once every call is bridged (media before that is dropped by design), all
    # at once but spread over the 10 send phases; the ramp itself stays cheap and reliable.
    with contextlib.suppress(TimeoutError):  # well inside the edge's 30 s idle timeout
        async with asyncio.timeout(12):
            await vapi.all_bridged.wait()
    await asyncio.sleep(0.5)
    live = [c for c in callers if c.bridged]
    for caller in live:
        caller.sending = True
    await asyncio.sleep(3.0)  # settle: first frames, resampler and playout warm-up
    cpu0, me0, wall0 = proc_cpu_s(edge), time.process_time(), time.perf_counter()
    mono0 = time.monotonic()  # the edge's +gcstats pauses are on this (system-wide) clock
    each0 = [proc_cpu_s([pid]) for pid in edge]
    wait0 = proc_runq_wait_s(edge)
    stats.window = (wall0, wall0 + args.window)
    sent0 = sum(len(c.sent_at) for c in callers)
    if args.samples:
        await sample_edge(args, edge, callers, stats, wall0)
    else:
        await asyncio.sleep(args.window)
    wall1, mono1 = time.perf_counter(), time.monotonic()
    cpu1, me1 = proc_cpu_s(edge), time.process_time()
    each1 = [proc_cpu_s([pid]) for pid in edge]
    wait1 = proc_runq_wait_s(edge)
    rss1 = proc_rss_kb(edge)
    stats.frames_sent = sum(len(c.sent_at) for c in callers) - sent0
    await asyncio.sleep(0.5)  # the last frames in flight
    stop.set()
    await tick_task
    await asyncio.sleep(1.0)  # every frame sent has arrived (or is lost)
    received_all = stats.frames_received
    sent_all = sum(len(c.sent_at) for c in live)
    for caller in callers:
        caller.stop()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await asyncio.gather(*(c.closed.wait() for c in callers))
    lat = np.array(stats.latencies) if stats.latencies else np.array([np.nan])
    elapsed = wall1 - wall0
    return {
        "mode": args.mode,
        "calls": args.calls,
        "bridged": stats.bridged,
        "rejected": stats.rejected,
        "window_s": round(elapsed, 2),
        "window_monotonic": [mono0, mono1],
        "edge_processes": len(edge),  # the supervisor and its workers are summed
        "edge_cpu_pct": round((cpu1 - cpu0) / elapsed * 100, 1),
        "edge_cpu_pct_per_call": round((cpu1 - cpu0) / elapsed * 100 / max(1, len(live)), 4),
        # Per process, supervisor first then workers in pid order (EDGE_WORKERS > 1): the spread.
        "edge_cpu_pct_by_process": [
            round((b - a) / elapsed * 100, 1) for a, b in zip(each0, each1, strict=True)
        ],
        "edge_runq_wait_pct": round((wait1 - wait0) / elapsed * 100, 1),
        "edge_rss_mb": round(rss1 / 1024, 1),
        "edge_rss_kb_per_call": round((rss1 - rss0) / max(1, len(live)), 1),
        "loadgen_cpu_pct": round((me1 - me0) / elapsed * 100, 1),
        "frames_sent": stats.frames_sent,
        "frames_sent_total": sent_all,  # the whole run, settling included
        "frames_received_total": received_all,
        "frames_measured": len(stats.latencies),
        "tag_mismatches": stats.tag_mismatches,
        "twilio_media_in": stats.twilio_media_in,
        "marks_echoed": stats.marks_echoed,
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p90_ms": round(float(np.percentile(lat, 90)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "max_ms": round(float(np.max(lat)), 3),
    }


# ---------------------------------------------------------------------------------------------
# The naive relay: the floor (JSON -> base64 -> forward both ways; no checks, DSP or pacing)


async def naive_relay(port: int, vapi_base: str) -> None:
    import httpx
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve

    client = httpx.AsyncClient()

    async def handle(twilio: ServerConnection) -> None:
        vapi = None
        stream_sid = ""
        reader = None

        async def from_vapi() -> None:
            assert vapi is not None
            async for data in vapi:
                if isinstance(data, bytes):
                    payload = base64.b64encode(data).decode()
                    await twilio.send(
                        json.dumps(
                            {
                                "event": "media",
                                "streamSid": stream_sid,
                                "media": {"payload": payload},
                            }
                        )
                    )

        try:
            async for raw in twilio:
                message = json.loads(raw)
                event = message.get("event")
                if event == "media" and vapi is not None:
                    await vapi.send(base64.b64decode(message["media"]["payload"]))
                elif event == "start":
                    stream_sid = message["streamSid"]
                    body = {
                        "assistantOverrides": {"metadata": {"callSid": message["start"]["callSid"]}}
                    }
                    answer = (
                        await client.post(
                            f"{vapi_base}/call",
                            json=body,
                            headers={"Authorization": f"Bearer {VAPI_KEY}"},
                        )
                    ).json()
                    vapi = await connect(answer["transport"]["websocketCallUrl"], compression=None)
                    reader = asyncio.create_task(from_vapi())
                elif event == "stop":
                    break
        finally:
            if vapi is not None:
                await vapi.close()
            if reader is not None:
                reader.cancel()

    def health(connection: Any, request: Any) -> Any:
        if request.path == "/health":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return None

    async with serve(handle, "127.0.0.1", port, compression=None, process_request=health):
        await asyncio.Future()


async def naive_relay_picows(port: int, vapi_base: str) -> None:
    """The same relay on picows (Cython WebSocket framing) under uvloop: what a compiled
    WebSocket layer alone would give, to say what reaching the per-call target would take."""
    import httpx
    from picows import (
        WSFrame,
        WSListener,
        WSMsgType,
        WSTransport,
        WSUpgradeRequest,
        WSUpgradeResponse,
        WSUpgradeResponseWithListener,
        ws_connect,
        ws_create_server,
    )

    client = httpx.AsyncClient()

    class FromVapi(WSListener):
        def __init__(self, twilio: WSTransport, stream_sid: str) -> None:
            self.twilio, self.stream_sid = twilio, stream_sid

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.BINARY:
                payload = base64.b64encode(frame.get_payload_as_bytes()).decode()
                message = {
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {"payload": payload},
                }
                self.twilio.send(WSMsgType.TEXT, json.dumps(message).encode())

    class FromTwilio(WSListener):
        vapi: WSTransport | None = None

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type != WSMsgType.TEXT:
                return
            message = json.loads(frame.get_payload_as_bytes())
            event = message.get("event")
            if event == "media" and self.vapi is not None:
                self.vapi.send(WSMsgType.BINARY, base64.b64decode(message["media"]["payload"]))
            elif event == "start":
                asyncio.get_running_loop().create_task(self.connect(message))
            elif event == "stop":
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if self.vapi is not None:
                self.vapi.disconnect()

        async def connect(self, message: dict[str, Any]) -> None:
            body = {"assistantOverrides": {"metadata": {"callSid": message["start"]["callSid"]}}}
            headers = {"Authorization": f"Bearer {VAPI_KEY}"}
            answer = (await client.post(f"{vapi_base}/call", json=body, headers=headers)).json()
            stream_sid = message["streamSid"]
            vapi, _ = await ws_connect(
                lambda: FromVapi(self.transport, stream_sid),
                answer["transport"]["websocketCallUrl"],
            )
            self.vapi = vapi

    def factory(request: WSUpgradeRequest) -> Any:
        if request.path == b"/health":
            response = WSUpgradeResponse.create_ok_response(b"ok\n")
            return WSUpgradeResponseWithListener(response, None)
        return FromTwilio()

    server = await ws_create_server(factory, "127.0.0.1", port)
    async with server:
        await asyncio.Future()


# ---------------------------------------------------------------------------------------------
# In-process cost of one frame through the sans-I/O core (no sockets): CPU time, so it holds on
# a shared machine where the socket-level latencies above do not.


def _core_frame_costs(fmt: str, setup: list[str], media_text: str, cpu_us: Any) -> dict[str, float]:
    from media_edge.core import Call, CallConfig
    from media_edge.core.events import ClaimOutcome, StreamClaimed, VapiAudio, VapiConnected
    from media_edge.protocol import twilio as twilio_protocol

    config = CallConfig(TOKEN_SECRET, ACCOUNT_SID, audio_format=fmt)
    call = Call(config, now=0.0, epoch_offset_s=time.time())
    for text in setup:
        call.feed(twilio_protocol.parse(text), 0.0)
    call.feed(StreamClaimed(ClaimOutcome.CLAIMED), 0.0)
    call.feed(VapiConnected("bench"), 0.0)
    frame = bytes(160) if fmt == "mulaw" else bytes(640)
    clock = [0.0]

    def inbound() -> None:
        clock[0] += 20.0
        text = media_text.replace('"timestamp":"0"', f'"timestamp":"{int(clock[0])}"')
        call.feed(twilio_protocol.parse(text), clock[0])

    def outbound() -> None:
        clock[0] += 20.0
        call.feed(VapiAudio(frame), clock[0])

    return {
        "Twilio media: parse (JSON + base64 + checks)": cpu_us(
            lambda: twilio_protocol.parse(media_text)
        ),
        "Twilio media: parse + Call.feed (gap fill, VAD, convert)": cpu_us(inbound),
        "Vapi audio: Call.feed (frame, pace, media JSON, marks)": cpu_us(outbound),
    }


def core_costs(number: int = 20000) -> str:
    def cpu_us(fn: Any) -> float:
        fn()
        runs = []
        for _ in range(5):
            start = time.process_time()
            for _ in range(number):
                fn()
            runs.append((time.process_time() - start) / number * 1e6)
        return float(np.median(runs))

    caller = Caller.__new__(Caller)  # only for its message texts
    caller.stream_sid, caller.call_sid, caller.sent_at = "MZ" + "0" * 32, "CA" + "0" * 32, []
    texts: list[str] = []
    caller.send_text = texts.append  # type: ignore[method-assign,assignment]
    caller.start()
    caller.send_media()
    media_text = texts[-1]
    rows = ["| per 20 ms frame | mulaw µs | pcm16 µs |", "|---|---:|---:|"]
    cells: dict[str, list[float]] = {}
    for fmt in ("mulaw", "pcm16"):
        costs = _core_frame_costs(fmt, texts[:2], media_text, cpu_us)
        for name, value in costs.items():
            cells.setdefault(name, []).append(value)
    naive_in = cpu_us(lambda: base64.b64decode(json.loads(media_text)["media"]["payload"]))
    naive_out = cpu_us(
        lambda: json.dumps(
            {
                "event": "media",
                "streamSid": "MZ",
                "media": {"payload": base64.b64encode(bytes(160)).decode()},
            }
        )
    )
    rows += [f"| {name} | {a:.1f} | {b:.1f} |" for name, (a, b) in cells.items()]
    rows.append(f"| naive relay, in: `json.loads` + `b64decode` | {naive_in:.1f} | |")
    rows.append(f"| naive relay, out: `b64encode` + `json.dumps` | {naive_out:.1f} | |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# Orchestration


def _same(value: Any) -> Any:
    """A protocol factory that hands back the caller object it was given."""
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(pid: int, cpu: int) -> None:
    count = os.cpu_count()
    if hasattr(os, "sched_setaffinity") and count and count > cpu:
        os.sched_setaffinity(pid, {cpu})


def edge_workers(variant: str) -> int:
    """``+w2`` -> 2 (EDGE_WORKERS); 1 without such a suffix."""
    counts = [int(flag[1:]) for flag in variant_flags(variant) if flag[:1] == "w"]
    return counts[0] if counts else 1


def source_tree(variant: str, log_dir: Path) -> Path:
    """Where the variant's edge runs from: this checkout, or with ``@REV`` that revision's
    ``media_edge`` + ``voicebridge`` (``git archive``), for an A/B of one change in one run;
    with ``+mypyc`` (or ``shipped``) the build infra/edge_compile.py makes of it, exactly as
    the image's builder stage does."""
    _, _, rev = variant.partition("@")
    root = ROOT
    if rev:
        sha = subprocess.run(  # noqa: S603
            ["git", "rev-parse", "--short=12", rev],  # noqa: S607
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        root = log_dir / f"rev-{sha}"
        if not (root / "media_edge").is_dir():
            root.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(  # noqa: S603
                ["git", "archive", sha, "media_edge", "voicebridge"],  # noqa: S607
                cwd=ROOT,
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)  # noqa: S603, S607
    if "mypyc" not in variant_flags(variant):
        return root
    from infra import edge_compile

    label = root.name if rev else "worktree"
    return edge_compile.build(log_dir / f"compiled-{label}", root=root)


def variant_flags(variant: str) -> set[str]:
    """``shipped`` is what the image runs: the compiled build on uvloop (its defaults)."""
    name, *flags = variant.partition("@")[0].split("+")
    return {*flags, "mypyc", "uvloop"} if name == "shipped" else set(flags)


def start_edge(
    variant: str, port: int, vapi_port: int, log: Path, aws: dict[str, str]
) -> subprocess.Popen[bytes]:
    python = sys.executable
    flags = variant_flags(variant)
    workers = edge_workers(variant)
    if variant.startswith("naive"):  # naive (websockets) or naive-picows
        argv = [
            python,
            "-m",
            "benchmarks.edge",
            "--naive-relay",
            str(port),
            f"http://127.0.0.1:{vapi_port}",
            *(["--picows"] if variant == "naive-picows" else []),
        ]
    elif variant.startswith("pipecat"):  # pipecat, or pipecat-novad (without Silero)
        argv = [python, "-m", "benchmarks.pipecat_peer", str(port), f"http://127.0.0.1:{vapi_port}"]
        argv += ["--no-vad"] if variant == "pipecat-novad" else []
    else:
        argv = [python, "-m", "media_edge"]
    env = {**os.environ, **aws}  # the claims table (embedded AWS) and its credentials
    env.update(
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        VAPI_API_KEY=VAPI_KEY,
        VAPI_BASE_URL=f"http://127.0.0.1:{vapi_port}",
        EDGE_PUBLIC_URL=f"ws://127.0.0.1:{port}",
        STREAM_TOKEN_SECRET=TOKEN_SECRET,
        EDGE_AUDIO_FORMAT="pcm16" if variant.startswith("pcm16") else "mulaw",
        # The edge's packages come from its working directory (source_tree); +gcstats adds
        # benchmarks/gcstats (a sitecustomize timing every collection) and nothing else.
        PYTHONPATH=str(ROOT / "benchmarks" / "gcstats") if "gcstats" in flags else "",
        VB_GC_STATS=str(log.with_suffix(".gc.json")),
        RECORDINGS_BUCKET=aws.get("RECORDINGS_BUCKET", "") if "record" in flags else "",
        EDGE_HOST="127.0.0.1",
        EDGE_PORT=str(port),
        EDGE_MAX_CALLS="5000",
        DRAIN_SECONDS="0",
        POWERTOOLS_LOG_LEVEL="WARNING",
        EDGE_WORKERS=str(workers),
        EDGE_UVLOOP=str("uvloop" in flags).lower(),  # the edge's own switch: asyncio without it
    )
    log.with_suffix(".gc.json").unlink(missing_ok=True)
    with log.open("wb") as out:
        cwd = ROOT if variant.startswith(("naive", "pipecat")) else source_tree(variant, log.parent)
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
    if workers == 1:
        pin(proc.pid, 0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        # The one process (or the supervisor, which holds connections until a worker is up).
        if listeners(port) and len(proc_tree(proc.pid)) > (workers if workers > 1 else 0):
            url = f"http://127.0.0.1:{port}/health"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    if workers > 1:
                        for cpu, worker in enumerate(sorted(proc_tree(proc.pid)[1:])):
                            pin(worker, cpu)
                    return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"edge ({variant}) did not start; see {log}")


def run_point(
    variant: str,
    calls: int,
    window: float,
    log_dir: Path,
    aws: dict[str, str],
    echo: bool = True,
    samples: tuple[Path, float] | None = None,
) -> dict[str, Any]:
    """One point; ``samples=(path, every_s)`` also writes the soak's time series."""
    edge_port, vapi_port = free_port(), free_port()
    log = log_dir / f"edge-{variant}-{calls}.log"
    edge = start_edge(variant, edge_port, vapi_port, log, aws)
    try:
        argv = [
            sys.executable,
            "-m",
            "benchmarks.edge",
            "--loadgen",
            "--mode",
            "pcm16" if variant.startswith("pcm16") else "mulaw",
            "--calls",
            str(calls),
            "--window",
            str(window),
            "--edge-port",
            str(edge_port),
            "--vapi-port",
            str(vapi_port),
            "--edge-pid",
            str(edge.pid),
            *([] if echo else ["--no-echo"]),
            *(["--samples", str(samples[0]), "--sample-s", str(samples[1])] if samples else []),
        ]
        gen = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE)  # noqa: S603
        if edge_workers(variant) == 1:  # with workers on every CPU, pinning it would only hurt
            pin(gen.pid, 1)
        out, _ = gen.communicate(timeout=window + calls / 50 + 60)
        result = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        edge.send_signal(signal.SIGTERM)
        try:
            edge.wait(timeout=15)
        except subprocess.TimeoutExpired:
            edge.kill()
            edge.wait()
    result["variant"] = variant
    gc_stats = log_dir / f"edge-{variant}-{calls}.gc.json"
    if "gcstats" in variant_flags(variant) and gc_stats.is_file():
        start, end = result["window_monotonic"]
        pauses = [(g, ms) for t, g, ms in json.loads(gc_stats.read_text()) if start <= t < end]
        result["gc_in_window"] = {
            f"gen{gen}": {
                "count": len(mine := [ms for g, ms in pauses if g == gen]),
                "total_ms": round(sum(mine), 2),
                "max_ms": round(max(mine, default=0.0), 2),
            }
            for gen in (0, 1, 2)
        }
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | calls (bridged) | edge CPU % of a core | % per call | frames delivered "
        "| p50 ms | p99 ms | max ms | RSS MB | KB per call | load-gen CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        delivered = r["frames_measured"] / max(1, r["frames_sent"]) * 100
        lines.append(
            f"| {r['variant']} | {r['calls']} ({r['bridged']}) | {r['edge_cpu_pct']} "
            f"| {r['edge_cpu_pct_per_call']} | {delivered:.0f} % | {r['p50_ms']} | {r['p99_ms']} "
            f"| {r['max_ms']} | {r['edge_rss_mb']} | {r['edge_rss_kb_per_call']} "
            f"| {r['loadgen_cpu_pct']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 100, 250])
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["naive", "pipecat", "shipped", "mulaw+uvloop"],
    )
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-echo", action="store_true", help="fake Vapi stays silent")
    parser.add_argument("--core", action="store_true", help="only the in-process core costs")
    parser.add_argument("--mode", default="mulaw", help=argparse.SUPPRESS)
    parser.add_argument("--edge-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--vapi-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--edge-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--naive-relay", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--picows", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--samples", help=argparse.SUPPRESS)  # the soak's time series file
    parser.add_argument("--sample-s", type=float, default=10.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_relay:
        port, vapi_base = int(args.naive_relay[0]), args.naive_relay[1]
        if args.picows:
            import uvloop

            uvloop.run(naive_relay_picows(port, vapi_base))
        else:
            asyncio.run(naive_relay(port, vapi_base))
        return
    if args.loadgen:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        args.calls = args.calls[0]
        print(json.dumps(asyncio.run(loadgen(args))))
        return
    if args.core:
        print(core_costs())
        return
    log_dir = Path(tempfile.gettempdir()) / "voicebridge-bench-edge"
    log_dir.mkdir(parents=True, exist_ok=True)
    from infra.local_aws import embedded_aws

    results = []
    with embedded_aws(prefix="bench-edge") as aws:
        for calls in args.calls:
            for variant in args.variants:
                echo = not args.no_echo
                result = run_point(variant, calls, args.window, log_dir, aws, echo=echo)
                result["echo"] = echo
                print(json.dumps(result), flush=True)
                results.append(result)
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
