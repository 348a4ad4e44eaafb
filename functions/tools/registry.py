"""The tool registry: Vapi ``tool-calls`` (and legacy ``function-call``) are answered from here.

A tool is an ``async def (ctx, args) -> str | dict`` registered with ``@tool("name")``. The
runner gives every call its own timeout, runs the calls of one message concurrently and answers
one result per call, in order, with the same ``toolCallId``. Whatever goes wrong (unknown tool,
bad arguments, exception, timeout) becomes that call's ``error`` string: Vapi ignores non-200
answers, so an HTTP error would only make the assistant wait and guess.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voicebridge.config import Settings

if TYPE_CHECKING:
    import httpx

MAX_RESULT_CHARS = 2000
MAX_CALLS_PER_MESSAGE = 16


class ToolError(Exception):
    """A failure whose message is safe to hand to the assistant (it may read it out)."""


@dataclass
class ToolContext:
    """What a tool may use: settings, the call it runs in, and a shared HTTP client."""

    settings: Settings
    call_sid: str | None
    vapi_call_id: str | None
    client_factory: Callable[[], httpx.AsyncClient]
    _client: httpx.AsyncClient | None = field(default=None, repr=False)

    def http(self) -> httpx.AsyncClient:
        """The HTTP client, created on first use (most tools never need one)."""
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


Tool = Callable[[ToolContext, dict[str, Any]], Awaitable[str | Mapping[str, Any]]]
REGISTRY: dict[str, Tool] = {}
SCHEMAS: dict[str, dict[str, Any]] = {}  # Vapi function-tool definitions, for new assistants


def tool(name: str, description: str, parameters: dict[str, Any]) -> Callable[[Tool], Tool]:
    """Register ``func`` as the function ``name`` the assistant's model can call; ``parameters``
    is its JSON schema (sent to Vapi when an assistant is created with this tool)."""

    def register(func: Tool) -> Tool:
        if name in REGISTRY:
            raise ValueError(f"tool {name!r} is registered twice")
        REGISTRY[name] = func
        SCHEMAS[name] = {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                # Vapi's OpenAIFunctionParameters allows only these (pydantic adds a "title").
                "parameters": {
                    "type": "object",
                    "properties": parameters.get("properties", {}),
                    **({"required": parameters["required"]} if parameters.get("required") else {}),
                },
            },
        }
        return func

    return register


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: Any  # a JSON string or an object, as Vapi sent it


def _call_from(item: Mapping[str, Any]) -> ToolCall:
    raw = item.get("function")
    function: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    name = function.get("name") or item.get("name") or ""
    arguments = function.get("arguments")
    if arguments is None:
        arguments = item.get("arguments", item.get("parameters"))
    return ToolCall(str(item.get("id") or ""), str(name), arguments)


def parse_tool_calls(message: Mapping[str, Any]) -> list[ToolCall]:
    """``toolCallList`` items (current and older flat shapes), else ``toolWithToolCallList``."""
    items = message.get("toolCallList")
    if not isinstance(items, list):
        entries = message.get("toolWithToolCallList")
        items = [
            {"name": entry.get("name"), **entry["toolCall"]}
            for entry in (entries if isinstance(entries, list) else [])
            if isinstance(entry, dict) and isinstance(entry.get("toolCall"), dict)
        ]
    return [_call_from(item) for item in items if isinstance(item, dict)]


def _arguments(raw: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ToolError("arguments are not valid JSON") from None
    if not isinstance(raw, dict):
        raise ToolError("arguments must be a JSON object")
    return raw


def _one_line(value: str | Mapping[str, Any]) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return " ".join(text.split())[:MAX_RESULT_CHARS]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    call: ToolCall
    result: str | None
    error: str | None
    latency_ms: float

    def as_vapi(self) -> dict[str, str]:
        answer = {"toolCallId": self.call.id, "name": self.call.name}
        if self.error is not None:
            answer["error"] = self.error
        else:
            answer["result"] = self.result or ""
        return answer


async def _run_one(call: ToolCall, ctx: ToolContext, limit_s: float) -> ToolOutcome:
    started = time.perf_counter()
    result: str | None = None
    error: str | None = None
    func = REGISTRY.get(call.name)
    if func is None:
        error = f"unknown tool {call.name[:64]!r}"
    else:
        try:
            async with asyncio.timeout(limit_s):
                result = _one_line(await func(ctx, _arguments(call.arguments)))
        except ToolError as exc:
            error = _one_line(str(exc)) or "tool failed"
        except TimeoutError:
            error = f"tool {call.name} timed out after {limit_s:g} s"
        except Exception as exc:  # a tool bug must not fail the others or the webhook
            error = f"tool {call.name} failed ({type(exc).__name__})"
    return ToolOutcome(call, result, error, (time.perf_counter() - started) * 1000.0)


async def run_tool_calls(
    calls: list[ToolCall], ctx: ToolContext, limit_s: float
) -> list[ToolOutcome]:
    """Run ``calls`` concurrently, each within ``limit_s`` seconds; outcomes in call order."""
    try:
        return list(await asyncio.gather(*(_run_one(c, ctx, limit_s) for c in calls)))
    finally:
        await ctx.aclose()
