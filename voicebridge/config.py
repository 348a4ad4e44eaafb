"""Configuration: every environment variable the code reads is declared here, once.

Each deployable loads :class:`Settings` for its *role* at start; missing or invalid variables
raise one :class:`ConfigError` listing every problem, one line per variable, so a misconfigured
deployment is fixed in one round instead of one variable per restart. In AWS, secrets are
not in the environment: ``SECRETS_ID`` names a Secrets Manager secret (a JSON object keyed by the
variable names below) that is read through Powertools parameters and cached for
``SECRETS_MAX_AGE`` seconds, so a rotated secret is picked up without a redeploy.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from voicebridge.identifiers import E164_EXAMPLE, is_account_sid, is_e164
from voicebridge.vapi_credentials import DEFAULT_PLANS, Plan, parse_plans

Role = Literal["api", "worker", "edge", "dialer", "console"]


class ConfigError(RuntimeError):
    """Configuration variables are missing or invalid: one line per problem, each naming its
    variable (never its value)."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise ValueError(f"must be a {'/'.join(schemes)} URL, got {value!r}")
        return value.rstrip("/")

    return parse


def _edge_url(value: str) -> str:
    """``EDGE_PUBLIC_URL``: a ws(s) base, optionally with a path prefix (the edge then serves
    ``<prefix>/media``), never a query or fragment: Twilio's ``<Stream url>`` takes none, and the
    upgrade signature covers the URL exactly."""
    parts = urlsplit(value)
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError(f"must not have a query string or fragment, got {value!r}")
    return _url("wss", "ws")(value)


def _account_sid(value: str) -> str:
    if not is_account_sid(value):
        raise ValueError(f"must be a Twilio Account SID (AC + 32 hex digits), got {value!r}")
    return value


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number

    return parse


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return value

    return parse


def _allowlist(value: str) -> dict[str, str]:
    """``name=+E164,name2=+E164`` (or bare numbers) -> {name: number}; numbers must be E.164."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, number = item.rpartition("=")
        number = number.strip()
        if not is_e164(number):
            raise ValueError(f"{number!r} is not an E.164 number like {E164_EXAMPLE}")
        result[name.strip() or number] = number
    return result


# A container's CPU quota (cgroup v2, then v1): Fargate limits a task's vCPUs this way while its
# affinity mask may still show every CPU of the host (a 0.25 vCPU task can see 2).
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _quota_cpus() -> int | None:
    """CPUs the cgroup quota allows, rounded up (None: no quota, or no cgroup to read)."""
    try:
        if CGROUP_CPU_MAX.exists():
            quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        else:
            quota, period = CGROUP_V1_QUOTA.read_text(), CGROUP_V1_PERIOD.read_text()
        if quota.strip() in ("max", "-1"):
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def _workers(value: str) -> int:
    """A process count, or ``auto``: one per CPU this process may use, the fewer of its affinity
    mask (a container's cpuset, ``taskset``) and its cgroup CPU quota (Fargate's vCPUs)."""
    if value.strip().lower() == "auto":
        cpus = len(os.sched_getaffinity(0))
        quota = _quota_cpus()
        return cpus if quota is None else min(cpus, quota)
    if not value.strip().isdigit() or not 1 <= int(value) <= 256:
        raise ValueError(f"must be a number of processes from 1 to 256 or auto, got {value!r}")
    return int(value)


def _text(value: str) -> str:
    return value


def _bucket(value: str) -> str:
    """An S3 bucket name (general purpose rules: 3-63 of a-z 0-9 . -, a letter or digit at each
    end, not an IP address)."""
    ok = (
        3 <= len(value) <= 63
        and all(c.islower() or c.isdigit() or c in ".-" for c in value)
        and value[0].isalnum()
        and value[-1].isalnum()
        and ".." not in value
        and not all(part.isdigit() for part in value.split("."))
    )
    if not ok:
        raise ValueError(f"must be an S3 bucket name (3-63 of a-z 0-9 . -), got {value[:70]!r}")
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value[:70]!r}")
    return value.rstrip("/") or "/"


def _credential_id(value: str) -> str:
    """A Vapi credential id (a UUID, or ``cred_...`` in older docs)."""
    if not (len(value) <= 100 and value.replace("-", "").replace("_", "").isalnum()):
        raise ValueError(f"must be a Vapi credential id like a UUID, got {value[:40]!r}")
    return value


def _e164(value: str) -> str:
    if not is_e164(value):
        raise ValueError(f"{value!r} is not an E.164 number like {E164_EXAMPLE}")
    return value


@dataclass(frozen=True, slots=True)
class _Var:
    env: str
    parse: Callable[[str], object] = _text
    default: str | None = None
    secret: bool = False


# field name -> how it is read. Field names are the lower-cased variable names.
_VARS: tuple[_Var, ...] = (
    _Var("TWILIO_AUTH_TOKEN", secret=True),
    _Var("TWILIO_ACCOUNT_SID", _account_sid),
    _Var("TWILIO_API_BASE", _url("https", "http"), "https://api.twilio.com"),
    _Var("VAPI_API_KEY", secret=True),
    _Var("VAPI_BASE_URL", _url("https", "http"), "https://api.vapi.ai"),
    _Var("VAPI_ASSISTANT_ID"),
    _Var("VAPI_WEBHOOK_SECRET", secret=True),
    _Var("VAPI_WEBHOOK_AUTH", parse_plans),
    _Var("VAPI_WEBHOOK_CREDENTIAL_ID", _credential_id),
    _Var("PUBLIC_BASE_URL", _url("https", "http")),
    _Var("EDGE_PUBLIC_URL", _edge_url),
    _Var("STREAM_TOKEN_SECRET", secret=True),
    _Var("STREAM_TOKEN_TTL_SECONDS", _int(10, 300), "120"),
    _Var("ADMIN_API_KEY", secret=True),
    _Var("SESSIONS_TABLE"),
    _Var("IDEMPOTENCY_TABLE"),
    _Var("EVENTS_QUEUE_URL", _url("https", "http")),
    _Var("WORKER_FUNCTION_NAME"),
    _Var("EVENT_SPOOL_DIR"),
    _Var("AWS_ENDPOINT_URL", _url("https", "http")),
    _Var("SESSION_TTL_SECONDS", _int(60, 86_400), "14400"),
    _Var("CALL_RECORD_RETENTION_DAYS", _int(1, 3650), "90"),
    _Var("RECORDINGS_BUCKET", _bucket),  # set = every call is recorded there (edge, api)
    _Var("RECORDINGS_SPOOL_DIR", _absolute_path),  # the edge's parts before upload (temp dir)
    _Var("TRANSFER_ALLOWLIST", _allowlist, ""),
    _Var("TOOL_TIMEOUT_SECONDS", _int(1, 5), "5"),
    _Var("API_PORT", _int(1, 65_535), "8000"),
    _Var("EDGE_HOST", default="127.0.0.1"),
    _Var("EDGE_PORT", _int(0, 65_535), "8080"),
    _Var("EDGE_AUDIO_FORMAT", _choice("mulaw", "pcm16"), "mulaw"),
    _Var("EDGE_PLAYOUT_LEAD_MS", _int(20, 1000), "100"),
    _Var("EDGE_IDLE_TIMEOUT_SECONDS", _int(1, 3600), "30"),
    _Var("EDGE_MAX_CALL_SECONDS", _int(10, 14_400), "3600"),
    _Var("EDGE_MAX_CALLS", _int(1, 100_000), "1000"),
    _Var("EDGE_MAX_PENDING", _int(1, 100_000), "256"),
    _Var("EDGE_LOCAL_BARGE_IN", _bool, "false"),
    _Var("EDGE_DTMF_TO_VAPI", _bool, "true"),
    _Var("EDGE_UVLOOP", _bool, "true"),
    _Var("EDGE_WORKERS", _workers, "1"),
    _Var("EDGE_FALLBACK_NUMBER", lambda v: next(iter(_allowlist(v).values()), "")),
    _Var("DRAIN_SECONDS", _int(0, 7200), "110"),
    _Var("ECS_AGENT_URI", _url("http", "https")),
    _Var("METRICS_FLUSH_SECONDS", _int(1, 300), "10"),
    _Var("SECRETS_ID"),
    _Var("SECRETS_MAX_AGE", _int(0, 86_400), "300"),
    # Outbound calls and campaigns (functions/outbound, functions/dialer.py).
    _Var("OUTBOUND_TABLE"),
    _Var("DIALER_QUEUE_URL", _url("https", "http")),
    _Var("OUTBOUND_FROM_NUMBER", _e164),
    _Var("DIALER_RECONCILE_SECONDS", _int(5, 3600), "120"),
    # The live console (functions/console, media_edge/io/live.py, README "The live console").
    _Var("CONSOLE_CONNECTIONS_TABLE"),
    _Var("CONSOLE_EVENTS_TABLE"),
    _Var("CONSOLE_WS_URL", _url("wss", "ws")),
    _Var("CONSOLE_WS_MANAGEMENT_URL", _url("https", "http")),
    _Var("CONSOLE_SESSION_MINUTES", _int(5, 720), "60"),
    _Var("CONSOLE_EVENTS_TTL_SECONDS", _int(3600, 30 * 86_400), "86400"),
)

_REQUIRED: dict[Role, tuple[str, ...]] = {
    "api": (
        "TWILIO_AUTH_TOKEN",
        "EDGE_PUBLIC_URL",
        "STREAM_TOKEN_SECRET",
        "VAPI_WEBHOOK_SECRET",
        "ADMIN_API_KEY",
        "SESSIONS_TABLE",
        "EVENTS_QUEUE_URL",
    ),
    "worker": ("SESSIONS_TABLE", "IDEMPOTENCY_TABLE"),
    "console": ("CONSOLE_CONNECTIONS_TABLE", "CONSOLE_EVENTS_TABLE"),
    "edge": (
        "TWILIO_AUTH_TOKEN",
        "TWILIO_ACCOUNT_SID",
        "VAPI_API_KEY",
        "EDGE_PUBLIC_URL",
        "STREAM_TOKEN_SECRET",
        "SESSIONS_TABLE",  # the stream claim: one stream per CallSid across every task
    ),
    "dialer": (
        "TWILIO_AUTH_TOKEN",
        "TWILIO_ACCOUNT_SID",
        "SESSIONS_TABLE",
        "OUTBOUND_TABLE",
        "DIALER_QUEUE_URL",
    ),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated configuration. Optional values are ``None`` when unset and without a default."""

    twilio_auth_token: str | None = None
    twilio_account_sid: str | None = None
    twilio_api_base: str = "https://api.twilio.com"
    vapi_api_key: str | None = None
    vapi_base_url: str = "https://api.vapi.ai"
    vapi_assistant_id: str | None = None
    vapi_webhook_secret: str | None = None
    vapi_webhook_auth: tuple[Plan, ...] = DEFAULT_PLANS
    vapi_webhook_credential_id: str | None = None
    public_base_url: str | None = None
    edge_public_url: str | None = None
    stream_token_secret: str | None = None
    stream_token_ttl_seconds: int = 120
    admin_api_key: str | None = None
    sessions_table: str | None = None
    idempotency_table: str | None = None
    events_queue_url: str | None = None
    worker_function_name: str | None = None
    event_spool_dir: str | None = None
    aws_endpoint_url: str | None = None
    session_ttl_seconds: int = 14_400
    call_record_retention_days: int = 90
    recordings_bucket: str | None = None
    recordings_spool_dir: str | None = None
    transfer_allowlist: dict[str, str] = field(default_factory=dict)
    tool_timeout_seconds: int = 5
    api_port: int = 8000
    edge_host: str = "127.0.0.1"
    edge_port: int = 8080
    edge_audio_format: str = "mulaw"
    edge_playout_lead_ms: int = 100
    edge_idle_timeout_seconds: int = 30
    edge_max_call_seconds: int = 3600
    edge_max_calls: int = 1000
    edge_max_pending: int = 256
    edge_local_barge_in: bool = False
    edge_dtmf_to_vapi: bool = True
    edge_uvloop: bool = True
    edge_workers: int = 1
    edge_fallback_number: str | None = None
    drain_seconds: int = 110
    ecs_agent_uri: str | None = None
    metrics_flush_seconds: int = 10
    secrets_id: str | None = None
    secrets_max_age: int = 300
    outbound_table: str | None = None
    dialer_queue_url: str | None = None
    outbound_from_number: str | None = None
    dialer_reconcile_seconds: int = 120
    console_connections_table: str | None = None
    console_events_table: str | None = None
    console_ws_url: str | None = None
    console_ws_management_url: str | None = None
    console_session_minutes: int = 60
    console_events_ttl_seconds: int = 86_400

    def __repr__(self) -> str:  # secrets never reach logs, even through a repr
        shown = ", ".join(
            f"{var.env.lower()}={'***' if var.secret else getattr(self, var.env.lower())!r}"
            for var in _VARS
        )
        return f"Settings({shown})"


assert {var.env.lower() for var in _VARS} == {f.name for f in fields(Settings)}
SECRET_NAMES: frozenset[str] = frozenset(var.env for var in _VARS if var.secret)
ENV_NAMES: frozenset[str] = frozenset(var.env for var in _VARS)


def _secrets_from_manager(secret_id: str, max_age: int) -> Mapping[str, str]:
    """The JSON secret, through Powertools' cached parameter provider (imported only in AWS)."""
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(secret_id, transform="json", max_age=max_age)
    if not isinstance(value, dict):
        raise ConfigError(f"SECRETS_ID: secret {secret_id!r} is not a JSON object")
    return {str(k): str(v) for k, v in value.items() if str(k) in SECRET_NAMES}


def load_settings(role: Role, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings ``role`` needs; raise one ConfigError naming every bad
    variable (missing required ones and invalid values alike)."""
    env = dict(os.environ if environ is None else environ)
    secret_id = env.get("SECRETS_ID")
    if secret_id:
        max_age = int(env.get("SECRETS_MAX_AGE") or 300)
        for name, value in _secrets_from_manager(secret_id, max_age).items():
            env.setdefault(name, value)
    values: dict[str, object] = {}
    problems: list[str] = []
    for var in _VARS:
        raw = env.get(var.env)
        if raw is None or raw == "":
            raw = var.default
        if raw is None:
            if var.env in _REQUIRED[role]:
                problems.append(f"{var.env} is required for the {role} but is not set")
            continue
        try:
            values[var.env.lower()] = var.parse(raw)
        except ValueError as exc:
            problems.append(f"{var.env} is invalid: {exc}")
            continue
        if var.env in _REQUIRED[role] and values[var.env.lower()] in ("", None):
            problems.append(f"{var.env} is required for the {role} but is empty")
    if problems:
        raise ConfigError(problems)
    return Settings(**values)  # type: ignore[arg-type]


_cache: dict[Role, tuple[float, Settings]] = {}


def get_settings(role: Role) -> Settings:
    """Settings for ``role``, reloaded at most every ``SECRETS_MAX_AGE`` s (secrets may rotate)."""
    now = time.monotonic()
    cached = _cache.get(role)
    if cached and now - cached[0] < cached[1].secrets_max_age:
        return cached[1]
    settings = load_settings(role)
    _cache[role] = (now, settings)
    return settings


def reset_settings_cache() -> None:
    """Forget loaded settings (tests change the environment between cases)."""
    _cache.clear()


def running_in_lambda() -> bool:
    """True inside an AWS Lambda execution environment (its runtime sets this variable)."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def required_vars(role: Role) -> tuple[str, ...]:
    """The variables ``role`` cannot start without (the template must provide each)."""
    return _REQUIRED[role]
