"""The call state machine: one Twilio media stream bridged to one Vapi websocket call.

States: ``connected`` (Twilio socket open, waiting for ``start``, which must come within
``start_timeout_ms`` of the upgrade) -> ``started`` (account and token verified; the stream is
claimed, then the Vapi call created; caller audio is held) -> ``bridging`` (audio both ways)
-> ``ending`` (Vapi is gone; the assistant's last words finish playing, then a clean hang-up, or
the apology / fallback ``<Dial>`` if Vapi dropped without ending the call) -> ``closed``. Any
state can jump to ``closed`` through the one teardown, which is idempotent.

``feed(event, now)`` takes the shell's monotonic clock in ms and returns actions to run in
order. The machine never reads a clock: token expiry uses ``now / 1000 + epoch_offset_s``.

Barge-in follows Vapi's decision, not the first sound. ``speech-update`` (user, started) fires on
any caller sound, "mm-hmm" included; Vapi's ``stopSpeakingPlan`` then decides whether it is an
interruption and says so with ``user-interrupted`` (schema ``StopSpeakingPlan``:
``acknowledgementPhrases`` never interrupt). So the first sound only *pauses* our playout: we
stop feeding Twilio, whose small lead (``lead_ms``) drains while Vapi decides. On
``user-interrupted`` what we hold is dropped and Twilio told to ``clear`` (nothing of it is
heard); on ``speech-update`` (user, stopped) without one, playout resumes where it paused, so
a backchannel costs the caller no assistant audio, only a pause the length of the "mm-hmm".
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.frames import CloseCode

from media_edge.core.actions import (
    Action,
    ClaimStream,
    CloseTwilio,
    CloseVapi,
    CreateVapiCall,
    EndCallViaTwilio,
    FinishRecording,
    Latency,
    Log,
    Metric,
    Publish,
    RecordAudio,
    SendAudioToVapi,
    SendJsonToVapi,
    SendToTwilio,
    StorePicture,
)
from media_edge.core.audio import (
    FRAME_MS,
    VAD_HANGOVER_MS,
    VAD_ONSET_MS,
    HeldAudio,
    InboundPath,
    OutboundPath,
)
from media_edge.core.events import (
    ClaimOutcome,
    Event,
    ProtocolViolation,
    Shutdown,
    SocketClosed,
    StreamClaimed,
    Tick,
    VapiAudio,
    VapiConnected,
    VapiConnectFailed,
)
from media_edge.core.picture import Picture
from media_edge.core.playout import Playout
from media_edge.core.recording import Mixdown
from media_edge.core.tape import Tape
from media_edge.dsp import VoiceDetector
from media_edge.protocol import vapi as vapi_protocol
from media_edge.protocol.twilio import (
    TwilioConnected,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
    TwilioUnknown,
    TwilioWriter,
    apology_twiml,
)
from media_edge.protocol.vapi import (
    VapiCallEnded,
    VapiIgnored,
    VapiSpeechUpdate,
    VapiTranscript,
    VapiUserInterrupted,
)
from voicebridge import call_overrides, telemetry
from voicebridge.stream_token import StreamTokenError, verify

TOKEN_PARAMETER = "token"
CLOSE_NORMAL = CloseCode.NORMAL_CLOSURE
CLOSE_GOING_AWAY = CloseCode.GOING_AWAY
CLOSE_POLICY = CloseCode.POLICY_VIOLATION
CLOSE_INTERNAL = CloseCode.INTERNAL_ERROR
ENDING_GRACE_MS = 500  # after our estimate of the last frame playing, wait this long for its mark
LOCAL_BARGE_IN_FRAMES = 10  # 200 ms of loud caller speech over the assistant
LOCAL_BARGE_IN_MIN_DBFS = -35.0  # line echo of our own playout sits well below this
MAX_HELD_DIGITS = 32  # DTMF pressed while Vapi connects, replayed after the held audio
# A paused playout resumes by itself after this long without Vapi's verdict, so a lost or
# never-sent "stopped" cannot silence the assistant for the rest of the call. It covers a
# backchannel (~0.2-0.6 s), Vapi's endpointing after it (0.3-0.5 s) and a transcript-based
# decision of a few words (numWords ~2-3 at ~2.5 words/s); a later interruption still clears.
# What Vapi sends meanwhile waits in the playout queue (30 s deep: 2 s always fits).
PAUSE_LIMIT_MS = 2_000
LIVE_PICTURE_BLOCKS = 5  # a picture update for live consoles every 500 ms of tape


class State(enum.Enum):
    CONNECTED = "connected"
    STARTED = "started"
    BRIDGING = "bridging"
    ENDING = "ending"
    CLOSED = "closed"


# Module-level names for the states: an enum member looked up on its class costs ~0.25 us on
# CPython 3.11, and the per-frame path tests the state several times.
_CONNECTED, _STARTED, _BRIDGING, _ENDING, _CLOSED = (
    State.CONNECTED,
    State.STARTED,
    State.BRIDGING,
    State.ENDING,
    State.CLOSED,
)


@dataclass(frozen=True, slots=True)
class CallConfig:
    """Per-process call policy (times in ms); built from Settings by the shell."""

    token_secret: str
    account_sid: str  # TWILIO_ACCOUNT_SID: a start from any other account is refused
    audio_format: str = "mulaw"
    lead_ms: int = 100
    idle_timeout_ms: int = 30_000
    max_call_ms: int = 3_600_000
    # Twilio sends ``start`` "immediately after the connected message"
    # (https://www.twilio.com/docs/voice/media-streams/websocket-messages#start-message): a
    # socket without one this long after its upgrade is not a call, whatever else it sends.
    start_timeout_ms: int = 5_000
    connect_timeout_ms: int = 6_000  # POST /call + socket; then the caller hears the fallback
    # Caller audio held while Vapi connects (the most recent this many ms; older is dropped and
    # counted): POST /call can take ~1 s under load, and the caller often speaks first.
    connect_hold_ms: int = 2_000
    end_drain_ms: int = 5_000
    vad: bool = True  # inbound VAD: ResponseLatency and local barge-in need it
    local_barge_in: bool = False
    dtmf_to_vapi: bool = True
    fallback_number: str | None = None
    live_control: bool = False  # ask Vapi for call.monitor.controlUrl (the console's step-in)
    record: bool = False  # the stereo recording (RecordAudio/FinishRecording actions)
    picture: bool = True  # the call's picture: levels, turns, latencies (StorePicture, Publish)
    # Flood limit, a token bucket: Twilio sends ~55 messages/s; after a network stall it may
    # deliver seconds of buffered frames at once, which the burst allowance absorbs.
    max_twilio_messages_per_s: int = 200
    twilio_burst_messages: int = 1000


class Call:
    """One bridged call. Not thread-safe; feed it from one task."""

    __slots__ = (
        "_bucket",
        "_bucket_at",
        "_create_body",
        "_created",
        "_ending_deadline",
        "_epoch_offset_s",
        "_first_audio_sent",
        "_held",
        "_held_digits",
        "_inbound",
        "_last_rx",
        "_last_vapi_audio",
        "_loud_frames",
        "_mixdown",
        "_outbound",
        "_overflow_logged",
        "_paused_at",
        "_paused_until",
        "_picture",
        "_playout",
        "_speech_end",
        "_start",
        "_tape",
        "_unknown_logged",
        "_vad_factory",
        "_vapi_lost",
        "call_sid",
        "config",
        "end_reason",
        "frames_dropped",
        "frames_filled",
        "frames_in",
        "state",
        "stream_sid",
    )

    def __init__(
        self,
        config: CallConfig,
        *,
        now: float,
        epoch_offset_s: float,
        vad_factory: Callable[[], VoiceDetector] | None = None,
    ) -> None:
        self.config = config
        self.state = _CONNECTED
        self.stream_sid = ""
        self.call_sid = ""
        self.end_reason = ""
        self._epoch_offset_s = epoch_offset_s
        self._created = now
        self._start = now
        self._last_rx = now
        self._bucket = float(config.twilio_burst_messages)
        self._bucket_at = now
        self._ending_deadline = 0.0
        self._vad_factory = vad_factory
        self._create_body: dict[str, Any] | None = None  # POST /call body, sent once claimed
        self._inbound: InboundPath | None = None
        self._held: HeldAudio | None = None
        self._held_digits: list[str] = []
        self._outbound: OutboundPath | None = None
        self._playout: Playout | None = None
        self._first_audio_sent = False
        self._last_vapi_audio = 0.0
        self._speech_end: float | None = None
        self._loud_frames = 0
        self._overflow_logged = False
        self._paused_until = 0.0  # playout paused until then (0: playing); see the docstring
        self._paused_at = 0.0
        self._unknown_logged = False
        self._vapi_lost = False  # Vapi dropped mid-call: the way out apologises (or dials)
        # What the caller heard, on one clock (from ``start``): the recording and the picture.
        self._tape: Tape | None = None
        self._picture: Picture | None = None
        self._mixdown: Mixdown | None = None
        self.frames_in = 0
        self.frames_filled = 0
        self.frames_dropped = 0

    # -- public -------------------------------------------------------------------------------

    def feed(self, event: Event, now: float) -> list[Action]:
        """Apply ``event`` at time ``now`` (ms); the actions to run, in order."""
        out: list[Action] = []
        if self.state is _CLOSED:
            if isinstance(event, VapiConnected):
                out.append(CloseVapi())  # connected after we gave up: hang it up
            return out
        _HANDLERS[type(event)](self, event, now, out)
        if self._playout is not None and (self.state is _BRIDGING or self.state is _ENDING):
            self._pump(now, out)
        return out

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    @property
    def next_deadline(self) -> float | None:
        """The earliest time (ms) a Tick would change something; None once closed."""
        cfg = self.config
        state = self.state
        if state is _CLOSED:
            return None
        if state is _CONNECTED:
            return self._created + cfg.start_timeout_ms  # from the upgrade: no message moves it
        deadline = min(self._last_rx + cfg.idle_timeout_ms, self._start + cfg.max_call_ms)
        if state is _STARTED:
            return min(deadline, self._start + cfg.connect_timeout_ms)
        playout = self._playout
        assert playout is not None
        if self._paused_until:
            pacing: float | None = self._paused_until  # nothing is sent before then
        else:
            pacing = playout.next_deadline()
            if not playout.queued and self._outbound is not None and self._outbound.pending:
                tail = self._tail_due(playout.play_end)
                pacing = tail if pacing is None else min(pacing, tail)
        if state is _ENDING:
            deadline = min(self._ending_deadline, playout.play_end + ENDING_GRACE_MS)
        return deadline if pacing is None else min(deadline, pacing)

    @property
    def log_keys(self) -> dict[str, str]:
        return {"callSid": self.call_sid, "streamSid": self.stream_sid}

    # -- Twilio -------------------------------------------------------------------------------

    def _rx(self, now: float, out: list[Action]) -> bool:
        """Bookkeeping for every Twilio message: idle timer and flood limit. False = ended."""
        self._last_rx = now
        cfg = self.config
        tokens = self._bucket + (now - self._bucket_at) * cfg.max_twilio_messages_per_s / 1000.0
        self._bucket = min(tokens, cfg.twilio_burst_messages) - 1.0
        self._bucket_at = now
        if self._bucket < 0.0:
            self._teardown("flood", now, out, error=True, code=CLOSE_POLICY)
            return False
        return True

    def _sid_ok(self, stream_sid: str, now: float, out: list[Action]) -> bool:
        if self.state is _CONNECTED:
            self._teardown("event_before_start", now, out, error=True, code=CLOSE_POLICY)
            return False
        if stream_sid != self.stream_sid:
            self._teardown("wrong_stream_sid", now, out, error=True, code=CLOSE_POLICY)
            return False
        return True

    def _on_connected(self, event: TwilioConnected, now: float, out: list[Action]) -> None:
        if not self._rx(now, out):
            return
        if self.state is not _CONNECTED:
            self._teardown("unexpected_connected", now, out, error=True, code=CLOSE_POLICY)

    def _on_start(self, event: TwilioStart, now: float, out: list[Action]) -> None:
        if not self._rx(now, out):
            return
        if self.state is not _CONNECTED:
            self._teardown("duplicate_start", now, out, error=True, code=CLOSE_POLICY)
            return
        self.stream_sid, self.call_sid = event.stream_sid, event.call_sid
        if event.account_sid != self.config.account_sid:
            out.append(Log("warning", "stream from another Twilio account", {}))
            self._teardown("wrong_account", now, out, error=True, code=CLOSE_POLICY)
            return
        params = event.custom_parameters
        try:
            grant = verify(
                self.config.token_secret,
                params.get(TOKEN_PARAMETER, ""),
                event.call_sid,
                now / 1000.0 + self._epoch_offset_s,
            )
            options = call_overrides.decode(self.config.token_secret, event.call_sid, params)
        except (StreamTokenError, call_overrides.OverridesError) as exc:
            out.append(Log("warning", "stream token rejected", {"tokenError": exc.reason}))
            self._teardown("token_rejected", now, out, error=True, code=CLOSE_POLICY)
            return
        cfg = self.config
        self.state = _STARTED
        self._start = now
        inbound = InboundPath(cfg.audio_format, self._vad_factory and self._vad_factory())
        self._inbound = inbound
        bytes_per_ms = inbound.bytes_per_ms
        self._held = HeldAudio(cfg.connect_hold_ms * bytes_per_ms, FRAME_MS * bytes_per_ms)
        self._outbound = OutboundPath(cfg.audio_format)
        self._playout = Playout(TwilioWriter(event.stream_sid), cfg.lead_ms)
        if cfg.record or cfg.picture:
            self._tape = Tape(now, cfg.lead_ms, cfg.max_call_ms + cfg.end_drain_ms)
            self._mixdown = Mixdown() if cfg.record else None
            if cfg.picture:
                self._picture = Picture(round((now / 1000.0 + self._epoch_offset_s) * 1000.0))
        metadata = {
            "callSid": event.call_sid,
            "streamSid": event.stream_sid,
            "from": params.get("from", ""),
            "to": params.get("to", ""),
        }
        body = vapi_protocol.create_call_body(
            grant.assistant_id,
            cfg.audio_format,
            metadata,
            options.customer_number or params.get("from"),
            options.assistant_overrides,
            control=cfg.live_control,
        )
        out.append(Log("info", "stream started", {"assistantId": grant.assistant_id}))
        self._create_body = body
        out.append(ClaimStream(event.call_sid, event.stream_sid))

    def _on_stream_claimed(self, event: StreamClaimed, now: float, out: list[Action]) -> None:
        """A token admits one stream: only a claimed stream may create the Vapi call."""
        body, self._create_body = self._create_body, None
        if self.state is not _STARTED or body is None:
            return
        outcome = event.outcome
        if outcome is ClaimOutcome.ALREADY_CLAIMED:
            # Not the apology: the CallSid's first stream is the real call, and a REST update
            # would replace ITS TwiML. This socket is a replay; it just goes.
            out.append(Log("warning", "stream refused: this call already has a stream", {}))
            self._teardown("stream_already_claimed", now, out, error=True, code=CLOSE_POLICY)
            return
        if outcome is ClaimOutcome.NO_CAPACITY:
            # The token is valid, so this is our caller: the apology (or fallback number) beats
            # the silence of a closed stream.
            out.append(Log("warning", "stream refused: edge at EDGE_MAX_CALLS", {}))
            out.append(EndCallViaTwilio(self.call_sid, apology_twiml(self.config.fallback_number)))
            out.append(CloseTwilio(CloseCode.TRY_AGAIN_LATER, "edge full"))
            self._finish("no_capacity", now, out, error=True)
            return
        if outcome is ClaimOutcome.CLAIMED_LOCALLY:
            fields = {"detail": event.detail}
            out.append(Log("error", "claim store unavailable: claimed on this task only", fields))
            out.append(Metric(telemetry.CLAIM_STORE_ERRORS, 1))
        out.append(CreateVapiCall(body))
        # Only an admitted stream is a call the console shows (a replay never was one).
        metadata = body["assistantOverrides"]["metadata"]
        started = {"state": "started", "at": 0, "assistantId": body["assistantId"]}
        out.append(Publish("call", {**started, "from": metadata["from"], "to": metadata["to"]}))

    def _on_media(self, event: TwilioMedia, now: float, out: list[Action]) -> None:
        if not self._rx(now, out) or not self._sid_ok(event.stream_sid, now, out):
            return
        tape = self._tape
        if tape is not None:  # the caller's leg, whoever listens
            tape.caller(event.timestamp_ms, event.payload, now)
            if tape.ready:
                self._tape_out(tape, out)
        state = self.state
        if state is not _BRIDGING and state is not _STARTED:
            return  # Vapi is gone (ending): nobody to hear it
        inbound = self._inbound
        assert inbound is not None
        fill = inbound.gaps.admit(event.timestamp_ms)
        if fill < 0:
            self.frames_dropped += 1
            out.append(Metric(telemetry.FRAMES_DROPPED, 1))
            return
        if fill:
            self.frames_filled += fill
            out.append(Metric(telemetry.FRAMES_FILLED, fill))
        self.frames_in += 1
        audio = inbound.convert(event.payload, fill)
        if state is _BRIDGING:
            out.append(SendAudioToVapi(audio))
        else:
            self._hold(audio, out)
        if not self.config.vad:
            return
        decision = inbound.detect(event.payload)
        if decision.onset:
            self._speech_end = None
            if self._picture is not None:  # on the caller's clock: the frame's own time
                self._picture.caller_speech(event.timestamp_ms - VAD_ONSET_MS, True)
        elif decision.offset:
            # The VAD decides "ended" after its hangover; the speech really ended that long ago.
            self._speech_end = now - VAD_HANGOVER_MS
            if self._picture is not None:
                self._picture.caller_speech(event.timestamp_ms - VAD_HANGOVER_MS, False)
        if self.config.local_barge_in:
            self._local_barge_in(decision.speech, decision.level_dbfs, now, out)

    def _hold(self, audio: bytes, out: list[Action]) -> None:
        """Vapi is still connecting: keep the caller's audio for it (see HeldAudio)."""
        held = self._held
        assert held is not None
        dropped = held.push(audio)
        if dropped:
            self.frames_dropped += dropped
            out.append(Metric(telemetry.FRAMES_DROPPED, dropped))

    def _local_barge_in(self, speech: bool, level: float, now: float, out: list[Action]) -> None:
        """Echo-safe local barge-in: only sustained, loud caller speech over the assistant counts
        (line echo of our own audio is quieter and does not last 200 ms above the gate). Like
        Vapi's ``speech-update`` it only pauses playout: our VAD cannot tell "mm-hmm" from
        "stop", so dropping audio stays Vapi's decision (``user-interrupted``)."""
        playout = self._playout
        if speech and level >= LOCAL_BARGE_IN_MIN_DBFS and playout and playout.pending:
            self._loud_frames += 1
            if self._loud_frames >= LOCAL_BARGE_IN_FRAMES and not self._paused_until:
                self._pause("local_vad", now, out)
        else:
            self._loud_frames = 0

    def _on_dtmf(self, event: TwilioDtmf, now: float, out: list[Action]) -> None:
        if not self._rx(now, out) or not self._sid_ok(event.stream_sid, now, out):
            return
        if not self.config.dtmf_to_vapi:
            return
        if self.state is _BRIDGING:
            out.append(SendJsonToVapi(vapi_protocol.dtmf_message(event.digit)))
            out.append(Log("info", "dtmf forwarded to vapi"))  # the digit itself is not logged
        elif self.state is _STARTED:  # Vapi is connecting: keep it, in order, like the audio
            if len(self._held_digits) < MAX_HELD_DIGITS:
                self._held_digits.append(event.digit)
            else:
                out.append(Log("warning", "dtmf dropped: too many while vapi connects"))

    def _on_unknown(self, event: TwilioUnknown, now: float, out: list[Action]) -> None:
        """An event type Twilio added after this edge was written: counted, logged once per
        call (a new type arrives on every call, so one line each is enough), ignored."""
        if not self._rx(now, out):
            return
        out.append(Metric(telemetry.UNKNOWN_TWILIO_EVENTS, 1))
        if not self._unknown_logged:
            self._unknown_logged = True
            out.append(Log("info", "unknown twilio event ignored", {"event": event.event}))

    def _on_mark(self, event: TwilioMark, now: float, out: list[Action]) -> None:
        if not self._rx(now, out) or not self._sid_ok(event.stream_sid, now, out):
            return
        assert self._playout is not None
        self._playout.on_mark(event.name, now)

    def _on_stop(self, event: TwilioStop, now: float, out: list[Action]) -> None:
        if not self._sid_ok(event.stream_sid, now, out):
            return
        self._vapi_lost = False  # Twilio ended the stream: the caller left or is elsewhere now
        self._teardown("twilio_stop", now, out, error=False, code=CLOSE_NORMAL)

    # -- Vapi ---------------------------------------------------------------------------------

    def _on_vapi_connected(self, event: VapiConnected, now: float, out: list[Action]) -> None:
        """Go live: the held caller audio goes first, oldest first, before any new frame.

        All that is held goes, in one burst, rather than only its speech: trimming silence
        would need our VAD to decide what Vapi hears, and its noise floor is seeded by the
        stream's first frame, so speech at the very start (the case holding exists for) is
        where it is least reliable. What limits staleness is the bound (``connect_hold_ms``,
        the most recent audio). The burst arrives faster than real time, so a recogniser that
        streams faster than real time (as the usual STT backends do; not measured against
        Vapi itself) catches up on it rather than carrying it as a lasting delay."""
        if self.state is not _STARTED or self._create_body is not None:  # not yet claimed
            out.append(CloseVapi())
            return
        self.state = _BRIDGING
        held, self._held = self._held, None
        assert held is not None
        held_ms = held.held_ms
        out.append(Metric(telemetry.VAPI_CONNECT_TIME, now - self._start, "Milliseconds"))
        out.append(Log("info", "vapi connected", {"vapiCallId": event.call_id, "heldMs": held_ms}))
        out.append(Publish("call", {"state": "live", "at": self._at(now)}))
        out.extend(SendAudioToVapi(chunk) for chunk in held.drain())
        digits, self._held_digits = self._held_digits, []
        # after the audio they were pressed during, in order
        out.extend(SendJsonToVapi(vapi_protocol.dtmf_message(digit)) for digit in digits)
        if digits:
            out.append(Log("info", "dtmf forwarded to vapi", {"held": len(digits)}))

    def _on_vapi_connect_failed(
        self, event: VapiConnectFailed, now: float, out: list[Action]
    ) -> None:
        if self.state is _STARTED:
            self._vapi_unreachable(event.reason, event.detail, now, out)

    def _vapi_unreachable(self, why: str, detail: str, now: float, out: list[Action]) -> None:
        """Never leave the caller in silence: swap the stream's TwiML for an apology (or a
        fallback number) through Twilio REST, then end the stream."""
        out.append(Log("error", "vapi unreachable", {"cause": why, "detail": detail}))
        out.append(CloseVapi())
        self._apologise(out)
        self._finish("vapi_unreachable", now, out, error=True)

    def _vapi_dropped(self, detail: str, now: float, out: list[Action]) -> None:
        """Vapi vanished mid-call without ending it (no ``status-update: ended``, no
        ``end-of-call-report``, not our end-call): a crash, a restart or a lost network. Like a
        failed connect, the caller gets the apology or the fallback number, never silence;
        first the assistant's words already received finish playing (bounded by
        ``end_drain_ms``), because the REST update would cut off whatever Twilio still holds.
        A close with code 1000 is Vapi's deliberate end, not a drop."""
        out.append(Log("error", "vapi dropped mid-call", {"detail": detail}))
        self._vapi_lost = True
        self._begin_ending("vapi_dropped", now, out, error=True)

    def _apologise(self, out: list[Action]) -> None:
        """Replace the call's TwiML (apology + hang-up, or <Dial> the fallback), then close the
        stream; the shell finishes the REST call before it closes the socket."""
        out.append(EndCallViaTwilio(self.call_sid, apology_twiml(self.config.fallback_number)))
        out.append(CloseTwilio(CLOSE_INTERNAL, "assistant unavailable"))

    def _on_vapi_audio(self, event: VapiAudio, now: float, out: list[Action]) -> None:
        if self.state is not _BRIDGING:
            return
        assert self._outbound is not None
        assert self._playout is not None
        self._last_vapi_audio = now
        frames = self._outbound.convert(event.data)
        if frames and self._playout.enqueue(frames) and not self._overflow_logged:
            self._overflow_logged = True
            out.append(Log("warning", "assistant audio queue full: dropping audio"))

    def _on_user_interrupted(
        self, event: VapiUserInterrupted, now: float, out: list[Action]
    ) -> None:
        """Vapi decided the caller interrupted: drop what is queued or held, clear Twilio."""
        playout = self._playout
        if self.state is not _BRIDGING or playout is None:
            return
        was_paused = self._paused_until
        self._paused_until = 0.0
        dropped = playout.frames_cleared
        clear = playout.clear(now)
        picture = self._picture
        if picture is not None:
            at = self._at(now)
            if was_paused:
                picture.pause_ended(at, "cleared" if clear else "interrupted")
            picture.interrupted(at, clear is not None)
            if clear is not None:
                picture.cleared(at, (playout.frames_cleared - dropped) * FRAME_MS)
        if clear is None:  # nothing of the assistant's is playing: nothing to interrupt
            out.append(Publish("interrupted", {"at": self._at(now), "cleared": False}))
            return
        if self._tape is not None:
            self._tape.clear(now)  # what Twilio drops was never heard: not in the recording
        assert self._outbound is not None
        self._outbound.reset()
        self._loud_frames = 0
        out.append(Publish("interrupted", {"at": self._at(now), "cleared": True}))
        out.append(SendToTwilio(clear))
        out.append(Latency(telemetry.BARGE_IN_LATENCY, now))
        out.append(Log("info", "barge-in: cleared playout", {"source": "user-interrupted"}))

    def _on_speech_update(self, event: VapiSpeechUpdate, now: float, out: list[Action]) -> None:
        if self.state is not _BRIDGING:
            return
        if event.role in vapi_protocol.TRANSCRIPT_ROLES and event.status in ("started", "stopped"):
            speech = {"role": event.role, "status": event.status, "at": self._at(now)}
            out.append(Publish("speech", speech))
        if event.role != "user":
            return
        if event.status == "started":
            if self._picture is not None:
                self._picture.vapi_user_speech(self._at(now), True)
            out.append(Log("info", "caller speaking"))  # a line a turn: what operators follow
            self._pause("speech-update", now, out)
        elif event.status == "stopped":
            if self._picture is not None:
                self._picture.vapi_user_speech(self._at(now), False)
            if self._paused_until:
                self._resume("speech-update", now, out)

    def _pause(self, source: str, now: float, out: list[Action]) -> None:
        """The caller made a sound: stop feeding Twilio until Vapi decides (or the limit)."""
        playout = self._playout
        assert playout is not None
        if not self._paused_until:
            self._paused_at = now
            playout.mark_sent(out)  # its echo accounts for what Twilio still plays out
            if playout.pending:
                out.append(Log("info", "barge-in: playout paused", {"source": source}))
            if self._picture is not None:
                self._picture.paused(self._at(now), source)
        self._paused_until = now + PAUSE_LIMIT_MS

    def _resume(self, why: str, now: float, out: list[Action]) -> None:
        """No interruption after all: play on from where playout paused (the next pump)."""
        self._paused_until = 0.0
        if self._picture is not None:
            self._picture.pause_ended(self._at(now), "limit" if why == "limit" else "resumed")
        playout = self._playout
        assert playout is not None
        if playout.pending:
            self._speech_end = None  # the rest of a reply is not a new response
            held = round(now - self._paused_at)
            out.append(Log("info", "barge-in: playout resumed", {"why": why, "pausedMs": held}))

    def _on_vapi_ended(self, event: VapiCallEnded, now: float, out: list[Action]) -> None:
        self._begin_ending("vapi_ended", now, out, detail=event.reason)

    def _on_transcript(self, event: VapiTranscript, now: float, out: list[Action]) -> None:
        """A caption for the live console: Vapi's words as Vapi sent them."""
        if self.state is _BRIDGING or self.state is _ENDING:
            caption = {"role": event.role, "final": event.final, "text": event.text}
            out.append(Publish("caption", {**caption, "at": self._at(now)}))

    def _on_vapi_ignored(self, event: VapiIgnored, now: float, out: list[Action]) -> None:
        """Transcripts, model output, ``hang`` (a delay notice, not a hang-up)...: not ours."""

    # -- lifecycle ----------------------------------------------------------------------------

    def _on_socket_closed(self, event: SocketClosed, now: float, out: list[Action]) -> None:
        if event.side == "twilio":
            self._teardown(
                "twilio_closed", now, out, error=False, code=CLOSE_NORMAL, twilio_open=False
            )
        elif self.state is _BRIDGING and event.code == CLOSE_NORMAL:
            # A normal closure is Vapi ending the call on purpose (e.g. its endCall tool with
            # status-update left out of clientMessages): a goodbye, not an apology.
            self._begin_ending("vapi_closed", now, out, detail="socket closed normally")
        elif self.state is _BRIDGING:
            # Abnormal (1006 no close frame, 1011, 1001 going away, ...): Vapi vanished.
            self._vapi_dropped(f"socket closed, code {event.code}", now, out)
        elif self.state is _STARTED:
            self._vapi_unreachable("socket_closed", f"code {event.code}", now, out)

    def _on_violation(self, event: ProtocolViolation, now: float, out: list[Action]) -> None:
        fields = {"side": event.side, "detail": event.detail}
        out.append(Log("warning", "protocol violation", fields))
        if event.side == "vapi" and self.state is _STARTED:
            self._vapi_unreachable(event.reason, event.detail, now, out)
            return
        if event.side == "vapi" and self.state is _BRIDGING:
            out.append(SendJsonToVapi(dict(vapi_protocol.END_CALL)))  # we abandon it: say so
            self._vapi_dropped(f"vapi_{event.reason}: {event.detail}", now, out)
            return
        code = CLOSE_POLICY if event.side == "twilio" else CLOSE_INTERNAL
        self._teardown(f"{event.side}_{event.reason}", now, out, error=True, code=code)

    def _on_shutdown(self, event: Shutdown, now: float, out: list[Action]) -> None:
        self._teardown(event.reason, now, out, error=True, code=CLOSE_GOING_AWAY)

    def _on_tick(self, event: Tick, now: float, out: list[Action]) -> None:
        cfg = self.config
        state = self.state
        if state is _CONNECTED:
            if now - self._created >= cfg.start_timeout_ms:
                self._teardown("start_timeout", now, out, error=True, code=CLOSE_POLICY)
        elif now - self._last_rx >= cfg.idle_timeout_ms:
            self._teardown("idle_timeout", now, out, error=True, code=CLOSE_GOING_AWAY)
        elif now - self._start >= cfg.max_call_ms:
            self._teardown("max_duration", now, out, error=True, code=CLOSE_NORMAL)
        elif state is _STARTED and now - self._start >= cfg.connect_timeout_ms:
            self._vapi_unreachable("timeout", "no vapi connection in time", now, out)

    def _begin_ending(
        self, reason: str, now: float, out: list[Action], *, detail: str = "", error: bool = False
    ) -> None:
        """Vapi is gone: stop listening, let the assistant's last words play, then hang up."""
        if self.state is not _BRIDGING:
            return
        assert self._playout is not None
        assert self._outbound is not None
        self.state = _ENDING
        if self._paused_until and self._picture is not None:
            self._picture.pause_ended(self._at(now), "ended")
        self._paused_until = 0.0  # no verdict can come now: the last words play out
        self.end_reason = reason
        self._ending_deadline = now + self.config.end_drain_ms
        tail = self._outbound.flush()
        if tail:
            self._playout.enqueue([tail])
        out.append(CloseVapi())
        out.append(Log("info", "vapi side ended; finishing playout", {"detail": detail}))
        if error:  # counted now, under its own reason, whatever ends the playout later
            out.append(Metric(telemetry.CALL_ERRORS, 1, reason=reason))

    def _pump(self, now: float, out: list[Action]) -> None:
        playout = self._playout
        outbound = self._outbound
        assert playout is not None
        assert outbound is not None
        if self._paused_until:
            if now < self._paused_until:
                return
            self._resume("limit", now, out)
        if not playout.queued:
            if self.state is _BRIDGING and not outbound.pending and not playout.unmarked:
                return  # the common case while the caller talks: nothing to play
            if outbound.pending and now >= self._tail_due(playout.play_end):
                tail = outbound.flush()  # the assistant paused mid-frame: pad it, don't hold it
                if tail:
                    playout.enqueue([tail])
        was_idle = not playout.playing  # this send starts a new assistant turn
        if playout.pump(now, out):
            picture = self._picture
            if self._tape is not None:
                start = playout.last_start  # later than now: it follows what Twilio holds
                self._tape.assistant(playout.last_chunk, start, start > now)
                if picture is not None:
                    origin = self._start
                    end = round(playout.play_end - origin)
                    picture.assistant_audio(round(start - origin), end, was_idle)
            if not self._first_audio_sent:
                self._first_audio_sent = True
                out.append(Latency(telemetry.FIRST_AUDIO_LATENCY, self._start))
                if picture is not None:
                    picture.first(self._at(now))
            if was_idle and self._speech_end is not None:
                out.append(Latency(telemetry.RESPONSE_LATENCY, self._speech_end))
                reply = {"at": self._at(now), "ms": round(now - self._speech_end)}
                out.append(Publish("latency", reply))
                out.append(Log("info", "assistant replied", {"responseMs": reply["ms"]}))
                if picture is not None:
                    picture.reply(self._at(now), reply["ms"])
                self._speech_end = None
        if self.state is _ENDING and (
            not playout.pending
            or now >= self._ending_deadline
            or now >= playout.play_end + ENDING_GRACE_MS
        ):
            if self._vapi_lost:
                self._apologise(out)
            else:
                out.append(CloseTwilio(CLOSE_NORMAL, "call ended"))
            self._finish(self.end_reason, now, out, error=False)

    def _tail_due(self, play_end: float) -> float:
        """A partial frame is padded and sent once Twilio is about to run dry and Vapi has sent
        nothing for a frame time (padding earlier would put silence inside a word)."""
        return max(play_end - FRAME_MS, self._last_vapi_audio + FRAME_MS)

    def _teardown(
        self,
        reason: str,
        now: float,
        out: list[Action],
        *,
        error: bool,
        code: CloseCode,
        twilio_open: bool = True,
    ) -> None:
        """The one way out: tell Vapi the call is over, close both sides, count and log."""
        state = self.state
        if state is _CLOSED:
            return
        if state is _BRIDGING:
            out.append(SendJsonToVapi(dict(vapi_protocol.END_CALL)))
            out.append(CloseVapi())
        elif state is _STARTED:
            out.append(CloseVapi())  # abandon the connection attempt
        if twilio_open and self._vapi_lost:
            self._apologise(out)  # cut short while Vapi's last words played: still say sorry
        elif twilio_open:
            out.append(CloseTwilio(code, reason.replace("_", " ")))
        self._finish(reason, now, out, error=error)

    def _tape_out(self, tape: Tape, out: list[Action]) -> None:
        """Blocks that can no longer change: levels for the picture, seconds of recording."""
        picture, mixdown = self._picture, self._mixdown
        for caller, assistant in tape.ready:
            if picture is not None:
                picture.block(caller, assistant)
            if mixdown is not None:
                chunk = mixdown.add(caller, assistant)
                if chunk is not None:
                    out.append(RecordAudio(chunk))
        tape.ready.clear()
        if picture is not None and picture.blocks - picture.live_from >= LIVE_PICTURE_BLOCKS:
            out.append(Publish("picture", picture.delta()))

    def _end_tape(self, now: float, out: list[Action]) -> None:
        """The call is over: the rest of the tape, the recording's end, the whole picture."""
        tape, picture, mixdown = self._tape, self._picture, self._mixdown
        if tape is None:
            return
        tape.finish(now)
        self._tape_out(tape, out)
        if picture is not None:
            out.append(Publish("picture", picture.delta()))
            out.append(StorePicture(picture.snapshot()))
        if mixdown is not None:
            chunk = mixdown.flush()
            if chunk is not None:
                out.append(RecordAudio(chunk))
            out.append(FinishRecording(mixdown.duration_ms))
        self._tape = None
        self._picture = None
        self._mixdown = None

    def _finish(self, reason: str, now: float, out: list[Action], *, error: bool) -> None:
        self.state = _CLOSED
        self.end_reason = reason
        self._end_tape(now, out)
        fields: dict[str, Any] = {"reason": reason, "durationMs": round(now - self._created)}
        playout = self._playout
        if playout is not None:
            fields |= {
                "framesIn": self.frames_in,
                "framesFilled": self.frames_filled,
                "framesDropped": self.frames_dropped,
                "framesOut": playout.frames_sent,
                "framesPlayed": playout.frames_played,
                "framesCleared": playout.frames_cleared,
            }
            self._inbound = self._outbound = None  # free DSP state now, not when the task ends
            self._held = None
        out.append(Log("info", "call ended", fields))
        if self.call_sid:
            out.append(Publish("call", {"state": "ended", "at": self._at(now), "reason": reason}))
        if error:
            out.append(Metric(telemetry.CALL_ERRORS, 1, reason=reason))

    def _at(self, now: float) -> int:
        """``now`` on the live console's time axis: ms from the stream start."""
        return round(now - self._start)


# Dispatch by exact event type, shared by every call (a per-call table would cost ~1 KB each).
_HANDLERS: dict[type, Callable[[Call, Any, float, list[Action]], None]] = {
    TwilioMedia: Call._on_media,
    TwilioMark: Call._on_mark,
    VapiAudio: Call._on_vapi_audio,
    TwilioDtmf: Call._on_dtmf,
    TwilioConnected: Call._on_connected,
    TwilioStart: Call._on_start,
    TwilioStop: Call._on_stop,
    TwilioUnknown: Call._on_unknown,
    VapiUserInterrupted: Call._on_user_interrupted,
    VapiSpeechUpdate: Call._on_speech_update,
    VapiCallEnded: Call._on_vapi_ended,
    VapiTranscript: Call._on_transcript,
    VapiIgnored: Call._on_vapi_ignored,
    VapiConnected: Call._on_vapi_connected,
    VapiConnectFailed: Call._on_vapi_connect_failed,
    StreamClaimed: Call._on_stream_claimed,
    SocketClosed: Call._on_socket_closed,
    ProtocolViolation: Call._on_violation,
    Tick: Call._on_tick,
    Shutdown: Call._on_shutdown,
}
