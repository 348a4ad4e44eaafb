"""``make run`` (python -m infra.local): serves, then stops cleanly on Ctrl-C."""

import os
import signal
import subprocess
import sys
import time

import httpx

from infra.asgi import bind
from voicebridge.config import ENV_NAMES


def free_ports(count):
    """Distinct free ports (all held open while choosing, so no two are the same)."""
    socks = [bind() for _ in range(count)]
    try:
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def start_stack(stderr, *args):
    """``python -m infra.local`` on two free ports; returns it with its banner once ready."""
    api_port, edge_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    env.update({"API_PORT": str(api_port), "EDGE_PORT": str(edge_port), "PYTHONUNBUFFERED": "1"})
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    banner = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            process.kill()
            raise AssertionError("infra.local exited before it was ready")
        banner.append(line)
        if "voicebridge call" in line:
            break
    return process, api_port, edge_port, "".join(banner)


def test_make_run_serves_and_stops_on_ctrl_c():
    process, api_port, edge_port, text = start_stack(subprocess.PIPE)
    try:
        assert f"http://127.0.0.1:{api_port}" in text, text
        assert f"ws://127.0.0.1:{edge_port}/media" in text, text
        assert httpx.get(f"http://127.0.0.1:{api_port}/health").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{edge_port}/health").status_code == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in out + err
    assert "stopped." in out


def test_a_killed_stack_leaves_no_orphaned_children():
    process, api_port, _, _ = start_stack(subprocess.DEVNULL)
    try:
        assert httpx.get(f"http://127.0.0.1:{api_port}/health").status_code == 200
    finally:
        process.kill()  # no chance to stop its children in order
        process.communicate()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=0.5)
        except httpx.TransportError:
            break  # the API child died with its parent
        time.sleep(0.2)
    else:
        raise AssertionError("the API process outlived the killed stack")
