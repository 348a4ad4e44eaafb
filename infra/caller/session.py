"""One simulated phone call, played the way Twilio plays it.

Twilio's side of an inbound call: it posts the signed voice webhook, runs the TwiML, opens the
Media Stream with a signed upgrade, sends ``connected``/``start`` then one ``media`` frame every
20 ms in real time, plays what it is sent through a real-time buffer (``playout.py``), checks
what the edge sends (``edge_messages.py``), sends ``stop`` when the caller hangs up, posts the
``<Stream statusCallback>`` events the TwiML asked for and, at the end, the one call status
callback Twilio posts for an inbound call. The caller's behaviour is a script of steps.
Everything heard is kept, so latencies are measured on what a caller would actually hear.
Each Twilio behaviour names its source here or in ``infra/README.md``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from infra.audio import FRAME_MS, level_dbfs, ulaw_decode, ulaw_encode, write_wav
from infra.caller import edge_messages
from infra.caller import twiml as twiml_parser
from infra.caller.playout import FRAME_BYTES, Playout
from infra.caller.script import Dtmf, Hangup, Pause, Say, Step, WaitForSilence, WaitForSpeech
from voicebridge.twilio_signature import SIGNATURE_HEADER, sign

StatusOrder = Literal["inorder", "shuffled", "duplicated"]
SILENT_RUN_FRAMES = 5  # "silence" after barge-in = this many quiet frames in a row (100 ms)


@dataclass(slots=True)
class CallerConfig:
    """Where the call goes and how Twilio-like it behaves."""

    api_url: str  # the API as Twilio sees it, e.g. http://127.0.0.1:8000
    auth_token: str  # the Twilio auth token (signs webhooks and the stream upgrade)
    account_sid: str
    from_number: str = "+15550100001"
    to_number: str = "+15550100002"
    voice_url: str | None = None  # default {api_url}/twilio/voice
    # The number's "Call status changes" URL (template output TwilioStatusCallbackUrl); default
    # {api_url}/twilio/status.
    status_callback_url: str | None = None
    twilio_emulator_url: str | None = None  # the local Twilio REST emulator (hang-ups, transfers)
    status_order: StatusOrder = "inorder"
    seed: int = 0
    max_seconds: float = 60.0
    heard_wav: Path | None = None
    hear_threshold_dbfs: float = -45.0
    call_sid: str | None = None


@dataclass(slots=True)
class CallReport:
    """What happened, from the caller's ear."""

    call_sid: str
    stream_sid: str
    twiml: str = ""
    twiml_ms: float = 0.0
    timeline: list[tuple[float, str]] = field(default_factory=list)
    first_media_ms: float | None = None
    first_audio_ms: float | None = None
    response_ms: list[float] = field(default_factory=list)
    barge_in_to_silence_ms: list[float] = field(default_factory=list)
    barge_in_to_clear_ms: list[float] = field(default_factory=list)
    ended_by: str = ""
    heard: bytes = b""
    heard_speech: list[bool] = field(default_factory=list)
    marks_echoed: int = 0
    clears: int = 0
    cleared_ms: float = 0.0
    protocol_errors: list[str] = field(default_factory=list)
    status_callbacks: list[tuple[str, int]] = field(default_factory=list)
    call_duration_s: int | None = None  # CallDuration of the final status callback
    close_code: int | None = None

    def heard_pcm(self) -> np.ndarray:
        return ulaw_decode(self.heard) if self.heard else np.zeros(0, dtype=np.int16)

    def heard_speech_ms(self) -> int:
        return sum(self.heard_speech) * FRAME_MS


@dataclass(frozen=True, slots=True)
class _Callback:
    """One webhook Twilio would post (or GET) on its own, apart from the media."""

    url: str
    params: dict[str, str]
    label: str
    method: str = "POST"


def _rfc2822_now() -> str:
    """Call status callbacks: "Timestamp ... given as UTC in RFC 2822 format", e.g.
    ``Fri, 20 Aug 2010 01:13:42 +0000`` (https://www.twilio.com/docs/voice/api/call-resource
    #statuscallbackevent; https://www.twilio.com/docs/voice/twiml "Dates and times")."""
    return format_datetime(datetime.now(UTC))


def _iso8601_now() -> str:
    """Stream status callbacks: "The time of the event in ISO 8601 format"
    (https://www.twilio.com/docs/voice/twiml/stream#statuscallback)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SimulatedCall:
    def __init__(self, config: CallerConfig, steps: list[Step]) -> None:
        self.config = config
        self.steps = steps
        self.call_sid = config.call_sid or f"CA{uuid.uuid4().hex}"
        self.stream_sid = f"MZ{uuid.uuid4().hex}"
        self.report = CallReport(self.call_sid, self.stream_sid)
        self._playout = Playout()
        self._ws: ClientConnection | None = None
        self._http: httpx.AsyncClient | None = None
        self._seq = 0
        self._frame = 0
        self._speaking: list[np.ndarray] = []  # caller audio queued to send
        self._say_done: asyncio.Event = asyncio.Event()
        self._tick = asyncio.Condition()
        self._ended: asyncio.Future[str] | None = None
        self._quiet_run = 0
        self._loud_run = 0
        self._heard_state = False
        self._says: list[tuple[int, int, bool]] = []  # (first frame, last frame, barge_in)
        self._clears: list[int] = []  # frame index of each clear
        self._callbacks: list[_Callback] = []  # held back for shuffled/duplicated delivery
        self._outbox: asyncio.Queue[_Callback | None] = asyncio.Queue()
        self._answered_at = 0.0
        self._stream: twiml_parser.StreamInstruction | None = None
        self._heard = bytearray()

    # -- helpers ------------------------------------------------------------------------------

    def _now_ms(self) -> float:
        """Call time = the caller's audio clock (20 ms per frame played), so the timeline lines
        up with what was heard even when a loaded machine delays the loop."""
        return float(self._frame * FRAME_MS)

    def _log(self, text: str) -> None:
        self.report.timeline.append((self._now_ms(), text))

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    def _end(self, reason: str, note: str | None = None) -> None:
        """End the call for ``reason`` (the first reason wins; ``note`` goes on the timeline)."""
        if self._ended is not None and not self._ended.done():
            if note:
                self._log(note)
            self._ended.set_result(reason)

    async def _send(self, message: dict[str, Any]) -> None:
        if self._ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(json.dumps(message, separators=(",", ":")))

    # -- the call -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _posting(self) -> AsyncIterator[None]:
        """One run's HTTP client and callback sender; a run that ends normally leaves no
        callback unsent (the sender drains, then the late ones are flushed)."""
        self._ended = asyncio.get_running_loop().create_future()
        async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=10.0)) as http:
            self._http = http
            sender = asyncio.create_task(self._send_callbacks())
            try:
                yield
                self._outbox.put_nowait(None)
                await sender
                await self._flush_callbacks()
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)

    async def run(self) -> CallReport:
        config = self.config
        async with self._posting():
            await self._place_call()
        self._measure()  # fills report.heard: the WAV is written from it
        if config.heard_wav is not None:
            write_wav(config.heard_wav, self.report.heard_pcm())
        return self.report

    async def run_stream(self, document: str) -> CallReport:
        """Play only the media stream of a call someone else placed and answered: the callee of
        an outbound call, whose TwiML the Twilio emulator fetched. Runs ``document``'s
        ``<Connect><Stream>`` with this script and posts the stream's status callbacks; the
        call's own progress callbacks are the emulator's to send."""
        async with self._posting():
            self.report.twiml = document
            try:
                instruction = twiml_parser.parse(document).stream
            except twiml_parser.TwimlError as exc:
                self.report.protocol_errors.append(f"TwiML: {exc}")
                instruction = None
            if instruction is not None:
                self._answered_at = time.monotonic()
                await self._run_stream(instruction)
            self.report.ended_by = self.report.ended_by or "no-stream"
        self._measure()
        return self.report

    async def _place_call(self) -> None:
        await self._register()
        document = await self._voice_webhook()
        instruction = None
        if document is not None:
            self._answered_at = time.monotonic()  # running TwiML answers an inbound call
            try:
                parsed = twiml_parser.parse(document)
            except twiml_parser.TwimlError as exc:
                self.report.protocol_errors.append(f"TwiML: {exc}")
            else:
                instruction = parsed.stream
                if instruction is None:
                    self._log(f"TwiML without <Connect><Stream>: says {parsed.say!r}")
        if instruction is not None:
            await self._run_stream(instruction)
        self.report.ended_by = self.report.ended_by or "no-stream"
        await self._unregister()
        await self._final_status_callback()

    async def _register(self) -> None:
        """Tell the local Twilio REST emulator this call exists (real Twilio just knows)."""
        if not self.config.twilio_emulator_url or self._http is None:
            return
        await self._http.post(
            f"{self.config.twilio_emulator_url}/_emulator/calls",
            data={"CallSid": self.call_sid},
            auth=(self.config.account_sid, self.config.auth_token),
        )

    async def _unregister(self) -> None:
        if not self.config.twilio_emulator_url or self._http is None:
            return
        with contextlib.suppress(httpx.HTTPError):
            await self._http.post(
                f"{self.config.twilio_emulator_url}/_emulator/calls/{self.call_sid}/end",
                auth=(self.config.account_sid, self.config.auth_token),
            )

    def _base_params(self, status: str) -> dict[str, str]:
        """The voice request parameters ("Request parameters" in
        https://www.twilio.com/docs/voice/twiml), which status callbacks repeat."""
        return {
            "AccountSid": self.config.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": status,
            "Called": self.config.to_number,
            "Caller": self.config.from_number,
            "Direction": "inbound",
            "From": self.config.from_number,
            "To": self.config.to_number,
        }

    async def _voice_webhook(self) -> str | None:
        assert self._http is not None
        url = self.config.voice_url or f"{self.config.api_url}/twilio/voice"
        params = self._base_params("ringing")
        started = time.monotonic()
        response = await self._http.post(
            url, data=params, headers={SIGNATURE_HEADER: sign(self.config.auth_token, url, params)}
        )
        self.report.twiml_ms = round((time.monotonic() - started) * 1000, 1)
        if response.status_code != 200:
            self.report.protocol_errors.append(f"voice webhook answered {response.status_code}")
            self.report.ended_by = f"voice-webhook-{response.status_code}"
            return None
        self.report.twiml = response.text
        return response.text

    async def _final_status_callback(self) -> None:
        """The only status callback Twilio posts for an inbound call: ``completed``, once the
        call has ended, to the number's status callback URL ("Ending the call: callback
        requests", https://www.twilio.com/docs/voice/twiml). ``StatusCallbackEvent`` (initiated,
        ringing, answered) exists only for calls created through the REST API and for
        ``<Dial>`` legs ("If no event is specified, we send the completed status",
        https://www.twilio.com/docs/voice/api/call-resource#statuscallbackevent). Its extra
        parameters are that page's: ``Duration`` (minutes, billed per minute) and
        ``CallDuration`` (seconds) "only present in the completed event", ``Timestamp``,
        ``CallbackSource=call-progress-events`` and ``SequenceNumber`` "starting from 0"."""
        duration = round(time.monotonic() - self._answered_at) if self._answered_at else 0
        self.report.call_duration_s = duration
        params = self._base_params("completed")
        params.update(
            {
                "CallDuration": str(duration),
                "Duration": str(-(-duration // 60)),
                "Timestamp": _rfc2822_now(),
                "CallbackSource": "call-progress-events",
                "SequenceNumber": "0",  # the first and only event of this call
            }
        )
        url = self.config.status_callback_url or f"{self.config.api_url}/twilio/status"
        self._callback(_Callback(url, params, "completed"))

    def _stream_status(self, event: str, error: str | None = None) -> None:
        """A ``<Stream statusCallback>`` event, only if the TwiML asked for them, with that
        page's parameters and method (https://www.twilio.com/docs/voice/twiml/stream
        #statuscallback): StreamName "defaults to the StreamSid", StreamError only on error."""
        stream = self._stream
        if stream is None or not stream.status_callback:
            return
        params = {
            "AccountSid": self.config.account_sid,
            "CallSid": self.call_sid,
            "StreamSid": self.stream_sid,
            "StreamName": stream.name or self.stream_sid,
            "StreamEvent": event,
            "Timestamp": _iso8601_now(),
        }
        if error:
            params["StreamError"] = error
        self._callback(
            _Callback(stream.status_callback, params, event, stream.status_callback_method)
        )

    def _callback(self, callback: _Callback) -> None:
        """Queue a callback: Twilio posts them on its own, never holding up the media."""
        if self.config.status_order == "inorder":
            self._outbox.put_nowait(callback)
        else:
            self._callbacks.append(callback)

    async def _send_callbacks(self) -> None:
        while (item := await self._outbox.get()) is not None:
            await self._post_callback(item)

    async def _post_callback(self, callback: _Callback) -> None:
        """Signed like every Twilio request: the full URL (query string included) followed by
        the sorted POST parameters, so a GET signs its URL alone
        (https://www.twilio.com/docs/usage/webhooks/webhooks-security)."""
        assert self._http is not None
        token = self.config.auth_token
        try:
            if callback.method == "GET":
                separator = "&" if "?" in callback.url else "?"
                url = f"{callback.url}{separator}{urlencode(callback.params)}"
                headers = {SIGNATURE_HEADER: sign(token, url, {})}
                response = await self._http.get(url, headers=headers)
            else:
                headers = {SIGNATURE_HEADER: sign(token, callback.url, callback.params)}
                response = await self._http.post(
                    callback.url, data=callback.params, headers=headers
                )
            code = response.status_code
        except httpx.HTTPError:
            code = 0
        self.report.status_callbacks.append((callback.label, code))

    async def _flush_callbacks(self) -> None:
        """Callbacks held back for ``shuffled``/``duplicated`` delivery. Twilio fires events in
        order but "there is no guarantee they will arrive in the same order"
        (call-resource#statuscallbackevent), and retries a request it considers failed when
        the URL asks for it (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-
        overrides): both must leave the same record."""
        batch = list(self._callbacks)
        if self.config.status_order == "duplicated":
            batch = batch + batch
        random.Random(self.config.seed).shuffle(batch)
        for callback in batch:
            await self._post_callback(callback)
        self._callbacks.clear()

    # -- the media stream ---------------------------------------------------------------------

    async def _run_stream(self, instruction: twiml_parser.StreamInstruction) -> None:
        self._stream = instruction
        headers = {SIGNATURE_HEADER: sign(self.config.auth_token, instruction.url, {})}
        try:
            ws = await connect(
                instruction.url, additional_headers=headers, open_timeout=10, max_size=1 << 20
            )
        except Exception as exc:  # Twilio: stream failed to connect, the call ends
            error = _connect_error(exc)
            self.report.protocol_errors.append(f"stream upgrade failed: {error}")
            self.report.ended_by = "stream-connect-failed"
            self._stream_status("stream-error", error)
            return
        self._ws = ws
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            {
                "event": "start",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.config.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": instruction.parameters,
                },
            }
        )
        self._log("stream started (connected + start sent)")
        self._stream_status("stream-started")
        tasks = [
            asyncio.create_task(self._media_loop()),
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._run_script()),
            asyncio.create_task(self._watch_rest()),
        ]
        try:
            async with asyncio.timeout(self.config.max_seconds):
                reason = await self._ended  # type: ignore[misc]
        except TimeoutError:
            reason = "max-seconds"
        self.report.ended_by = reason
        if reason != "edge-closed":
            await self._send(
                {
                    "event": "stop",
                    "sequenceNumber": self._next_seq(),
                    "streamSid": self.stream_sid,
                    "stop": {"accountSid": self.config.account_sid, "callSid": self.call_sid},
                }
            )
            self._log(f"stop sent ({reason})")
        with contextlib.suppress(Exception):
            await ws.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.report.close_code = ws.close_code
        self._stream_status("stream-stopped")

    async def _media_loop(self) -> None:
        """Every 20 ms: one inbound frame out, one frame of playout heard (real time)."""
        assert self._ws is not None
        loop_start = time.monotonic()
        silence = np.zeros(FRAME_BYTES, dtype=np.int16)
        while True:
            pcm = self._next_caller_frame(silence)
            await self._send(
                {
                    "event": "media",
                    "sequenceNumber": self._next_seq(),
                    "streamSid": self.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(self._frame + 1),
                        "timestamp": str(self._frame * FRAME_MS),
                        "payload": base64.b64encode(ulaw_encode(pcm)).decode(),
                    },
                }
            )
            frame, ours, marks = self._playout.play()
            self._heard += frame
            self._hear(frame, ours)
            for name in marks:
                await self._echo_mark(name)
            self._frame += 1
            async with self._tick:
                self._tick.notify_all()
            delay = loop_start + self._frame * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def _next_caller_frame(self, silence: np.ndarray) -> np.ndarray:
        if not self._speaking:
            return silence
        current = self._speaking[0]
        frame, rest = current[:FRAME_BYTES], current[FRAME_BYTES:]
        if rest.size:
            self._speaking[0] = rest
        else:
            self._speaking.pop(0)
            if not self._speaking:
                self._say_done.set()
        if frame.size < FRAME_BYTES:
            frame = np.concatenate([frame, silence[: FRAME_BYTES - frame.size]])
        return frame

    def _hear(self, frame: bytes, ours: bool) -> None:
        loud = ours and level_dbfs(ulaw_decode(frame)) > self.config.hear_threshold_dbfs
        self.report.heard_speech.append(loud)
        if self.report.first_audio_ms is None and loud:
            self.report.first_audio_ms = self._frame * FRAME_MS
        self._loud_run = self._loud_run + 1 if loud else 0
        self._quiet_run = 0 if loud else self._quiet_run + 1
        if not self._heard_state and loud:
            self._heard_state = True
            self._log("caller hears assistant audio")
        elif self._heard_state and self._quiet_run >= 15:
            self._heard_state = False
            self.report.timeline.append(((self._frame - 14) * FRAME_MS, "audio stops"))

    async def _echo_mark(self, name: str) -> None:
        self.report.marks_echoed += 1
        await self._send(
            {
                "event": "mark",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                await self._handle(message)
        except ConnectionClosed:
            pass
        self._log(f"stream closed by the edge (code {self._ws.close_code})")
        # The edge closes after a REST redirect it made has returned, so the emulator knows by
        # now; asking once (no waiting) keeps the long-poll and the close from racing.
        outcome = None
        with contextlib.suppress(httpx.HTTPError, ValueError):
            outcome = await self._rest_outcome(wait_s=0)
        self._end(*(outcome or ("edge-closed",)))

    async def _handle(self, message: str | bytes) -> None:
        """Check what the edge sends like Twilio does (warnings 31950/31951: the message is
        not acted on), then act on it."""
        try:
            command = edge_messages.read(message, self.stream_sid)
        except edge_messages.StreamWarning as warning:
            self.report.protocol_errors.append(str(warning))
            return
        if isinstance(command, edge_messages.Media):
            if self.report.first_media_ms is None:
                self.report.first_media_ms = self._now_ms()
                self._log("first assistant media received")
            self._playout.media(command.payload)
        elif isinstance(command, edge_messages.Mark):
            for echoed in self._playout.mark(command.name):
                await self._echo_mark(echoed)
        else:
            dropped, marks = self._playout.clear()
            self.report.clears += 1
            self.report.cleared_ms += dropped / 8
            self._clears.append(self._frame)
            self._log(f"clear received: {dropped / 8:.0f} ms of buffered audio dropped")
            for name in marks:
                await self._echo_mark(name)

    async def _run_script(self) -> None:
        for step in self.steps:
            await self._step(step)
        self._end("script-finished")

    async def _wait_tick(self) -> None:
        async with self._tick:
            await self._tick.wait()

    async def _step(self, step: Step) -> None:
        if isinstance(step, Say):
            first = self._frame
            self._say_done.clear()
            self._speaking.append(step.audio)
            last = first + -(-step.audio.size // FRAME_BYTES) - 1
            self._says.append((first, last, step.barge_in))
            self._log(f"{step.label} ({step.audio.size / 8:.0f} ms)")
            if step.wait:
                await self._say_done.wait()
                self._log(f"{step.label}: done")
        elif isinstance(step, WaitForSpeech):
            start = self._frame
            while not self._heard_state and (self._frame - start) * FRAME_MS < step.limit_ms:
                await self._wait_tick()
        elif isinstance(step, WaitForSilence):
            start, heard = self._frame, self._heard_state
            while (self._frame - start) * FRAME_MS < step.limit_ms:
                heard = heard or self._loud_run > 0
                if heard and self._quiet_run * FRAME_MS >= step.silence_ms:
                    break
                await self._wait_tick()
        elif isinstance(step, Pause):
            await asyncio.sleep(step.ms / 1000)
        elif isinstance(step, Dtmf):
            self._log(f"caller presses {step.digit}")
            await self._send(
                {
                    "event": "dtmf",
                    "streamSid": self.stream_sid,
                    "sequenceNumber": self._next_seq(),
                    "dtmf": {"track": "inbound_track", "digit": step.digit},
                }
            )
        elif isinstance(step, Hangup):
            self._log("caller hangs up")
            self._end("caller-hangup")
            await asyncio.Event().wait()  # the call is ending; nothing more to do

    async def _rest_outcome(self, wait_s: float) -> tuple[str, str] | None:
        """Ask the Twilio REST emulator (waiting up to ``wait_s``) whether the call was completed
        or redirected through the REST API: (reason, timeline note), or None."""
        base = self.config.twilio_emulator_url
        if not base or self._http is None:
            return None
        url = f"{base}/_emulator/calls/{self.call_sid}/wait"
        auth = (self.config.account_sid, self.config.auth_token)
        response = await self._http.get(
            url, params={"timeout": wait_s}, auth=auth, timeout=wait_s + 5
        )
        state = response.json()
        if state.get("status") == "completed":
            return "rest-completed", "call completed through the Twilio REST API"
        if state.get("twiml"):
            return (
                "rest-redirected",
                f"call redirected through the Twilio REST API: {state['twiml']}",
            )
        return None

    async def _watch_rest(self) -> None:
        """Long-poll the Twilio REST emulator: a completed or redirected call ends the stream."""
        if not self.config.twilio_emulator_url or self._http is None:
            return
        while True:
            try:
                outcome = await self._rest_outcome(wait_s=25)
            except (httpx.HTTPError, ValueError):
                await asyncio.sleep(0.5)
                continue
            if outcome:
                self._end(*outcome)
                return

    # -- measurements -------------------------------------------------------------------------

    def _measure(self) -> None:
        self.report.heard = bytes(self._heard)
        self.report.timeline.sort(key=lambda item: item[0])
        speech = self.report.heard_speech
        for first, last, barge_in in self._says:
            if barge_in:
                quiet = _first_quiet_run(speech, first)
                if quiet is not None:
                    self.report.barge_in_to_silence_ms.append((quiet - first) * FRAME_MS)
                clear = next((c for c in self._clears if c >= first), None)
                if clear is not None:
                    self.report.barge_in_to_clear_ms.append((clear - first) * FRAME_MS)
            else:
                reply = next((k for k in range(last + 1, len(speech)) if speech[k]), None)
                if reply is not None:
                    self.report.response_ms.append((reply - last) * FRAME_MS)


def _connect_error(exc: Exception) -> str:
    """The StreamError Twilio reports when the upgrade fails: 31920 "responds ... with an HTTP
    status other than 101", 31902 "refuses the connection request", 31901 "does not receive a
    response" (https://www.twilio.com/docs/api/errors/31920, /31902, /31901)."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return f"31920: Stream - WebSocket - Handshake Error (HTTP {status})"
    if isinstance(exc, ConnectionRefusedError):
        return "31902: Stream - WebSocket - Connection Refused"
    if isinstance(exc, TimeoutError | OSError):
        return f"31901: Stream - WebSocket - Connection Timeout ({exc})"
    return f"31920: Stream - WebSocket - Handshake Error ({exc})"


def _first_quiet_run(speech: list[bool], start: int) -> int | None:
    run = 0
    for index in range(start, len(speech)):
        run = 0 if speech[index] else run + 1
        if run == SILENT_RUN_FRAMES:
            return index - SILENT_RUN_FRAMES + 1
    return None


async def run_call(config: CallerConfig, steps: list[Step]) -> CallReport:
    """Place one simulated call and return its report."""
    return await SimulatedCall(config, steps).run()
