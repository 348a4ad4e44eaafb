"""The scripted assistant behind one emulated Vapi websocket call (sans-I/O).

Feed it what arrives on the transport socket (audio bytes, JSON control messages) and clock
ticks; it returns actions (audio and events to send, webhooks to post, close/abort). It behaves
like Vapi where our bridge can tell the difference: it speaks the first message, finds the end
of each caller turn with an energy VAD, answers after a think time with speech-like audio sent
a little ahead of real time (so audio is already buffered downstream when the caller barges in),
decides interruptions the way ``stopSpeakingPlan`` says (below), and reports the call at the
end (``status-update`` + ``end-of-call-report``). The assistant it runs is the stored one with
the call's ``assistantOverrides`` applied (``clientMessages``, ``stopSpeakingPlan``, ...).

Interruptions (schema ``#/components/schemas/StopSpeakingPlan``;
https://docs.vapi.ai/customization/voice-pipeline-configuration):

- ``speech-update`` (user, started) goes out on any caller sound (VAD onset), "mm-hmm" too.
- ``user-interrupted`` (and the assistant stops) only when the caller's words so far contain an
  ``interruptionPhrases`` entry ("always interrupt immediately", whatever ``numWords``), or when
  they are not (the start of) an ``acknowledgementPhrases`` entry ("never interrupt the
  assistant, even if numWords threshold is met") and the threshold is met: ``numWords`` words,
  or with ``numWords`` 0, ``voiceSeconds`` of voice (the "VAD spike"; only loud frames count,
  not the silence of the VAD's hangover).
- After an acknowledgement the assistant keeps speaking and its audio keeps flowing; the
  acknowledgement is transcribed but is not a turn (no reply to "mm-hmm"). After an
  interruption the next reply waits at least ``backoffSeconds``.

The emulator has no speech recogniser, so its transcriber is a model, decided per caller
utterance (VAD onset to offset): ``Script.transcripts[n]`` is what it "hears" for the n-th
utterance, one word per ``WORD_MS`` of voice (a recogniser needs the words before it can tell
"mm-hmm" from "stop", so the decision waits for them); without a scripted transcript, an
utterance that ends within ``ACK_MAX_MS`` of voice is heard as "mm-hmm" (decided at its end),
and a longer one as ordinary words (decided once it reaches ``ACK_MAX_MS``).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from infra.audio import (
    FRAME_MS,
    EnergyVad,
    frame_bytes,
    level_dbfs,
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

# The transcriber model (see the module docstring). ~200 words a minute is the fast end of
# conversational speech; streaming recognisers deliver each word a few hundred ms after it.
WORD_MS = 300
ACK_MAX_MS = 600  # "mm-hmm", "yeah", "okay" take 0.2-0.5 s; an utterance past this is words
OPENAI_ROLES = frozenset({"assistant", "function", "user", "system", "tool"})  # OpenAIMessage.role
BACKCHANNEL = "mm-hmm"  # what the default transcriber hears in a short utterance
SPEECH_WORD = "(word)"  # a word of a long utterance without a scripted transcript
# A few of StopSpeakingPlan's default phrases, used when the assistant sets no list of its own
# (the schema's description names "okay", "yeah", "right" as never interrupting and "stop",
# "actually", "no" as always interrupting; its full default lists are longer).
DEFAULT_ACKNOWLEDGEMENTS = (
    "mm-hmm",
    "mhmm",
    "uh-huh",
    "yeah",
    "yes",
    "okay",
    "ok",
    "right",
    "sure",
    "i see",
    "got it",
)
DEFAULT_INTERRUPTIONS = ("stop", "wait", "no", "actually", "but", "hold", "nope", "dont")


def _words(text: str) -> list[str]:
    """Lower case, punctuation dropped, apostrophes too ("don't" -> "dont", as Vapi's lists
    spell it), hyphens kept ("mm-hmm")."""
    return re.sub(r"[^a-z0-9\s-]", "", text.lower()).split()


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
    reply: str = "parrot"  # "parrot" replays the caller's utterance, "synth" a synth signal
    reply_max_ms: int = 2500  # the longest parrot reply; a synth reply is this long
    lead_ms: int = 200  # how far ahead of real time assistant audio is sent
    end_of_turn_ms: int = 500  # caller silence that ends a turn (endpointing)
    vad_threshold_dbfs: float = -40.0
    # What the transcriber hears for the caller's 1st, 2nd, ... utterance (None, or past the
    # end: the default rule, see the module docstring).
    transcripts: tuple[str | None, ...] = ()
    drop_after_ms: int | None = None  # Vapi dies: abort the socket with no goodbye
    end_after_turns: int | None = None  # assistant hangs up after this many replies
    transfer_after_turns: int | None = None  # assistant transfers (transferCall) after these
    transfer_number: str = "+15550100009"  # ... to this TransferDestinationNumber
    tool: ToolScript | None = None


@dataclass(slots=True)
class Spoken:
    """One thing the assistant said: its text, its audio (8 kHz), whether it was cut off."""

    text: str
    pcm_8k: np.ndarray
    interrupted: bool = False


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
        # Vapi runs the assistant with the call's assistantOverrides applied (CreateCallDTO).
        effective = self._resolved_assistant()
        self._effective = effective
        server, client = effective.get("serverMessages"), effective.get("clientMessages")
        self._server = frozenset(DEFAULT_SERVER_MESSAGES if server is None else server)
        self._client = frozenset(DEFAULT_CLIENT_MESSAGES if client is None else client)
        plan = effective.get("stopSpeakingPlan") or {}  # schema defaults below
        self._num_words = int(plan.get("numWords", 0))
        self._voice_ms = float(plan.get("voiceSeconds", 0.2)) * 1000
        self._backoff_ms = float(plan.get("backoffSeconds", 1)) * 1000
        acks = plan.get("acknowledgementPhrases", DEFAULT_ACKNOWLEDGEMENTS)
        self._acks = frozenset(" ".join(_words(p)) for p in acks) - {""}
        stops = plan.get("interruptionPhrases", DEFAULT_INTERRUPTIONS)
        self._stops = [w for w in (tuple(_words(p)) for p in stops) if w]
        max_s = float(effective.get("maxDurationSeconds") or 600)
        self._max_at = now_ms + max_s * 1000
        self._drop_at = None if script.drop_after_ms is None else now_ms + script.drop_after_ms
        self.vad = EnergyVad(script.vad_threshold_dbfs, 3, script.end_of_turn_ms)
        self._inbound = bytearray()
        self._utterance: list[np.ndarray] = []
        self._preroll: list[np.ndarray] = []
        self._voiced_ms = 0  # loud caller audio since the current onset (audio time, not wall)
        # The current caller utterance, for the interruption decision.
        self.utterances = 0
        self._script_words: list[str] | None = None  # its scripted transcript, if any
        self._script_text: list[str] | None = None
        self._over_assistant = False  # it began while the assistant was speaking
        self._interrupting = False  # it interrupted the assistant
        self._interrupted_at: float | None = None
        self._owed_reply = False  # an add-message asked for a response mid-utterance
        # Outbound speech in flight.
        self._out = b""
        self._out_sent = 0
        self._out_started = 0.0
        self._out_text = ""
        self._out_words_shown = 0  # words of _out_text already sent as a partial transcript
        self._said: list[tuple[np.ndarray, str]] = []  # "say" messages waiting for the speech
        self._heard_shown = 0  # words of the caller's utterance already sent as a partial
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
        self.interrupted_at: list[float] = []  # when each user-interrupted went out (now_ms)
        self.backchannels = 0
        self.rejected = 0  # client messages ignored as invalid
        self.spoken: list[Spoken] = []
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
        mode = self._effective.get("firstMessageMode", "assistant-speaks-first")
        first = self._effective.get("firstMessage")
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
            return self._say(message, now_ms)
        if kind == "add-message":
            return self._add_message(message, now_ms)
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

    def _say(self, message: dict[str, Any], now_ms: float) -> list[Action]:
        """``say`` (``#/components/schemas/ClientInboundMessageSay``): speak ``content``; with
        the assistant speaking, after its current speech unless ``interruptAssistantEnabled``
        ("whether the message should replace existing assistant speech", default false)."""
        content = message.get("content")
        if not isinstance(content, str) or not content:
            self.rejected += 1
            return []
        audio = synth_speech(1.0, 8000, seed=7)
        if message.get("endCallAfterSpoken") is True:
            self._end_after_speech = "assistant-ended-call-after-message-spoken"
        if self._speaking and message.get("interruptAssistantEnabled") is not True:
            self._said.append((audio, content))
            return []
        actions = self._stop_speaking(now_ms, interrupted=False)
        return actions + self._speak(audio, content, now_ms)

    def _add_message(self, message: dict[str, Any], now_ms: float) -> list[Action]:
        """``add-message`` (schema ``ClientInboundMessageAddMessage``): ``message`` is an
        ``OpenAIMessage`` (``role`` one of its enum, ``content`` a string or null, both
        required); one that is not is ignored. The message joins the history and, unless
        ``triggerResponseEnabled`` is false (default true), the assistant responds: "adds a
        message to the conversation history and optionally triggers a response"
        (https://docs.vapi.ai/calls/call-features).

        The response is the assistant's own, never the caller's half-heard utterance: this
        emulator used to answer a key press pressed at the end of a caller turn by parroting
        the unfinished utterance, then let the tail of that turn (VAD hangover silence)
        "interrupt" it, and answer the turn with the empty rest: one ``clear``, then silence
        (the ``--dtmf`` dead air). While the caller's turn is open, the reply to that turn
        answers both (the message is in the history by then); while the assistant speaks,
        the response follows its current speech."""
        inner = message.get("message")
        trigger = message.get("triggerResponseEnabled", True)
        if (
            not isinstance(inner, dict)
            or inner.get("role") not in OPENAI_ROLES
            or "content" not in inner
            or not isinstance(inner["content"], str | None)
            or not isinstance(trigger, bool)
        ):
            self.rejected += 1
            return []
        self.messages.append({"role": inner["role"], "message": inner.get("content") or ""})
        tool = self.script.tool
        if tool and tool.on_add_message and not self._tool_pending:
            return self._call_tool(now_ms)
        if trigger and self.vad.speech:
            self._owed_reply = True  # answered with the caller's turn (or after it)
        elif trigger:
            self._answer_message(now_ms)
        return []

    def _answer_message(self, now_ms: float) -> None:
        self._owed_reply = False
        self._reply_audio = synth_speech(1.0, 8000, seed=self.replies + 101)
        self._schedule_reply(now_ms, "Noted.")

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
        self._schedule_reply(now_ms, f"The tool said: {text}")
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
        # a "say" that waited for the speech before it (or, muted, for the unmute)
        if self._said and not self._speaking and not self._muted_assistant:
            audio, text = self._said.pop(0)
            actions += self._speak(audio, text, now_ms)
        if self._reply_at is not None and now_ms >= self._reply_at and not self._speaking:
            self._reply_at = None  # (a reply never cuts the assistant's own speech short)
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
        if edge.onset:
            self._begin_utterance()
            self._utterance = [*self._preroll, *self._utterance]
            self._reply_at = None  # the caller kept talking: the pending reply waits
            self._reply_audio = None
            actions += self._both({"type": "speech-update", "status": "started", "role": "user"})
        elif self.vad.speech and level_dbfs(pcm) > self.vad.threshold_dbfs:
            self._voiced_ms += FRAME_MS  # voice, not the hangover's silence
            actions += self._caller_partial()
        if self.vad.speech and self._speaking and self._interrupts(final=False):
            actions += self._interrupt(now_ms)
        if edge.offset:
            actions += self._utterance_end(now_ms)
        return actions

    def _caller_partial(self) -> list[Action]:
        """The transcriber's partial: the words heard so far, each time one more is heard
        (``#/components/schemas/ClientMessageTranscript``, ``transcriptType`` partial; the
        final follows at the utterance's end and replaces it)."""
        words = self._heard_words(final=False)
        if len(words) <= self._heard_shown:
            return []
        self._heard_shown = len(words)
        return self._transcript("user", self._as_written(words), final=False)

    def _as_written(self, words: list[str]) -> str:
        """Heard words as the transcriber writes them: a scripted transcript keeps its case and
        punctuation (the interruption rules compare the normalised words)."""
        written = self._script_text
        if written is not None and self._script_words is not None:
            complete = len(words) >= len(self._script_words)
            return " ".join(written if complete else written[: len(words)])
        return " ".join(words)

    def _begin_utterance(self) -> None:
        scripted = self.script.transcripts
        text = scripted[self.utterances] if self.utterances < len(scripted) else None
        self.utterances += 1
        self._script_words = None if text is None else _words(text)
        self._script_text = None if text is None else text.split()  # as the transcript shows it
        self._heard_shown = 0
        self._voiced_ms = self.vad.onset_frames * FRAME_MS
        self._over_assistant = self._speaking
        self._interrupting = False

    def _heard_words(self, final: bool) -> list[str]:
        """What the transcriber has recognised of the current utterance so far."""
        words = self._script_words
        if words is not None:
            return words if final else words[: self._voiced_ms // WORD_MS]
        if self._voiced_ms >= ACK_MAX_MS:
            return [SPEECH_WORD] * (self._voiced_ms // WORD_MS)
        return [BACKCHANNEL] if final else []

    def _interrupts(self, *, final: bool) -> bool:
        """Would Vapi stop the assistant for the current utterance now? (StopSpeakingPlan)"""
        words = self._heard_words(final)
        if not words:  # nothing recognised yet: only a VAD-only plan can decide
            return not self._acks and not self._num_words and self._voiced_ms >= self._voice_ms
        for phrase in self._stops:  # "always interrupt immediately, regardless of numWords"
            size = len(phrase)
            if any(tuple(words[i : i + size]) == phrase for i in range(len(words) - size + 1)):
                return True
        text = " ".join(words)
        if text in self._acks:  # "never interrupt the assistant, even if numWords ... is met"
            return False
        if not final and any(ack.startswith(text + " ") for ack in self._acks):
            return False  # may still become an acknowledgement: wait for the next word
        if self._num_words:
            return len(words) >= self._num_words
        return self._voiced_ms >= self._voice_ms

    def _interrupt(self, now_ms: float) -> list[Action]:
        self._interrupting = True
        self._interrupted_at = now_ms
        self.interrupted_at.append(now_ms)
        return self._stop_speaking(now_ms, interrupted=True)

    def _utterance_end(self, now_ms: float) -> list[Action]:
        """The caller stopped: an interruption decided only now, a backchannel (transcribed,
        no reply: the assistant talks on), or a turn to answer."""
        actions: list[Action] = []
        if self._speaking and self._interrupts(final=True):
            actions += self._interrupt(now_ms)
        words = self._heard_words(final=True)
        over = self._over_assistant or self._speaking
        if over and not self._interrupting and " ".join(words) in self._acks:
            self.backchannels += 1
            self._utterance = []
            if self._owed_reply:
                self._answer_message(now_ms)
            actions += self._both({"type": "speech-update", "status": "stopped", "role": "user"})
            return actions + self._transcript("user", self._as_written(words))
        return actions + self._turn_end(now_ms)

    def _turn_end(self, now_ms: float) -> list[Action]:
        self.turns += 1
        self._owed_reply = False  # this turn's reply answers any message added during it
        if self._script_words is not None or self._voiced_ms < ACK_MAX_MS:
            text = self._as_written(self._heard_words(final=True))
        else:
            heard = sum(len(p) for p in self._utterance) / self.rate
            seconds = max(0.0, heard - self.script.end_of_turn_ms / 1000)  # without the pause
            text = f"[caller speech {seconds:.1f} s]"
        self.messages.append({"role": "user", "message": text})
        actions = self._both({"type": "speech-update", "status": "stopped", "role": "user"})
        actions += self._transcript("user", text)
        actions += self._conversation_update()
        tool = self.script.tool
        if tool and tool.after_turn == self.turns and not self._tool_pending:
            return actions + self._call_tool(now_ms)
        self._schedule_reply(now_ms, f"You said: {text}")
        return actions

    def _schedule_reply(self, now_ms: float, text: str) -> None:
        """Answer after the think time, and never sooner than ``backoffSeconds`` after an
        interruption (StopSpeakingPlan: "seconds to wait before the assistant will start
        talking again after being interrupted")."""
        self._reply_text = text
        at = now_ms + self.script.think_ms
        if self._interrupted_at is not None:
            at = max(at, self._interrupted_at + self._backoff_ms)
        self._reply_at = at

    def _parrot(self) -> np.ndarray:
        if self.script.reply == "parrot" and self._utterance:
            pcm = np.concatenate(self._utterance)
            pcm8 = resample(pcm, self.rate, 8000)
        else:
            pcm8 = synth_speech(self.script.reply_max_ms / 1000, 8000, seed=self.replies + 1)
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
        self._out_words_shown = 0
        self._speaking = True
        self.replies += 1
        self.spoken.append(Spoken(text, pcm_8k))
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
        actions += self._assistant_partial(now_ms, played_until)
        if self._out_sent >= len(self._out) and now_ms >= played_until:
            actions += self._stop_speaking(now_ms, interrupted=False)
        return actions

    def _assistant_partial(self, now_ms: float, played_until: float) -> list[Action]:
        """The assistant's words as its audio plays (a word per equal share of the audio): a
        partial transcript each time one more word has been heard by the caller."""
        words = self._out_text.split()
        span = max(1.0, played_until - self._out_started)
        shown = min(len(words), int(len(words) * (now_ms - self._out_started) / span))
        if shown <= self._out_words_shown or shown >= len(words):
            return []
        self._out_words_shown = shown
        return self._transcript("assistant", " ".join(words[:shown]), final=False)

    def _stop_speaking(self, now_ms: float, *, interrupted: bool) -> list[Action]:
        if not self._speaking:
            return []
        self._speaking = False
        self._out, self._out_sent = b"", 0
        actions: list[Action] = []
        if interrupted:
            self.interruptions += 1
            self.spoken[-1].interrupted = True
            actions += self._both({"type": "user-interrupted"})
        actions += self._both(self._assistant_speech("stopped"))
        said = self._out_text
        if interrupted:  # the final is what the caller heard before the interruption
            said = " ".join(said.split()[: self._out_words_shown])
        if said:
            actions += self._transcript("assistant", said)
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

    def _transcript(self, role: str, text: str, *, final: bool = True) -> list[Action]:
        """``#/components/schemas/ClientMessageTranscript``: ``role``, ``transcriptType``
        (partial | final) and ``transcript`` are required."""
        kind = "final" if final else "partial"
        event = {"type": "transcript", "role": role, "transcriptType": kind, "transcript": text}
        return self._both(event)

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
