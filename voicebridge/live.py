"""The live console's shared data shapes: topics, the event envelope, the tables' keys.

Three deployables meet here: the edge writes events and reads who subscribed
(``media_edge/io/live.py``), the console gateway records connections and subscriptions and
replays stored events (``functions/console/gateway.py``), the API mints socket tickets and
closes a session's sockets at logout (``functions/console``). The wire format is in
PUBLISH_API.md.

Connections table (``CONSOLE_CONNECTIONS_TABLE``: ``pk``/``sk`` strings, TTL ``expires_at``)::

    CONN#{connectionId}     META           the socket: its console session, when it connected
    TOPIC#{topic}           CONN#{id}      a subscription (the edge queries pk = TOPIC#...)
    SESSION#{sessionHash}   CONN#{id}      a session's sockets (logout closes them)
    TICKET#{sha256(ticket)} TICKET         a single-use socket ticket, valid seconds

Events table (``CONSOLE_EVENTS_TABLE``: ``call_sid`` string, ``seq`` number, TTL ``expires_at``):
one item per published event, ``body`` = the envelope exactly as consoles receive it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from voicebridge.identifiers import is_call_sid

TOPIC_CALLS = "calls"  # every call's "call" and "speech" events: what the calls list shows
CALLS_TOPIC_KINDS = frozenset({"call", "speech"})
MAX_EVENT_BYTES = 32 * 1024  # one event's envelope; API Gateway's message limit is 128 KB
# API Gateway's WebSocket quotas, none of them adjustable ("Quotas for configuring and running a
# WebSocket in API Gateway", https://docs.aws.amazon.com/apigateway/latest/developerguide/
# apigateway-execution-service-websocket-limits-table.html); a larger message or frame closes
# the connection with 1009, @connections posts included.
CONNECTION_SECONDS = 2 * 3600  # "Connection duration for WebSocket API: 2 hours"
IDLE_SECONDS = 10 * 60  # "Idle Connection Timeout: 10 minutes"
MAX_MESSAGE_BYTES = 128 * 1024  # "WebSocket message payload size: 128 KB"
MAX_FRAME_BYTES = 32 * 1024  # "WebSocket frame size: 32 KB" (messages are split into frames)
TICKET_SECONDS = 10  # a socket ticket is good for one upgrade within this long


def call_topic(call_sid: str) -> str:
    return f"call:{call_sid}"


def parse_topic(value: Any) -> str | None:
    """``calls`` or ``call:CA...`` (a full-match CallSid), else None."""
    if value == TOPIC_CALLS:
        return TOPIC_CALLS
    if isinstance(value, str) and value.startswith("call:") and is_call_sid(value[5:]):
        return value
    return None


def envelope(call_sid: str, seq: int, ts_ms: int, kind: str, data: dict[str, Any]) -> str:
    """One event as consoles receive it (and the events table stores it)."""
    event = {"type": "event", "callSid": call_sid, "seq": seq, "ts": ts_ms, "kind": kind}
    return json.dumps({**event, "data": data}, separators=(",", ":"), ensure_ascii=False)


def batch(bodies: list[str]) -> str:
    """Several envelopes in one message, in order: ``{"type": "batch", "events": [...]}``."""
    return '{"type":"batch","events":[' + ",".join(bodies) + "]}"


def ticket_key(ticket: str) -> dict[str, str]:
    """Tickets are stored hashed: a table reader cannot use one."""
    digest = hashlib.sha256(ticket.encode()).hexdigest()
    return {"pk": f"TICKET#{digest}", "sk": "TICKET"}


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()[:40]


def connection_key(connection_id: str) -> dict[str, str]:
    return {"pk": f"CONN#{connection_id}", "sk": "META"}


def subscription_key(topic: str, connection_id: str) -> dict[str, str]:
    return {"pk": f"TOPIC#{topic}", "sk": f"CONN#{connection_id}"}


def session_socket_key(session: str, connection_id: str) -> dict[str, str]:
    return {"pk": f"SESSION#{session}", "sk": f"CONN#{connection_id}"}
