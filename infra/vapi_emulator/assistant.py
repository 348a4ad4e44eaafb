"""The scripted assistant behind one emulated Vapi websocket call (sans-I/O).

Feed it what arrives on the transport socket (audio bytes, JSON control messages) and clock
ticks; it returns actions (audio and events to send, webhooks to post, close/abort). It behaves
like Vapi where our bridge can tell the difference: it speaks the first message, finds the end
of each caller turn with an energy VAD, answers after a think time with speech-like audio sent
a little ahead of real time (so audio is already buffered downstream when the caller barges in),
stops and emits ``user-interrupted`` when the caller talks over it, and reports the call at
the end (``status-update`` + ``end-of-call-report``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from infra.audio import (
    FRAME_MS,
    EnergyVad,
    frame_bytes,
    resample,
    sample,
    synth_speech,
    ulaw_decode,
    ulaw_encode,
)

DEFAULT_SERVER_MESSAGES = frozenset(
    {
        "conversation-update",
        "end-of-call-report",
        "function-call",
        "hang",
        "speech-update",
        "status-update",
        "tool-calls",
        "transfer-destination-request",
        "user-interrupted",
    }
)
DEFAULT_CLIENT_MESSAGES = frozenset(
    {
        "conversation-update",
        "function-call",
        "hang",
        "model-output",
        "speech-update",
        "status-update",
        "transfer-update",
        "transcript",
        "tool-calls",
        "user-interrupted",
        "voice-input",
    }
)
COST_PER_MINUTE = 0.05


@dataclass(frozen=True, slots=True)
class ToolScript:
    """Make the assistant call a tool: after the caller's ``after_turn``-th utterance and/or
    when the client sends an ``add-message`` (our edge turns DTMF into one)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    after_turn: int = 0
    on_add_message: bool = False


@dataclass(frozen=True, slots=True)
class Script:
    """How the emulated assistant behaves on one call (all times in milliseconds)."""

    greeting_ms: int | None = None  # cut the first message's audio to this length
    think_ms: int = 300  # caller turn end -> first reply audio
    reply: str = "parrot"  # "parrot" replays the caller's utterance, "synth" speaks a synth signal
    reply_max_ms: int = 2500
    lead_ms: int = 200  # how far ahead of real time assistant audio is sent
    end_of_turn_ms: int = 500  # caller silence that ends a turn (endpointing)
    vad_threshold_dbfs: float = -40.0
    interrupt_after_ms: int | None = None  # None: assistant.stopSpeakingPlan.voiceSeconds or 200
    drop_after_ms: int | None = None  # Vapi dies: abort the socket with no goodbye
    end_after_turns: int | None = None  # assistant hangs up after this many replies
    transfer_after_turns: int | None = None  # assistant transfers (transferCall) after these
    transfer_number: str = "+15550100009"  # ... to this TransferDestinationNumber
    tool: ToolScript | None = None


@dataclass(slots=True)
class SendAudio:
    data: bytes


@dataclass(slots=True)
class SendEvent:
    message: dict[str, Any]


@dataclass(slots=True)
class Webhook:
    message: dict[str, Any]


@dataclass(slots=True)
class CallTool:
    message: dict[str, Any]


@dataclass(slots=True)
class Close:
    code: int
    reason: str


@dataclass(slots=True)
class Abort:
    """Drop the connection with no close frame (a crashed vendor)."""


Action = SendAudio | SendEvent | Webhook | CallTool | Close | Abort


def iso(wall_ms: float) -> str:
    return datetime.fromtimestamp(wall_ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class ScriptedCall:
    """One call's conversation. Times are monotonic ms given by the caller; ``wall_ms`` at
    creation anchors the ISO timestamps Vapi reports."""

    def __init__(
        self,
        call: dict[str, Any],
        assistant: dict[str, Any],
        audio_format: tuple[str, int],
        script: Script,
        *,
        now_ms: float,
        wall_ms: float,
    ) -> None:
        self.call = call
        self.assistant = assistant
        self.format, self.rate = audio_format
        self.script = script
        self._frame = frame_bytes(self.format, self.rate)
        self._mono0, self._wall0 = now_ms, wall_ms
        self._server = frozenset(assistant.get("serverMessages") or DEFAULT_SERVER_MESSAGES)
        self._client = frozenset(assistant.get("clientMessages") or DEFAULT_CLIENT_MESSAGES)
        plan = assistant.get("stopSpeakingPlan") or {}
        voice_ms = int(float(plan.get("voiceSeconds", 0.2)) * 1000)
        self._interrupt_ms = (
            script.interrupt_after_ms if script.interrupt_after_ms is not None else voice_ms
        )
        max_s = float(assistant.get("maxDurationSeconds") or 600)
        self._max_at = now_ms + max_s * 1000
        self._drop_at = None if script.drop_after_ms is None else now_ms + script.drop_after_ms
        self.vad = EnergyVad(script.vad_threshold_dbfs, 3, script.end_of_turn_ms)
        self._inbound = bytearray()
        self._utterance: list[np.ndarray] = []
        self._preroll: list[np.ndarray] = []
        self._voiced_ms = 0  # caller audio since the current onset (audio time, not wall)
        # Outbound speech in flight.
        self._out = b""
        self._out_sent = 0
        self._out_started = 0.0
        self._out_text = ""
        self._speaking = False
        self._reply_at: float | None = None
        self._reply_audio: np.ndarray | None = None
        self._reply_text = ""
        self._muted_assistant = False
        self._muted_customer = False
        self._end_after_speech: str | None = None
        self._tool_pending = False
        self._handed_over = False  # phone-call-control sent: the server now owns hang-up
        # Report material.
        self.audio_in_bytes = 0
        self.turns = 0
        self.replies = 0
        self.interruptions = 0
        self.messages: list[dict[str, Any]] = []
        self.ended_reason: str | None = None
        self.started_ms = now_ms
        self.closed = False
        self._now = now_ms

    # -- inputs -------------------------------------------------------------------------------

    def start(self, now_ms: float) -> list[Action]:
        """The transport socket is open: the call is live."""
        self._now = now_ms
        actions = self._status("in-progress", now_ms)
        mode = self.assistant.get("firstMessageMode", "assistant-speaks-first")
        first = self.assistant.get("firstMessage")
        if first and mode != "assistant-waits-for-user":
            audio = sample("assistant_greeting")
            if self.script.greeting_ms is not None:
                audio = audio[: 8 * self.script.greeting_ms]
            actions += self._speak(audio, str(first), now_ms)
        return actions

    def audio(self, data: bytes, now_ms: float) -> list[Action]:
        """Caller audio from the client (any chunking)."""
        self._now = now_ms
        if self.closed:
            return []
        self.audio_in_bytes += len(data)
        self._inbound += data
        actions: list[Action] = []
        while len(self._inbound) >= self._frame:
            chunk = bytes(self._inbound[: self._frame])
            del self._inbound[: self._frame]
            actions += self._frame_in(self._decode(chunk), now_ms)
        return actions

    def text(self, raw: str | bytes, now_ms: float) -> list[Action]:
        """A JSON control message (ClientInboundMessage); unknown or malformed ones are ignored,
        as Vapi does."""
        self._now = now_ms
        if self.closed:
            return []
        try:
            message = json.loads(raw)
        except ValueError:
            return []
        if not isinstance(message, dict):
            return []
        kind = message.get("type")
        if kind in ("end-call", "hangup"):
            return self.end("customer-ended-call", now_ms)
        if kind == "say":
            audio = synth_speech(1.0, self.rate if self.format != "mulaw" else 8000, seed=7)
            actions = self._stop_speaking(now_ms, interrupted=False)
            actions += self._speak(audio, str(message.get("content", "")), now_ms)
            if message.get("endCallAfterSpoken"):
                self._end_after_speech = "assistant-ended-call-after-message-spoken"
            return actions
        if kind == "add-message":
            inner = message.get("message") or {}
            self.messages.append(
                {"role": str(inner.get("role", "system")), "message": str(inner.get("content", ""))}
            )
            tool = self.script.tool
            if tool and tool.on_add_message and not self._tool_pending:
                return self._call_tool(now_ms)
            if message.get("triggerResponseEnabled", True):
                self._schedule_reply(now_ms, None)
            return []
        if kind == "control":
            control = message.get("control")
            if control == "mute-assistant":
                self._muted_assistant = True
                return self._stop_speaking(now_ms, interrupted=False)
            if control == "unmute-assistant":
                self._muted_assistant = False
            elif control in ("mute-customer", "unmute-customer"):
                self._muted_customer = control == "mute-customer"
            return []
        if kind == "transfer":
            return self.end("assistant-forwarded-call", now_ms)
        return []

    def tool_result(self, results: list[dict[str, Any]], now_ms: float) -> list[Action]:
        """The server answered the tool-calls webhook: tell the client, then speak the result."""
        self._tool_pending = False
        self._now = now_ms
        if self.closed:
            return []
        text = "; ".join(str(r.get("result", r.get("error", ""))) for r in results) or "done"
        actions = self._client_event({"type": "tool-calls-result", "toolCallResult": results})
        self.messages.append({"role": "tool_call_result", "message": text})
        self._reply_audio = synth_speech(1.0, 8000, seed=11)
        self._reply_text = f"The tool said: {text}"
        self._reply_at = now_ms + self.script.think_ms
        return actions

    def tick(self, now_ms: float) -> list[Action]:
        """Time passed: pace audio, start a due reply, enforce limits."""
        self._now = now_ms
        if self.closed:
            return []
        if self._drop_at is not None and now_ms >= self._drop_at:
            return [Abort(), *self.end("worker-shutdown", now_ms, connected=False)]
        if now_ms >= self._max_at:
            return self.end("exceeded-max-duration", now_ms)
        actions: list[Action] = []
        if self._reply_at is not None and now_ms >= self._reply_at:
            self._reply_at = None
            audio = self._reply_audio if self._reply_audio is not None else self._parrot()
            actions += self._speak(audio, self._reply_text or "(reply)", now_ms)
            self._reply_audio, self._reply_text = None, ""
        if self._speaking:
            actions += self._pace(now_ms)
        return actions

    def end(self, reason: str, now_ms: float, *, connected: bool = True) -> list[Action]:
        """End the call once: final status to the client and close (if the socket is still
        there), then the reports to the server URL."""
        self._now = now_ms
        if self.closed:
            return []
        self.closed = True
        self.ended_reason = reason
        actions: list[Action] = []
        if connected:
            ended = {"type": "status-update", "status": "ended", "endedReason": reason}
            actions += self._client_event(ended)
            actions.append(Close(1000, reason[:120]))
        actions += self._server_message(
            {"type": "status-update", "status": "ended", "endedReason": reason}
        )
        actions += self._server_message(self.report(now_ms))
        return actions

    # -- internals ----------------------------------------------------------------------------

    def _decode(self, chunk: bytes) -> np.ndarray:
        if self.format == "mulaw":
            return ulaw_decode(chunk)
        return np.frombuffer(chunk, dtype="<i2")

    def _encode(self, pcm_8k: np.ndarray) -> bytes:
        if self.format == "mulaw":
            return ulaw_encode(pcm_8k)
        return resample(pcm_8k, 8000, self.rate).astype("<i2").tobytes()

    def _frame_in(self, pcm: np.ndarray, now_ms: float) -> list[Action]:
        if self._muted_customer:
            return []
        edge = self.vad.process(pcm)
        actions: list[Action] = []
        if self.vad.speech or edge.offset:
            self._utterance.append(pcm)
            if len(self._utterance) * FRAME_MS > self.script.reply_max_ms:
                del self._utterance[0]
        else:
            self._preroll = [*self._preroll[-2:], pcm]
        self._voiced_ms = self._voiced_ms + FRAME_MS if self.vad.speech else 0
        if edge.onset:
            self._voiced_ms = self.vad.onset_frames * FRAME_MS
            self._utterance = [*self._preroll, *self._utterance]
            self._reply_at = None  # the caller kept talking: the pending reply waits
            actions += self._both({"type": "speech-update", "status": "started", "role": "user"})
        if self.vad.speech and self._speaking and self._voiced_ms >= self._interrupt_ms:
            actions += self._stop_speaking(now_ms, interrupted=True)
        if edge.offset:
            actions += self._turn_end(now_ms)
        return actions

    def _turn_end(self, now_ms: float) -> list[Action]:
        self.turns += 1
        heard = sum(len(p) for p in self._utterance) / self.rate
        seconds = max(0.0, heard - self.script.end_of_turn_ms / 1000)  # without the end pause
        text = f"[caller speech {seconds:.1f} s]"
        self.messages.append({"role": "user", "message": text})
        actions = self._both({"type": "speech-update", "status": "stopped", "role": "user"})
        actions += self._transcript("user", text)
        actions += self._conversation_update()
        tool = self.script.tool
        if tool and tool.after_turn == self.turns and not self._tool_pending:
            return actions + self._call_tool(now_ms)
        self._schedule_reply(now_ms, f"You said something for {seconds:.1f} seconds.")
        return actions

    def _schedule_reply(self, now_ms: float, text: str | None) -> None:
        self._reply_text = text or "Noted."
        self._reply_at = now_ms + self.script.think_ms

    def _parrot(self) -> np.ndarray:
        if self.script.reply == "parrot" and self._utterance:
            pcm = np.concatenate(self._utterance)
            pcm8 = resample(pcm, self.rate, 8000)
        else:
            pcm8 = synth_speech(1.5, 8000, seed=self.replies + 1)
        self._utterance = []
        return pcm8[: 8 * self.script.reply_max_ms]

    def _call_tool(self, now_ms: float) -> list[Action]:
        tool = self.script.tool
        assert tool is not None
        self._tool_pending = True
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        tool_call = {
            "id": call_id,
            "type": "function",
            "function": {"name": tool.name, "arguments": dict(tool.arguments)},
        }
        message = {
            "type": "tool-calls",
            "toolCallList": [tool_call],
            "toolWithToolCallList": [
                {
                    "type": "function",
                    "function": {"name": tool.name, "parameters": {"type": "object"}},
                    "toolCall": tool_call,
                }
            ],
        }
        self.messages.append({"role": "tool_calls", "message": tool.name})
        actions = self._client_event({"type": "tool-calls", "toolCallList": [tool_call]})
        return [*actions, CallTool(self._envelope(message))]

    def _speak(self, pcm_8k: np.ndarray, text: str, now_ms: float) -> list[Action]:
        if self._muted_assistant or pcm_8k.size == 0:
            return []
        self._out = self._encode(pcm_8k)
        self._out_sent = 0
        self._out_started = now_ms
        self._out_text = text
        self._speaking = True
        self.replies += 1
        self.messages.append({"role": "bot", "message": text})
        actions = self._both(self._assistant_speech("started"))
        actions += self._client_event({"type": "model-output", "output": text})
        return actions + self._pace(now_ms)

    def _pace(self, now_ms: float) -> list[Action]:
        bytes_per_ms = self._frame / FRAME_MS
        due = int((now_ms - self._out_started + self.script.lead_ms) * bytes_per_ms)
        due = min(len(self._out), due - due % self._frame)
        actions: list[Action] = []
        if due > self._out_sent:
            actions.append(SendAudio(self._out[self._out_sent : due]))
            self._out_sent = due
        played_until = self._out_started + len(self._out) / bytes_per_ms
        if self._out_sent >= len(self._out) and now_ms >= played_until:
            actions += self._stop_speaking(now_ms, interrupted=False)
        return actions

    def _stop_speaking(self, now_ms: float, *, interrupted: bool) -> list[Action]:
        if not self._speaking:
            return []
        self._speaking = False
        self._out, self._out_sent = b"", 0
        actions: list[Action] = []
        if interrupted:
            self.interruptions += 1
            actions += self._both({"type": "user-interrupted"})
        actions += self._both(self._assistant_speech("stopped"))
        actions += self._transcript("assistant", self._out_text)
        if not interrupted:
            if self._end_after_speech:
                return actions + self._hang_up_or_forward(self._end_after_speech, now_ms)
            limit = self.script.end_after_turns
            if limit is not None and self.turns >= limit:
                return actions + self._hang_up_or_forward("assistant-ended-call", now_ms)
            limit = self.script.transfer_after_turns
            if limit is not None and self.turns >= limit:
                number = {"type": "number", "number": self.script.transfer_number}
                return actions + self._hang_up_or_forward(
                    "assistant-forwarded-call", now_ms, number
                )
        return actions

    # -- phone-call-control -------------------------------------------------------------------

    def _hang_up_or_forward(
        self, reason: str, now_ms: float, destination: dict[str, Any] | None = None
    ) -> list[Action]:
        """The assistant ends the call (endCall) or transfers it (transferCall, ``destination``).

        With ``phone-call-control`` in its ``serverMessages``, "the hangup and forwarding
        responsibilities are delegated to your server. Vapi will no longer do the actual
        transfer and hangup" (``#/components/schemas/ServerMessagePhoneCallControl``, ``type``):
        Vapi posts ``{"type": "phone-call-control", "request": "hang-up" | "forward",
        "destination"?}`` once and the call stays up until the server (through the phone
        provider) ends it. Otherwise Vapi does it itself and the call ends with ``reason``."""
        if "phone-call-control" not in self._server:
            return self.end(reason, now_ms)
        if self._handed_over:
            return []
        self._handed_over = True
        message: dict[str, Any] = {"type": "phone-call-control", "request": "hang-up"}
        if destination is not None:
            message = {**message, "request": "forward", "destination": destination}
        return [Webhook(self._envelope(message))]

    def _assistant_speech(self, status: str) -> dict[str, Any]:
        turn = self.replies
        return {"type": "speech-update", "status": status, "role": "assistant", "turn": turn}

    def _transcript(self, role: str, text: str) -> list[Action]:
        return self._both(
            {"type": "transcript", "role": role, "transcriptType": "final", "transcript": text}
        )

    def _conversation_update(self) -> list[Action]:
        return self._both({"type": "conversation-update", "messages": list(self.messages)})

    def _status(self, status: str, now_ms: float) -> list[Action]:
        return self._both({"type": "status-update", "status": status})

    def _both(self, event: dict[str, Any]) -> list[Action]:
        """Vapi tells both audiences: the client on the socket and the server URL."""
        return self._client_event(event) + self._server_message(event)

    def _wall(self, now_ms: float) -> float:
        return self._wall0 + (now_ms - self._mono0)

    def _client_event(self, event: dict[str, Any]) -> list[Action]:
        if event["type"] not in self._client:
            return []
        return [SendEvent({**event, "timestamp": int(self._wall(self._now))})]

    def _server_message(self, event: dict[str, Any]) -> list[Action]:
        if event["type"] not in self._server:
            return []
        return [Webhook(self._envelope(event))]

    def _envelope(self, event: dict[str, Any]) -> dict[str, Any]:
        message = {
            **event,
            "timestamp": int(self._wall(self._now)),
            "call": self.call,
            "assistant": self._resolved_assistant(),
        }
        return {"message": message}

    def _resolved_assistant(self) -> dict[str, Any]:
        """The assistant with the call's ``assistantOverrides`` applied (Vapi sends this one)."""
        overrides = self.call.get("assistantOverrides") or {}
        merged = {**self.assistant, **overrides}
        if isinstance(overrides.get("metadata"), dict):
            merged["metadata"] = {**(self.assistant.get("metadata") or {}), **overrides["metadata"]}
        return merged

    def report(self, now_ms: float) -> dict[str, Any]:
        """The end-of-call-report: transcript, summary, cost, start and end times."""
        seconds = max(0.0, (now_ms - self.started_ms) / 1000)
        lines = [
            f"{'AI' if m['role'] == 'bot' else 'User'}: {m['message']}"
            for m in self.messages
            if m["role"] in ("bot", "user")
        ]
        cost = round(seconds / 60 * COST_PER_MINUTE, 4)
        return {
            "type": "end-of-call-report",
            "endedReason": self.ended_reason or "customer-ended-call",
            "startedAt": iso(self._wall(self.started_ms)),
            "endedAt": iso(self._wall(now_ms)),
            "cost": cost,
            "costs": [{"type": "vapi", "cost": cost, "minutes": round(seconds / 60, 4)}],
            "artifact": {"transcript": "\n".join(lines), "messages": list(self.messages)},
            "analysis": {
                "summary": (
                    f"The caller spoke {self.turns} time(s); the assistant replied "
                    f"{self.replies} time(s) and was interrupted {self.interruptions} time(s)."
                )
            },
        }
