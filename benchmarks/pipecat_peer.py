"""The pipecat peer for ``make bench-edge``: the same Twilio <-> Vapi bridge built from pipecat.

What a team would build with pipecat (``pipecat-ai``, the ``bench`` extra) to put a Vapi
assistant behind Twilio, from pipecat's own parts and their defaults:
- the Twilio side is pipecat's Twilio recipe: a FastAPI WebSocket route served by uvicorn,
  ``parse_telephony_websocket`` for ``connected``/``start``, ``FastAPIWebsocketTransport`` with
  ``TwilioFrameSerializer`` (mu-law 8 kHz <-> the pipeline's PCM, soxr VHQ stream resampling);
- the pipeline runs at its default rates (16 kHz in, 24 kHz out) with a ``VADProcessor`` around
  ``SileroVADAnalyzer`` (the ONNX model pipecat ships) on the caller's audio;
- the Vapi side is ``WebsocketClientTransport`` on the ``websocketCallUrl`` that ``POST /call``
  returns. Vapi's transport carries raw mu-law 8 kHz binary frames, and pipecat has no
  serializer for a raw audio socket, so ``RawMulawSerializer`` below is the one piece written
  here: it is ``TwilioFrameSerializer``'s audio path (pipecat's ``pcm_to_ulaw``/``ulaw_to_pcm``
  with its stream resampler) without the JSON envelope.

Two ``PipelineWorker``s per call, one per direction (caller -> VAD -> Vapi, Vapi -> caller),
under one ``WorkerRunner``; ``ToOutput`` turns input audio frames into output audio frames,
which is all a bridge does between the transports. Differences from our edge, all in pipecat's
favour or neutral: no X-Twilio-Signature or stream-token check, no ``mark``s, no Vapi control
messages, ``auto_hang_up`` off (it would call Twilio's REST API at the end of every call);
idle timeout off (the benchmark sends audio the whole time anyway).

    python -m benchmarks.pipecat_peer PORT VAPI_BASE_URL [--no-vad]
"""

from __future__ import annotations

import sys
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.responses import PlainTextResponse
from pipecat.audio.utils import create_stream_resampler, pcm_to_ulaw, ulaw_to_pcm
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.client import WebsocketClientParams, WebsocketClientTransport
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

VAPI_KEY = "bench-vapi-key"  # benchmarks.edge's fake Vapi
VAPI_RATE = 8000  # Vapi's websocket transport, audioFormat mulaw / 8000 (what our edge asks for)


class RawMulawSerializer(FrameSerializer):
    """Raw mu-law binary frames <-> pipeline PCM: TwilioFrameSerializer's audio path, unwrapped."""

    def __init__(self) -> None:
        super().__init__()
        self._rate = 0
        self._in = create_stream_resampler()
        self._out = create_stream_resampler()

    async def setup(  # type: ignore[override,unused-ignore]  # as pipecat's own serializers
        self, setup: FrameProcessorSetup
    ) -> None:
        await super().setup(setup)
        self._rate = setup.audio_in_sample_rate

    async def serialize(self, frame: Frame) -> bytes | None:
        if not isinstance(frame, OutputAudioRawFrame):
            return None
        data = await pcm_to_ulaw(frame.audio, frame.sample_rate, VAPI_RATE, self._out)
        return data or None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if not isinstance(data, bytes):
            return None
        pcm = await ulaw_to_pcm(data, VAPI_RATE, self._rate, self._in)
        if not pcm:
            return None
        return InputAudioRawFrame(audio=pcm, num_channels=1, sample_rate=self._rate)


class ToOutput(FrameProcessor):
    """Input audio (from one transport) becomes output audio (for the other one)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            frame = OutputAudioRawFrame(
                audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels
            )
        await self.push_frame(frame, direction)


def app(vapi_base: str, vad: bool = True) -> FastAPI:
    api = FastAPI()
    client = httpx.AsyncClient()

    @api.get("/health")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @api.websocket("/media")
    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        _, call_data = await parse_telephony_websocket(websocket)
        call_sid, stream_sid = call_data["call_id"], call_data["stream_id"]
        twilio = FastAPIWebsocketTransport(
            websocket,
            FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=TwilioFrameSerializer(
                    stream_sid,
                    call_sid,
                    params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
                ),
            ),
        )
        body = {"assistantOverrides": {"metadata": {"callSid": call_sid}}}
        answer = (
            await client.post(
                f"{vapi_base}/call", json=body, headers={"Authorization": f"Bearer {VAPI_KEY}"}
            )
        ).json()
        vapi = WebsocketClientTransport(
            answer["transport"]["websocketCallUrl"],
            WebsocketClientParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=RawMulawSerializer(),
                additional_headers={"Authorization": f"Bearer {VAPI_KEY}"},
            ),
        )
        analysis = [VADProcessor(vad_analyzer=SileroVADAnalyzer())] if vad else []
        to_vapi = Pipeline([twilio.input(), *analysis, ToOutput(), vapi.output()])
        to_twilio = Pipeline([vapi.input(), ToOutput(), twilio.output()])
        runner = WorkerRunner(handle_sigint=False)
        workers: list[Any] = [
            PipelineWorker(pipeline, idle_timeout_secs=None) for pipeline in (to_vapi, to_twilio)
        ]

        @twilio.event_handler("on_client_disconnected")
        async def _gone(*_: Any) -> None:
            for worker in workers:
                await worker.cancel()

        await runner.add_workers(*workers)
        await runner.run()

    return api


def main() -> None:
    port, vapi_base = int(sys.argv[1]), sys.argv[2]
    vad = "--no-vad" not in sys.argv[3:]  # the variant pipecat-novad: what the VAD costs
    uvicorn.run(app(vapi_base, vad), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
