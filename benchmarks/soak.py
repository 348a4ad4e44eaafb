"""Edge soak: RSS and open file descriptors of one edge process over many calls.

``python -m media_edge`` runs as its own process (uvloop, as deployed), with the local stack's
Vapi emulator and its embedded AWS (the stream-claim table) in this process. Lightweight
Twilio-speaking callers (signed upgrade, ``connected`` + ``start`` with a minted token, then
real-time media: silence while the greeting plays, one utterance, silence for the reply, marks
echoed, ``stop``) place ``--calls`` calls, ``--concurrency`` at a time. Every ``--every`` calls the
edge's VmRSS (/proc/<pid>/status) and open fds (/proc/<pid>/fd) are sampled; the last row is
taken once every call has ended. What matters is the slope, not the absolute: RSS and fds do
not depend on CPU speed, so this needs no quiet machine.

    python -m benchmarks.soak [--calls 1000] [--concurrency 20] [--every 100] [--edge-tree DIR]

``--edge-tree`` runs the edge from another checkout (e.g. ``git worktree`` of an older commit)
with the same callers and emulator: an A/B of two versions' memory over the same calls.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from infra.audio import sample, ulaw_encode
from infra.local_aws import embedded_aws
from infra.vapi_emulator import Script, VapiEmulator
from voicebridge import stream_token
from voicebridge.twilio_signature import sign

ROOT = Path(__file__).resolve().parent.parent
AUTH_TOKEN = "soak-twilio-auth-token"
ACCOUNT_SID = "AC" + "5" * 32
TOKEN_SECRET = "soak-stream-token-secret"
VAPI_KEY = "soak-vapi-key"
PUBLIC_URL = "wss://edge.soak.example"
FRAME = 160  # 20 ms of mu-law
SCRIPT = Script(greeting_ms=600, think_ms=100, end_of_turn_ms=300, reply_max_ms=600)
SILENCE = b"\xff" * FRAME


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_process(pid: int) -> tuple[float, int]:
    """(VmRSS in MB, open fds) of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def start_edge(env: dict[str, str], tree: Path) -> subprocess.Popen[bytes]:
    """``python -m media_edge`` from ``tree``, its output (JSON logs, EMF) in a temp file."""
    log = Path(tempfile.gettempdir()) / "voicebridge-soak-edge.log"
    with log.open("wb") as out:
        argv = [sys.executable, "-m", "media_edge"]
        env = {**env, "PYTHONPATH": str(tree)}
        return subprocess.Popen(argv, cwd=tree, env=env, stdout=out, stderr=out)  # noqa: S603


@dataclass
class Tally:
    done: int = 0
    bridged: int = 0  # the caller heard the assistant
    clean: int = 0  # ... and the edge closed the stream with NORMAL_CLOSURE after our stop
    failures: list[str] = field(default_factory=list)


def caller_frames() -> list[bytes]:
    """What one caller sends: 0.8 s silence (the greeting), 1 s of speech, 1 s for the reply."""
    speech = ulaw_encode(sample("caller_utterance")[:8000])
    talk = [speech[i : i + FRAME] for i in range(0, len(speech), FRAME)]
    return [SILENCE] * 40 + talk + [SILENCE] * 50


async def one_call(
    port: int, index: int, assistant_id: str, frames: list[bytes], tally: Tally
) -> None:
    call_sid = f"CA{os.getpid():08x}{index:024x}"
    stream_sid = f"MZ{index:032x}"
    headers = {"X-Twilio-Signature": sign(AUTH_TOKEN, PUBLIC_URL + "/media")}
    heard = 0
    try:
        async with connect(
            f"ws://127.0.0.1:{port}/media", additional_headers=headers, compression=None
        ) as ws:

            async def read() -> None:
                nonlocal heard
                with contextlib.suppress(ConnectionClosed):
                    async for raw in ws:
                        message = json.loads(raw)
                        if message["event"] == "media":
                            heard += 1
                        elif message["event"] == "mark":
                            await ws.send(raw)  # played at once: Twilio's echo

            reader = asyncio.create_task(read())
            token = stream_token.mint(TOKEN_SECRET, call_sid, assistant_id, time.time(), 120)
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
            start = {
                "accountSid": ACCOUNT_SID,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"token": token, "from": "+15550001111"},
            }
            await ws.send(json.dumps({"event": "start", "streamSid": stream_sid, "start": start}))
            began = time.monotonic()
            for n, frame in enumerate(frames):
                payload = base64.b64encode(frame).decode()
                media = {"timestamp": str(n * 20), "payload": payload}
                await ws.send(
                    json.dumps({"event": "media", "streamSid": stream_sid, "media": media})
                )
                await asyncio.sleep(max(0.0, began + (n + 1) * 0.02 - time.monotonic()))
            await ws.send(json.dumps({"event": "stop", "streamSid": stream_sid, "stop": {}}))
            async with asyncio.timeout(10):
                await reader
            code = ws.close_code
    except (OSError, ConnectionClosed, TimeoutError) as exc:
        tally.failures.append(f"{call_sid}: {type(exc).__name__}: {exc}")
        code = None
    tally.done += 1
    tally.bridged += heard > 0
    tally.clean += heard > 0 and code == CloseCode.NORMAL_CLOSURE


async def soak(
    calls: int, concurrency: int, every: int, tree: Path = ROOT
) -> tuple[list[dict[str, Any]], Tally]:
    with embedded_aws(prefix=f"soak-{os.getpid()}") as aws:
        vapi = VapiEmulator(VAPI_KEY, script=SCRIPT)
        vapi_url = await vapi.start()
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                f"{vapi_url}/assistant",
                json={"name": "soak", "firstMessage": "Hello, thanks for calling."},
                headers={"Authorization": f"Bearer {VAPI_KEY}"},
            )
            assistant_id = answer.json()["id"]
        port = free_port()
        env = {
            **os.environ,
            **aws,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_API_BASE": "http://127.0.0.1:9",  # never called: no call fails
            "VAPI_API_KEY": VAPI_KEY,
            "VAPI_BASE_URL": vapi_url,
            "EDGE_PUBLIC_URL": PUBLIC_URL,
            "STREAM_TOKEN_SECRET": TOKEN_SECRET,
            "EDGE_HOST": "127.0.0.1",
            "EDGE_PORT": str(port),
            "EDGE_MAX_CALLS": str(concurrency * 2),
            "DRAIN_SECONDS": "0",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
        edge = start_edge(env, tree)
        rows: list[dict[str, Any]] = []
        tally = Tally()
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(200):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                            break
                    await asyncio.sleep(0.05)
            frames = caller_frames()

            def snapshot(label: str) -> None:
                rss, fds = sample_process(edge.pid)
                live = vapi.active_calls
                rows.append({"calls": label, "rss_mb": rss, "fds": fds, "live": live})
                print(
                    f"{label:>10} calls  RSS {rss:6.1f} MB  fds {fds:4d}  live {live}", flush=True
                )

            snapshot("0")
            gate = asyncio.Semaphore(concurrency)
            next_sample = every

            async def placed(index: int) -> None:
                nonlocal next_sample
                async with gate:
                    await one_call(port, index, assistant_id, frames, tally)
                if tally.done >= next_sample:
                    next_sample += every
                    snapshot(str(tally.done))

            await asyncio.gather(*(placed(i) for i in range(calls)))
            await asyncio.sleep(2.0)  # every call's teardown done; sockets closed
            snapshot(f"{calls} idle")
        finally:
            edge.terminate()
            edge.wait(timeout=30)
            await vapi.stop()
    return rows, tally


def markdown(rows: list[dict[str, Any]], tally: Tally, calls: int, concurrency: int) -> str:
    base = rows[1] if len(rows) > 2 else rows[0]  # after the first batch: imports, pools warm
    lines = [
        f"{calls} calls, {concurrency} at a time; {tally.bridged} bridged, "
        f"{tally.clean} ended cleanly, {len(tally.failures)} failed",
        "",
        "| calls done | edge RSS MB | vs first sample | open fds | Vapi calls live |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = row["rss_mb"] / base["rss_mb"]
        lines.append(
            f"| {row['calls']} | {row['rss_mb']:.1f} | {ratio:.3f} | {row['fds']} | {row['live']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--edge-tree", type=Path, default=ROOT, help="run this checkout's edge")
    args = parser.parse_args()
    rows, tally = asyncio.run(soak(args.calls, args.concurrency, args.every, args.edge_tree))
    for failure in tally.failures[:10]:
        print("failed:", failure)
    print()
    print(markdown(rows, tally, args.calls, args.concurrency))


if __name__ == "__main__":
    main()
