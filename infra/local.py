"""The whole product on one machine, no accounts: ``python -m infra.local`` (``make run``).

- embedded AWS (moto on loopback) with the template's tables and queues;
- the API (``functions.api:app``) under uvicorn in its own process, like its own Lambda;
- the worker loop (``infra.worker_loop``) in its own process: SQS long-poll -> the real handler;
- the media edge (``media_edge.server.EdgeServer``) and the Vapi + Twilio REST emulators on an
  event loop in this process, so tests can look inside (live sessions, tasks).

``LocalStack`` is the library form (a context manager; ports 0 in tests). Secrets are generated
per run; ``VAPI_API_KEY`` in the environment switches to the real Vapi (no emulator).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from infra.asgi import bind
from infra.local_aws import FAKE_CREDENTIALS, embedded_aws
from infra.local_output import render as render_line
from infra.runtime import ChildProcess, EmfHook, EmfSink, LoopThread, StdoutTap
from infra.twilio_emulator import TwilioEmulator
from infra.vapi_emulator import Script, VapiEmulator
from voicebridge.config import ENV_NAMES, load_settings

LOCAL_NUMBER = "+15550100002"  # the simulated Twilio number, bound to the local assistant
CALLER_NUMBER = "+15550100001"
ASSISTANT = {
    "name": "voicebridge local",
    "systemPrompt": "You are the voicebridge demo assistant. Be brief and friendly.",
    "firstMessage": "Hello, thanks for calling. How can I help?",
    "tools": ["end_call", "order_status"],
}


@dataclass
class StackOptions:
    api_port: int = 8000
    edge_port: int = 8080
    script: Script = field(default_factory=Script)
    quiet: bool = False  # don't echo component logs (tests, the demo)
    json_logs: bool = False  # echo the raw JSON logs and EMF lines instead of one line per event
    environ: dict[str, str] | None = None  # voicebridge settings; None: this environment's
    overrides: dict[str, str] = field(default_factory=dict)  # e.g. EDGE_IDLE_TIMEOUT_SECONDS
    aws_prefix: str = "voicebridge"  # table/queue names; moto's state is per process, so two
    # stacks in one process (tests) need different prefixes
    edge_path: str = ""  # a path prefix in EDGE_PUBLIC_URL (e.g. "/edge": it serves /edge/media)
    # moto in a child process instead of threads of this one (whose GIL the in-process edge
    # needs): AWS is another machine in production; benchmarks that load both want this
    aws_own_process: bool = False
    # queues' VisibilityTimeout instead of the template's (resource name -> s): tests compress
    # SQS's redelivery of what a killed function held, as they compress other waits
    queue_visibility: dict[str, int] = field(default_factory=dict)


class StackError(RuntimeError):
    """A component failed to start (message says which, with its last output lines)."""


class LocalStack:
    """Start everything on ``__enter__``, stop it all (in order) on ``__exit__``."""

    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.env: dict[str, str] = {}
        self.emf = EmfSink()
        self.vapi: VapiEmulator | None = None
        self.twilio: TwilioEmulator | None = None
        self.edge: Any = None
        self.assistant_id = ""
        self.loop: LoopThread | None = None
        self.twilio_loop: LoopThread | None = None
        self._child_env: dict[str, str] = {}
        self._exit = contextlib.ExitStack()
        self._children: list[ChildProcess] = []
        self._render = None if self.options.json_logs else render_line
        self._tap = StdoutTap(self.options.quiet, self._render)
        self._emf_hook = EmfHook(self.emf)

    # -- what callers need --------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.env["PUBLIC_BASE_URL"]

    @property
    def edge_url(self) -> str:
        return self.env["EDGE_PUBLIC_URL"]

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['ADMIN_API_KEY']}"}

    def caller_config(self, **changes: Any) -> Any:
        """A CallerConfig for a call to this stack's number."""
        from infra.caller import CallerConfig

        config = CallerConfig(
            api_url=self.api_url,
            auth_token=self.env["TWILIO_AUTH_TOKEN"],
            account_sid=self.env["TWILIO_ACCOUNT_SID"],
            from_number=CALLER_NUMBER,
            to_number=LOCAL_NUMBER,
            twilio_emulator_url=self.twilio.base_url if self.twilio else None,
        )
        for name, value in changes.items():
            setattr(config, name, value)
        return config

    def get_call(self, call_sid: str) -> tuple[int, Any]:
        response = httpx.get(
            f"{self.api_url}/calls/{call_sid}", headers=self.admin_headers(), timeout=10
        )
        body = (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else response.text
        )
        return response.status_code, body

    def logs(self, name: str) -> list[str]:
        """Recent output of ``api``/``worker``, or ``edge`` (JSON lines printed in-process)."""
        if name == "edge":
            return list(self._tap.lines)
        return next((list(c.lines) for c in self._children if c.name == name), [])

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _start(self) -> None:
        options = self.options
        self._tap.install()
        self._emf_hook.install()
        settings_source = os.environ if options.environ is None else options.environ
        user = {k: v for k, v in settings_source.items() if k in ENV_NAMES}
        base = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}  # PATH, HOME, ...
        aws = self._exit.enter_context(
            embedded_aws(
                prefix=options.aws_prefix,
                own_process=options.aws_own_process,
                visibility=options.queue_visibility,
            )
        )
        generated = {
            "TWILIO_ACCOUNT_SID": f"AC{secrets.token_hex(16)}",
            "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
            "STREAM_TOKEN_SECRET": secrets.token_urlsafe(32),
            "VAPI_WEBHOOK_SECRET": secrets.token_urlsafe(24),
            "ADMIN_API_KEY": secrets.token_urlsafe(24),
            "OUTBOUND_FROM_NUMBER": LOCAL_NUMBER,  # caller ID of calls the assistant places
        }
        env = {**generated, **user, **aws, **options.overrides}
        real_vapi = bool(user.get("VAPI_API_KEY"))
        self.loop = LoopThread("local-stack")
        if not real_vapi:
            env["VAPI_API_KEY"] = f"emulator-{secrets.token_hex(12)}"
            self.vapi = VapiEmulator(
                env["VAPI_API_KEY"],
                webhook_secret=env["VAPI_WEBHOOK_SECRET"],
                script=options.script,
            )
            env["VAPI_BASE_URL"] = self.loop.run(self.vapi.start())
        # Twilio on its own loop: like the real one it runs beside us, and the times its log
        # keeps (calls per second) are not held up by the edge's work.
        self.twilio_loop = LoopThread("twilio-emulator")
        self.twilio = TwilioEmulator(env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"])
        env["TWILIO_API_BASE"] = self.twilio_loop.run(self.twilio.start())
        gateway_sockets = self._bind_gateway(env)
        for name, value in FAKE_CREDENTIALS.items():  # the in-process edge's boto3, to moto
            os.environ.setdefault(name, value)

        api_port = int(env.get("API_PORT", options.api_port))
        api_sock = _bind_or_explain("API_PORT", api_port)
        api_sock.listen(128)
        edge_port = int(env.get("EDGE_PORT", options.edge_port)) or _free_port()
        _bind_or_explain("EDGE_PORT", edge_port).close()  # fail here, in these words
        env.update(
            {
                "API_PORT": str(api_sock.getsockname()[1]),
                "EDGE_PORT": str(edge_port),
                "EDGE_HOST": "127.0.0.1",
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{api_sock.getsockname()[1]}",
                "EDGE_PUBLIC_URL": f"ws://127.0.0.1:{edge_port}{options.edge_path}",
            }
        )
        if not real_vapi:
            env["VAPI_ASSISTANT_ID"] = self._default_assistant(env)
        self.assistant_id = env.get("VAPI_ASSISTANT_ID", "(VAPI_ASSISTANT_ID is not set)")
        self.env = env
        child_env = {**base, **env}

        api = ChildProcess(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "functions.api:app",
                "--fd",
                str(api_sock.fileno()),
                "--log-level",
                "warning",
                "--no-access-log",
                "--lifespan",
                "off",
            ],
            child_env,
            self.emf,
            quiet=options.quiet,
            pass_fds=[api_sock.fileno()],
            render=self._render,
        )
        self._children.append(api)
        api_sock.close()  # the child holds it now
        self._start_gateway(gateway_sockets, child_env)
        self._start_edge(env)
        self._child_env = child_env
        for name in ("worker", "dialer"):
            self._children.append(self._function(name))
        self._wait_healthy(api, f"{self.api_url}/health")
        self._wait_healthy(None, f"http://127.0.0.1:{edge_port}/health")
        if not real_vapi:
            self._bind_number()

    def _default_assistant(self, env: dict[str, str]) -> str:
        """What a user does once in Vapi's dashboard: an assistant whose server URL is us."""
        from functions.assistants import CreateAssistant, vapi_assistant_body

        spec = CreateAssistant.model_validate(ASSISTANT)
        body = vapi_assistant_body(
            spec, f"{env['PUBLIC_BASE_URL']}/vapi/webhook", env["VAPI_WEBHOOK_SECRET"]
        )
        response = httpx.post(
            f"{env['VAPI_BASE_URL']}/assistant",
            json=body,
            headers={"Authorization": f"Bearer {env['VAPI_API_KEY']}"},
            timeout=10,
        )
        if response.status_code != 201:
            raise StackError(f"Vapi emulator refused the default assistant: {response.text}")
        return str(response.json()["id"])

    def _bind_number(self) -> None:
        """Create the local number's assistant through our own admin API (the real path)."""
        response = httpx.post(
            f"{self.api_url}/assistants",
            json={**ASSISTANT, "phoneNumbers": [LOCAL_NUMBER]},
            headers=self.admin_headers(),
            timeout=15,
        )
        if response.status_code == 201:
            self.assistant_id = response.json()["id"]
        else:
            print(
                f"warning: POST /assistants answered {response.status_code}: {response.text[:200]}"
                f" (calls use VAPI_ASSISTANT_ID={self.assistant_id})",
                file=sys.stderr,
            )

    def _function(self, name: str) -> ChildProcess:
        """A Lambda function's SQS event source and handler (``infra.worker_loop``)."""
        return ChildProcess(
            name,
            [sys.executable, "-m", "infra.worker_loop", name],
            self._child_env,
            self.emf,
            quiet=self.options.quiet,
            render=self._render,
        )

    def restart(
        self, name: str, kill: bool = True, while_down: Callable[[], None] | None = None
    ) -> None:
        """Kill (SIGKILL: no cleanup, like a crashed Lambda) and start again a function's loop;
        ``while_down`` runs in between (what happens while no instance is running)."""
        (child,) = [c for c in self._children if c.name == name]
        if kill:
            child.process.kill()
            child.process.wait(10)
        else:
            child.stop()
        if while_down is not None:
            while_down()
        self._children[self._children.index(child)] = self._function(name)

    def _bind_gateway(self, env: dict[str, str]) -> list[socket.socket]:
        """The console's WebSocket API (emulated): its two ports, bound now so every component
        learns its URLs; the process serving them starts with the others."""
        upgrades, management = bind("127.0.0.1", 0), bind("127.0.0.1", 0)
        upgrades.listen(128)
        management.listen(128)
        env["CONSOLE_WS_URL"] = f"ws://127.0.0.1:{upgrades.getsockname()[1]}/live"
        env["CONSOLE_WS_MANAGEMENT_URL"] = f"http://127.0.0.1:{management.getsockname()[1]}/live"
        return [upgrades, management]

    def _start_gateway(self, sockets: list[socket.socket], child_env: dict[str, str]) -> None:
        """``python -m infra.ws_gateway``: API Gateway is its own service, and the handler it
        runs is the gateway Lambda's, configured by its environment as in AWS."""
        upgrades, management = (str(s.fileno()) for s in sockets)
        self._children.append(
            ChildProcess(
                "ws-gateway",
                [
                    sys.executable,
                    "-m",
                    "infra.ws_gateway",
                    "--upgrades-fd",
                    upgrades,
                    "--management-fd",
                    management,
                ],
                child_env,
                self.emf,
                quiet=self.options.quiet,
                pass_fds=[s.fileno() for s in sockets],
                render=self._render,
            )
        )
        for sock in sockets:
            sock.close()  # the child holds them now

    def _start_edge(self, env: dict[str, str]) -> None:
        import boto3

        from media_edge.io.claims import DynamoClaimStore
        from media_edge.server import EdgeServer

        assert self.loop is not None
        # The edge runs in this process: boto3 finds credentials in its environment, as the
        # child processes find them in theirs (moto takes any; real ones set here are kept).
        for name, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        settings = load_settings("edge", env)
        # In this process, not a child: its boto3 client gets the embedded AWS's credentials
        # from here rather than from os.environ (which the tests share).
        session = boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=env["AWS_SESSION_TOKEN"],
            region_name=env["AWS_REGION"],
        )
        store = DynamoClaimStore.from_settings(settings, session=session)
        self.edge = EdgeServer(settings, claim_store=store)
        self.loop.run(self.edge.start())

    def _wait_healthy(self, child: ChildProcess | None, url: str, limit_s: float = 30.0) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if child is not None and not child.alive():
                raise StackError(f"{child.name} exited:\n" + "\n".join(list(child.lines)[-20:]))
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(url, timeout=2)
                if response.status_code == 200:
                    return
                if response.status_code == 503 and "misconfigured" in response.text:
                    raise StackError(f"{url} answers 503: {response.text}")
            time.sleep(0.05)
        raise StackError(f"{url} not healthy after {limit_s:.0f} s")

    def _stop(self) -> None:
        if self.loop is not None and self.edge is not None:
            with contextlib.suppress(Exception):
                self.loop.run(self.edge.drain(grace_s=0), timeout=15)
            with contextlib.suppress(Exception):
                self.loop.run(self.edge.stop(), timeout=15)
        for child in reversed(self._children):
            child.stop()
        if self.twilio_loop is not None:
            if self.twilio is not None:
                with contextlib.suppress(Exception):
                    self.twilio_loop.run(self.twilio.stop(), timeout=15)
            self.twilio_loop.close()
            self.twilio_loop = None
        if self.loop is not None:
            if self.vapi is not None:
                with contextlib.suppress(Exception):
                    self.loop.run(self.vapi.stop(), timeout=15)
            self.loop.close()
            self.loop = None
        self._exit.close()
        self._emf_hook.uninstall()
        self._tap.uninstall()

    # -- introspection for tests ------------------------------------------------------------

    def edge_sessions(self) -> int:
        """Streams still open on the edge, calls or not."""
        return int(self.edge.open_streams) if self.edge is not None else 0

    def stack_tasks(self) -> int:
        """Live tasks on the in-process loop (servers' own plus any per-call leftovers)."""
        return len(self.loop.tasks()) if self.loop is not None else 0


def _bind_or_explain(variable: str, port: int) -> socket.socket:
    """Bind 127.0.0.1:``port``, or a StackError that names the variable choosing it."""
    try:
        return bind("127.0.0.1", port)
    except OSError as exc:
        why = "is in use (another make run?)" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise StackError(
            f"{variable}={port}: 127.0.0.1:{port} {why}; "
            f"pick another port, e.g. {variable}={port + 1} make run"
        ) from None


def _free_port() -> int:
    sock = bind("127.0.0.1", 0)
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


def banner(stack: LocalStack) -> str:
    env = stack.env
    vapi = env.get("VAPI_BASE_URL", "https://api.vapi.ai")
    lines = [
        "voicebridge local stack is running (Ctrl-C stops it)",
        f"  console     {stack.api_url}/console   (sign in with ADMIN_API_KEY below)",
        f"  API         {stack.api_url}   (functions.api under uvicorn; GET /health)",
        f"  media edge  {stack.edge_url}/media   (GET /health, /ready)",
        f"  worker      SQS long-poll -> functions.worker.handler ({env['EVENTS_QUEUE_URL']})",
        f"  dialer      SQS long-poll -> functions.dialer.handler ({env['DIALER_QUEUE_URL']})",
        f"  Vapi        {vapi}" + ("   (emulator)" if stack.vapi else "   (real Vapi)"),
        f"  Twilio REST {env['TWILIO_API_BASE']}   (emulator)",
        f"  AWS         {env['AWS_ENDPOINT_URL']}   (moto: DynamoDB + SQS)",
        f"  live feed   {env['CONSOLE_WS_URL']}   (emulated API Gateway WebSocket API)",
        f"  number      {LOCAL_NUMBER} -> assistant {stack.assistant_id}",
        "",
        "Environment for curl and the simulated caller (this run only):",
    ]
    names = ("PUBLIC_BASE_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "ADMIN_API_KEY")
    lines.extend(f"  export {name}={env[name]}" for name in names)
    lines += [
        "",
        "Place a simulated call (another terminal):",
        f"  .venv/bin/voicebridge call --api-url {stack.api_url} --account-sid "
        f"{env['TWILIO_ACCOUNT_SID']} --auth-token {env['TWILIO_AUTH_TOKEN']} --twilio-api "
        f"{env['TWILIO_API_BASE']} --barge-in-after 0.8 --heard heard.wav",
        "",
        "Or have the assistant call someone (the Twilio emulator plays the phone; numbers ending",
        "91 are busy, 92 do not answer, 93 fail, 94 are answering machines, see infra/README.md):",
        f"  .venv/bin/voicebridge dial +15550100123 --api-url {stack.api_url} --admin-key "
        f"{env['ADMIN_API_KEY']}",
        "",
        "Call events, one line each (make run JSON=1 for the raw JSON logs and metrics):",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local",
        description="The whole voicebridge stack on this machine (make run): embedded AWS, the "
        "API, the worker, the media edge and the Vapi and Twilio emulators, in the foreground "
        "until Ctrl-C. Prints one line per call event.",
        epilog="Environment: API_PORT (default 8000), EDGE_PORT (default 8080); VAPI_API_KEY "
        "switches from the Vapi emulator to the real Vapi.",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the raw JSON logs and EMF metric lines"
    )
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        with LocalStack(StackOptions(json_logs=args.json)) as stack:
            sys.stdout.write(banner(stack) + "\n")  # one write: no log line lands inside it
            sys.stdout.flush()
            while not stop.wait(0.5):
                pass
            print("stopping...", flush=True)
    except StackError as exc:
        print(f"local stack failed: {exc}", file=sys.stderr)
        return 1
    print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
