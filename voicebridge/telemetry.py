"""Metric and log contract shared by the code that emits and the template that alarms.

Every metric is emitted as CloudWatch EMF by Powertools ``Metrics`` into ``NAMESPACE`` with the
single fixed dimension ``service`` (Powertools adds it from ``POWERTOOLS_SERVICE_NAME``). The
template's alarms and dashboard name these exact metrics; a test checks that they agree.
"""

from __future__ import annotations

NAMESPACE = "Voicebridge"

SERVICE_API = "voicebridge-api"
SERVICE_WORKER = "voicebridge-worker"
SERVICE_EDGE = "voicebridge-edge"
SERVICE_DIALER = "voicebridge-dialer"
SERVICE_CONSOLE = "voicebridge-console"  # the console's WebSocket API (functions.console.gateway)

# Control plane (service = SERVICE_API unless noted).
WEBHOOK_LATENCY = "WebhookLatency"  # ms, per request, every route
AUTH_FAILURES = "AuthFailures"  # count, rejected signatures / secrets / admin keys
SESSION_WRITE_FAILURES = "SessionWriteFailures"  # count, /twilio/voice answered anyway
TOOL_LATENCY = "ToolLatency"  # ms, per tool call
TOOL_ERRORS = "ToolErrors"  # count, tool calls answered with an error
EVENTS_ENQUEUED = "EventsEnqueued"  # count
EVENTS_DEFERRED = "EventsDeferred"  # count, SQS refused: kept in a fallback for replay (outbox)
STALE_BINDINGS = "StaleBindings"  # count, binding read failed: the last known one was served
WEBHOOK_REPLAYS = "WebhookReplays"  # count, a Vapi webhook or tool call seen before (replay.py)
EVENTS_PROCESSED = "EventsProcessed"  # count (service = SERVICE_WORKER)
EVENTS_FAILED = "EventsFailed"  # count (service = SERVICE_WORKER)

# Media edge (service = SERVICE_EDGE).
BRIDGE_LATENCY = "BridgeLatency"  # ms, per-frame processing time inside the edge
FIRST_AUDIO_LATENCY = "FirstAudioLatency"  # ms, stream start -> first assistant audio sent
RESPONSE_LATENCY = "ResponseLatency"  # ms, caller speech end -> first assistant audio sent
BARGE_IN_LATENCY = "BargeInLatency"  # ms, interruption signal -> clear sent
VAPI_CONNECT_TIME = "VapiConnectTime"  # ms, POST /call + websocket open
ACTIVE_CALLS = "ActiveCalls"  # count, gauge sampled at each flush
FRAMES_DROPPED = "FramesDropped"  # count, duplicate or late inbound frames
FRAMES_FILLED = "FramesFilled"  # count, silence frames inserted for timestamp gaps
UNKNOWN_TWILIO_EVENTS = "UnknownTwilioEvents"  # count, media-stream event types we ignored
CALL_ERRORS = "CallErrors"  # count; emitted twice: with service only, and with service+reason
STREAMS_EVICTED = "StreamsEvicted"  # count, pre-start connections closed for newer ones
CLAIM_STORE_ERRORS = "ClaimStoreErrors"  # count, streams admitted on this task's claim alone
LIVE_EVENTS_DROPPED = "LiveEventsDropped"  # count, console events the edge could not deliver
WORKER_EXITS = "WorkerExits"  # count, EDGE_WORKERS > 1: workers that died unexpectedly (restarted)
RECORDINGS_STORED = "RecordingsStored"  # count, recordings complete in the bucket
RECORDING_FAILURES = "RecordingFailures"  # count, recordings given up (the calls went on)
CALL_RECORD_FAILURES = "CallRecordFailures"  # count, picture/recording link not stored

# Outbound dialer (service = SERVICE_DIALER).
CALLS_DIALED = "CallsDialed"  # count, Twilio Calls.create accepted
DIAL_ERRORS = "DialErrors"  # count, Calls.create refused or unreachable (the contact is kept)
