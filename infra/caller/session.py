"""One simulated phone call, played the way Twilio plays it.

Twilio's side of the call: it posts the signed voice webhook, runs the TwiML, opens the Media
Stream with a signed upgrade, sends ``connected``/``start`` then one ``media`` frame every 20 ms
in real time, plays what it is sent through a real-time buffer (marks echoed after playout,
``clear`` drops the buffer and echoes pending marks), sends ``stop`` when the caller hangs up,
and posts status callbacks. The caller's behaviour is a script of steps. Everything heard is
kept, so latencies are measured on what a caller would actually hear.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from infra.audio import FRAME_MS, level_dbfs, ulaw_decode, ulaw_encode, write_wav
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
    status_callback_url: str | None = None  # default {api_url}/twilio/status
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
    close_code: int | None = None

    def heard_pcm(self) -> np.ndarray:
        return ulaw_decode(self.heard) if self.heard else np.zeros(0, dtype=np.int16)

    def heard_speech_ms(self) -> int:
        return sum(self.heard_speech) * FRAME_MS


class _Ended(Exception):
    """Internal: the call is over (reason in args[0])."""


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
        self._callbacks: list[tuple[str, dict[str, str]]] = []
        self._outbox: asyncio.Queue[tuple[str, dict[str, str], str] | None] = asyncio.Queue()
        self._callback_seq = 0
        self._answered_at = 0.0
        self._stream_callback: str | None = None
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

    async def run(self) -> CallReport:
        config = self.config
        self._ended = asyncio.get_running_loop().create_future()
        async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=10.0)) as http:
            self._http = http
            sender = asyncio.create_task(self._send_callbacks())
            try:
                await self._place_call()
                self._outbox.put_nowait(None)
                await sender
                await self._flush_callbacks()
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
        if config.heard_wav is not None:
            write_wav(config.heard_wav, self.report.heard_pcm())
        self._measure()
        return self.report

    async def run_stream(self, document: str) -> CallReport:
        """Play only the media stream of a call someone else placed and answered: the callee of
        an outbound call, whose TwiML the Twilio emulator fetched. Runs ``document``'s
        ``<Connect><Stream>`` with this script and posts the stream's status callbacks; the
        call's own progress callbacks are the emulator's to send."""
        self._ended = asyncio.get_running_loop().create_future()
        async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=10.0)) as http:
            self._http = http
            sender = asyncio.create_task(self._send_callbacks())
            try:
                self.report.twiml = document
                try:
                    instruction = twiml_parser.parse(document).stream
                except twiml_parser.TwimlError as exc:
                    self.report.protocol_errors.append(f"TwiML: {exc}")
                    instruction = None
                if instruction is not None:
                    self._answered_at = time.monotonic()
                    await self._stream(instruction)
                self.report.ended_by = self.report.ended_by or "no-stream"
                self._outbox.put_nowait(None)
                await sender
                await self._flush_callbacks()
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
        self._measure()
        return self.report

    async def _place_call(self) -> None:
        await self._register()
        await self._status_callback("initiated")
        await self._status_callback("ringing")
        document = await self._voice_webhook()
        instruction = None
        if document is not None:
            try:
                parsed = twiml_parser.parse(document)
            except twiml_parser.TwimlError as exc:
                self.report.protocol_errors.append(f"TwiML: {exc}")
            else:
                instruction = parsed.stream
                if instruction is None:
                    self._log(f"TwiML without <Connect><Stream>: says {parsed.say!r}")
        if instruction is not None:
            self._answered_at = time.monotonic()
            await self._status_callback("in-progress")
            await self._stream(instruction)
        self.report.ended_by = self.report.ended_by or "no-stream"
        await self._unregister()
        await self._status_callback("completed")

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

    async def _status_callback(self, status: str) -> None:
        params = self._base_params(status)
        params.update(
            {
                "CallbackSource": "call-progress-events",
                "SequenceNumber": str(self._callback_seq),
                "Timestamp": formatdate(usegmt=True),
            }
        )
        self._callback_seq += 1
        if status == "completed":
            duration = round(time.monotonic() - self._answered_at) if self._answered_at else 0
            params.update({"CallDuration": str(duration), "Duration": str(-(-duration // 60))})
        url = self.config.status_callback_url or f"{self.config.api_url}/twilio/status"
        await self._callback(url, params, status)

    async def _stream_status(self, event: str) -> None:
        if not self._stream_callback:
            return
        params = {
            "AccountSid": self.config.account_sid,
            "CallSid": self.call_sid,
            "StreamSid": self.stream_sid,
            "StreamName": self.stream_sid,
            "StreamEvent": event,
            "Timestamp": formatdate(usegmt=True),
        }
        await self._callback(self._stream_callback, params, event)

    async def _callback(self, url: str, params: dict[str, str], label: str) -> None:
        """Queue a callback: Twilio posts them on its own, never holding up the media."""
        if self.config.status_order == "inorder":
            self._outbox.put_nowait((url, params, label))
        else:
            self._callbacks.append((url, params))

    async def _send_callbacks(self) -> None:
        while (item := await self._outbox.get()) is not None:
            await self._post_callback(*item)

    async def _post_callback(self, url: str, params: dict[str, str], label: str) -> None:
        assert self._http is not None
        headers = {SIGNATURE_HEADER: sign(self.config.auth_token, url, params)}
        try:
            response = await self._http.post(url, data=params, headers=headers)
            code = response.status_code
        except httpx.HTTPError:
            code = 0
        self.report.status_callbacks.append((label, code))

    async def _flush_callbacks(self) -> None:
        """Callbacks held back for ``shuffled``/``duplicated`` delivery (Twilio does both)."""
        batch = list(self._callbacks)
        if self.config.status_order == "duplicated":
            batch = batch + batch
        random.Random(self.config.seed).shuffle(batch)
        for url, params in batch:
            label = params.get("CallStatus") if "StreamEvent" not in params else None
            await self._post_callback(url, params, label or params["StreamEvent"])
        self._callbacks.clear()

    # -- the media stream ---------------------------------------------------------------------

    async def _stream(self, instruction: twiml_parser.StreamInstruction) -> None:
        self._stream_callback = instruction.status_callback
        headers = {SIGNATURE_HEADER: sign(self.config.auth_token, instruction.url, {})}
        try:
            ws = await connect(
                instruction.url, additional_headers=headers, open_timeout=10, max_size=1 << 20
            )
        except Exception as exc:  # Twilio: stream failed to connect, the call ends
            self.report.protocol_errors.append(f"stream upgrade failed: {exc}")
            self.report.ended_by = "stream-connect-failed"
            await self._stream_status("stream-error")
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
        await self._stream_status("stream-started")
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
        await self._stream_status("stream-stopped")

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
        """Check what the edge sends like Twilio does (errors 31950/31951), then act on it."""
        if isinstance(message, bytes):
            self.report.protocol_errors.append("31950: binary frame on the media stream")
            return
        try:
            data = json.loads(message)
            event = data["event"]
        except (ValueError, KeyError, TypeError):
            self.report.protocol_errors.append(f"31951: not a Twilio message: {message[:80]!r}")
            return
        if event in ("media", "mark", "clear") and data.get("streamSid") != self.stream_sid:
            self.report.protocol_errors.append(f"31951: {event} with a wrong streamSid")
            return
        if event == "media":
            try:
                payload = base64.b64decode(data["media"]["payload"], validate=True)
            except (KeyError, TypeError, ValueError):
                self.report.protocol_errors.append("31951: media without a base64 payload")
                return
            if self.report.first_media_ms is None:
                self.report.first_media_ms = self._now_ms()
                self._log("first assistant media received")
            self._playout.media(payload)
        elif event == "mark":
            name = str((data.get("mark") or {}).get("name", ""))
            for echoed in self._playout.mark(name):
                await self._echo_mark(echoed)
        elif event == "clear":
            dropped, marks = self._playout.clear()
            self.report.clears += 1
            self.report.cleared_ms += dropped / 8
            self._clears.append(self._frame)
            self._log(f"clear received: {dropped / 8:.0f} ms of buffered audio dropped")
            for name in marks:
                await self._echo_mark(name)
        else:
            self.report.protocol_errors.append(f"31951: unknown event {event!r}")

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
