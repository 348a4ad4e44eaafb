"""``make run``'s console: one human line per call event instead of JSON logs and EMF blobs.

Every component prints structured JSON (Powertools logs, EMF metrics); this turns the lines a
person watching a call cares about into short sentences and drops the rest. To show a new event,
add one entry to ``LOG_LINES`` (keyed by the log's ``message``) or ``METRIC_LINES`` (keyed by
the metric name); nothing else changes. ``python -m infra.local --json`` prints the raw lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from voicebridge import telemetry

Record = Mapping[str, Any]
Describe = Callable[[Record], str | None]  # None: this record is not worth a line


def _short(value: object, keep: int = 8) -> str:
    text = str(value or "")
    return text[:keep] + "…" if len(text) > keep + 1 else text


def _ms(value: object) -> str:
    try:
        return f"{float(str(value)):.0f} ms"
    except ValueError:
        return str(value)


def _call_ended(r: Record) -> str:
    seconds = float(r.get("durationMs", 0)) / 1000
    parts = [f"{r.get('reason', '?')} after {seconds:.1f} s"]
    if "framesPlayed" in r:
        parts.append(f"{r['framesPlayed']} frames played, {r.get('framesCleared', 0)} cleared")
    if r.get("framesDropped"):
        parts.append(f"{r['framesDropped']} dropped")
    return "; ".join(parts)


def _event_applied(r: Record) -> str | None:
    outcome = r.get("outcome")
    if outcome == "completed":
        return "Twilio reports the call completed"
    if outcome == "end-of-call-report":
        return "Vapi's end-of-call report stored (GET /calls/{callSid})"
    return None  # intermediate statuses: the call record has them


# log ``message`` -> (label, description). Labels line up in a column.
LOG_LINES: dict[str, tuple[str, Describe]] = {
    "call answered": ("call in", lambda r: f"TwiML sent; assistant {_short(r.get('assistantId'))}"),
    "stream started": ("stream", lambda r: f"media stream {_short(r.get('streamSid'))} started"),
    "vapi connected": (
        "Vapi connected",
        lambda r: (
            f"call {_short(r.get('vapiCallId'))}; {r.get('heldMs', 0)} ms of caller audio held"
        ),
    ),
    "caller speaking": ("caller", lambda r: "speaking (Vapi's speech-update)"),
    "assistant replied": (
        "reply",
        lambda r: f"assistant replied {_ms(r.get('responseMs'))} after the caller stopped",
    ),
    "barge-in: playout paused": (
        "pause",
        lambda r: "assistant audio paused while Vapi decides (interruption or backchannel)",
    ),
    "barge-in: playout resumed": (
        "backchannel",
        lambda r: f"no interruption: playout resumed after {_ms(r.get('pausedMs'))}",
    ),
    "barge-in: cleared playout": (
        "barge-in",
        lambda r: f"caller talked over the reply: playout cleared ({r.get('source', '?')})",
    ),
    "dtmf forwarded to vapi": ("keypad", lambda r: "caller pressed a key (sent to Vapi)"),
    "tool failed": ("tool call", lambda r: f"{r.get('tool')} failed: {r.get('error')}"),
    "vapi side ended; finishing playout": ("Vapi ended", lambda r: "playing its last words"),
    "call ended": ("ended", _call_ended),
    "vapi unreachable": ("ERROR", lambda r: f"Vapi unreachable ({r.get('cause')}): fallback"),
    "vapi dropped mid-call": ("ERROR", lambda r: f"Vapi dropped the call: {r.get('detail')}"),
    "stream token rejected": ("REJECTED", lambda r: f"stream token: {r.get('tokenError')}"),
    "upgrade rejected: bad signature": ("REJECTED", lambda r: "media stream: bad signature"),
    "request rejected": ("REJECTED", lambda r: f"{r.get('route')}: {r.get('reason')}"),
    "protocol violation": ("ERROR", lambda r: f"protocol violation: {r.get('detail', r)}"),
    "event applied": ("record", _event_applied),
}


def _values(record: Record, name: str) -> list[float]:
    value = record.get(name, [])
    return [float(v) for v in (value if isinstance(value, list) else [value])]


# metric name -> (label, description of its values in one EMF flush)
METRIC_LINES: dict[str, tuple[str, Callable[[list[float]], str]]] = {
    telemetry.VAPI_CONNECT_TIME: ("latency", lambda v: f"Vapi connect {_ms(max(v))}"),
    telemetry.FIRST_AUDIO_LATENCY: ("latency", lambda v: f"first assistant audio {_ms(max(v))}"),
    telemetry.BARGE_IN_LATENCY: ("latency", lambda v: f"barge-in cleared in {_ms(max(v))}"),
    telemetry.TOOL_LATENCY: ("tool call", lambda v: f"answered in {_ms(max(v))}"),
}


def _metric_names(record: Record) -> list[str]:
    return [
        metric["Name"]
        for directive in record["_aws"].get("CloudWatchMetrics", [])
        for metric in directive.get("Metrics", [])
    ]


def _clock(record: Record) -> str:
    stamp = record.get("timestamp")
    if isinstance(stamp, str) and len(stamp) >= 23:
        return stamp[11:23].replace(",", ".")  # Powertools: "2026-12-01 15:06:02,377+0000"
    millis = record.get("_aws", {}).get("Timestamp")
    if isinstance(millis, int | float):
        return datetime.fromtimestamp(millis / 1000).strftime("%H:%M:%S.%f")[:-3]
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


def _line(record: Record, label: str, text: str) -> str:
    call = _short(record.get("callSid"), 10) or "-"
    return f"{_clock(record)}  {call:<11}  {label:<14} {text}"


def render(source: str, line: str) -> list[str]:
    """The human lines for one output line of component ``source`` (often none)."""
    if not (line.startswith("{") and line.endswith("}")):
        return [f"[{source}] {line}"] if line.strip() else []  # tracebacks, uvicorn errors
    try:
        record = json.loads(line)
    except ValueError:
        return [f"[{source}] {line}"]
    if not isinstance(record, dict):
        return [f"[{source}] {line}"]
    if "_aws" in record:
        out = []
        for name in _metric_names(record):
            if name in METRIC_LINES and _values(record, name):
                label, describe = METRIC_LINES[name]
                out.append(_line(record, label, describe(_values(record, name))))
        return out
    message = str(record.get("message", ""))
    if message in LOG_LINES:
        label, describe_log = LOG_LINES[message]
        text = describe_log(record)
        return [] if text is None else [_line(record, label, text)]
    level = str(record.get("level", "")).upper()
    if level in ("WARNING", "ERROR", "CRITICAL"):  # unknown but important: say it plainly
        return [_line(record, level, f"[{source}] {message}")]
    return []
