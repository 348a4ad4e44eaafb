"""Replayed Vapi webhooks: detected, and never a second run of a tool.

A signed Vapi webhook stays valid for the whole ±300 s HMAC window (and a shared-secret or bearer
one forever), so whoever captures one can send it again. Two guards, both conditional writes on
the sessions table (``Store.claim_nonce``, ``Store.claim_tool_call``) that expire with TTL:

- **Events** (everything that is queued): the body's SHA-256 is claimed for twice the HMAC window.
  A body seen before is answered as the first one was and not queued again. (The worker's
  idempotency key would absorb the duplicate anyway; this stops the replay at the door and
  counts it in ``WebhookReplays``.)
- **Tool calls**: each ``toolCallId`` (within its Vapi call) is claimed before its tool runs, and
  its answer stored after. A replay, or a Vapi retry, gets the first answer back without running
  the tool again; one that arrives while the first is still running gets an error answer rather
  than a second run. So a tool runs at most once per toolCallId: a run whose process died before
  storing its answer is not retried either, since whether it ended the call or transferred it
  cannot be known. The legacy ``function-call`` has no id: its body's digest stands in.

When the table cannot be reached in time, the guards **fail open**, backed by this process's own
memory of recent requests: the call goes on (tools still work, events are still accepted) and a
replay landing on the same instance is still caught. Failing closed would turn a DynamoDB outage
into every tool failing on every live call, to stop an attack that needs a captured request, a
replay inside 300 s (HMAC) and the outage all at once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from functions import aws, web
from functions.observability import MetricUnit
from functions.tools.registry import ToolCall, ToolOutcome
from functions.vapi_auth import WINDOW_SECONDS
from voicebridge import telemetry
from voicebridge.config import Settings

NONCE_TTL_SECONDS = 2 * WINDOW_SECONDS  # the window reaches 300 s either side of now
CHECK_DEADLINE_S = 1.0  # the share of the request's deadline a replay check may take
RECORD_DEADLINE_S = 1.0  # storing answers after the tools ran: the request's deadline is spent
MEMORY_ENTRIES = 4096
RUNNING = "This tool call is already being handled; its result comes with the first request."


class _Memory:
    """This process's recent claims: key -> (expires at, answer or None while running)."""

    def __init__(self, size: int = MEMORY_ENTRIES) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[float, str | None]] = OrderedDict()

    def get(self, key: str, now: float) -> tuple[bool, str | None]:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            return False, None
        return True, entry[1]

    def put(self, key: str, expires_at: float, answer: str | None = None) -> None:
        self._entries[key] = (expires_at, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)


_nonces = _Memory()
_tool_calls = _Memory()


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:40]


def _count_replay(what: str) -> None:
    web.metrics.add_metric(name=telemetry.WEBHOOK_REPLAYS, unit=MetricUnit.Count, value=1)
    web.logger.warning("Vapi webhook replayed", extra={"replayed": what})


async def first_delivery(config: Settings, body: bytes, until: aws.Deadline) -> bool:
    """False if this exact body was accepted before (within ``NONCE_TTL_SECONDS``)."""
    digest, now = _digest(body), time.time()
    if _nonces.get(digest, now)[0]:
        _count_replay("event")
        return False
    _nonces.put(digest, now + NONCE_TTL_SECONDS)
    store = web.store(config)
    try:
        first = await aws.call(
            until.within(CHECK_DEADLINE_S),
            store.dependency,
            store.claim_nonce,
            digest,
            now,
            NONCE_TTL_SECONDS,
        )
    except Exception as exc:
        web.logger.warning("replay check unavailable; accepting", extra={"error": repr(exc)})
        return True
    if not first:
        _count_replay("event")
    return first


async def forget_delivery(config: Settings, body: bytes) -> None:
    """Undo :func:`first_delivery` for a body that was then not accepted (503), so that a retry
    of it is not mistaken for a replay."""
    digest = _digest(body)
    _nonces.discard(digest)
    store = web.store(config)
    try:
        await aws.call(
            aws.Deadline.after(CHECK_DEADLINE_S), store.dependency, store.forget_nonce, digest
        )
    except Exception as exc:
        web.logger.warning("replay check not undone", extra={"error": repr(exc)})


@dataclass
class ToolClaims:
    """The tool calls of one message, split into those to run now and those seen before."""

    scope: str  # the Vapi call id: tool call ids are unique within it
    keys: list[str]  # per call, in message order
    fresh: list[ToolCall] = field(default_factory=list)
    known: dict[int, dict[str, Any]] = field(default_factory=dict)  # index -> first answer
    ttl: int = 0


def _keys(calls: Sequence[ToolCall], body: bytes) -> list[str]:
    digest = _digest(body)
    return [call.id or f"body-{digest}-{index}" for index, call in enumerate(calls)]


def _running(call: ToolCall) -> dict[str, Any]:
    return {"toolCallId": call.id, "name": call.name, "error": RUNNING}


def _answer(raw: str | None, call: ToolCall) -> dict[str, Any]:
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    return answer if isinstance(answer, dict) else _running(call)


async def claim_tool_calls(
    config: Settings,
    call_id: str | None,
    calls: Sequence[ToolCall],
    body: bytes,
    until: aws.Deadline,
) -> ToolClaims:
    """Claim each call for running; the ones claimed before keep their first answer."""
    claims = ToolClaims(str(call_id or "-"), _keys(calls, body), ttl=config.session_ttl_seconds)
    store, now = web.store(config), time.time()
    until = until.within(CHECK_DEADLINE_S)
    for index, (call, key) in enumerate(zip(calls, claims.keys, strict=True)):
        seen, raw = _tool_calls.get(f"{claims.scope}/{key}", now)
        if not seen:
            try:
                existing = await aws.call(
                    until,
                    store.dependency,
                    store.claim_tool_call,
                    claims.scope,
                    key,
                    now,
                    claims.ttl,
                )
            except Exception as exc:
                web.logger.warning("tool call ledger unavailable", extra={"error": repr(exc)})
                existing = None
            seen, raw = existing is not None, (existing or {}).get("answer")
        if seen:
            _count_replay("tool call")
            claims.known[index] = _answer(raw, call)
        else:
            _tool_calls.put(f"{claims.scope}/{key}", now + claims.ttl)
            claims.fresh.append(call)
    return claims


async def settle(
    config: Settings, claims: ToolClaims, outcomes: list[ToolOutcome]
) -> list[dict[str, Any]]:
    """Store the fresh answers (what a replay will get) and return every answer in order."""
    store, now = web.store(config), time.time()
    fresh = iter(outcomes)
    until = aws.Deadline.after(RECORD_DEADLINE_S)
    answers: list[dict[str, Any]] = []
    for index, key in enumerate(claims.keys):
        if index in claims.known:
            answers.append(claims.known[index])
            continue
        answer = next(fresh).as_vapi()
        answers.append(answer)
        raw = json.dumps(answer, separators=(",", ":"))
        _tool_calls.put(f"{claims.scope}/{key}", now + claims.ttl, raw)
        try:
            await aws.call(until, store.dependency, store.finish_tool_call, claims.scope, key, raw)
        except Exception as exc:
            web.logger.warning("tool answer not stored", extra={"error": repr(exc)})
    return answers
