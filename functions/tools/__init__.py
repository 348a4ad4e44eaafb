"""Tools the assistant can call. Importing this package registers every tool module below."""

from functions.tools import builtins, example
from functions.tools.registry import (
    REGISTRY,
    SCHEMAS,
    ToolCall,
    ToolContext,
    ToolError,
    ToolOutcome,
    parse_tool_calls,
    run_tool_calls,
    tool,
)

__all__ = [
    "REGISTRY",
    "SCHEMAS",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolOutcome",
    "builtins",
    "example",
    "parse_tool_calls",
    "run_tool_calls",
    "tool",
]
