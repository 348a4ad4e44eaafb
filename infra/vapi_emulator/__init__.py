"""A local Vapi: REST (assistants, websocket calls), the transport socket with a scripted
assistant, and signed server-URL webhooks. Used by the local stack, the demo and the e2e tests
when no ``VAPI_API_KEY`` is set. ``python -m infra.vapi_emulator`` runs it alone."""

from infra.vapi_emulator.assistant import Script, ScriptedCall, ToolScript
from infra.vapi_emulator.server import Captured, VapiEmulator

__all__ = ["Captured", "Script", "ScriptedCall", "ToolScript", "VapiEmulator"]
