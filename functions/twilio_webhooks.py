"""Twilio webhooks: ``/twilio/voice`` answers a call with a media stream to the edge;
``/twilio/status`` takes call-status and stream-status callbacks into the queue.

Both validate ``X-Twilio-Signature`` against the URL Twilio used (see ``web.public_url``) before
anything else: an invalid request gets 403 and causes no write, no enqueue.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response

from functions import web
from functions.events import twilio_event
from functions.observability import MetricUnit, bind_call_sid
from voicebridge import stream_token, telemetry, twilio_signature
from voicebridge.config import Settings

router = APIRouter()
TWIML = "application/xml"
CALL_SID = re.compile(r"^CA[0-9a-zA-Z]{1,62}$")
NOT_CONFIGURED = "Sorry, this number is not set up yet. Goodbye."


Form = dict[str, str | list[str]]


def parse_form(body: bytes) -> Form:
    """URL-encoded form -> {name: value}, repeated names as lists (Twilio signs every value)."""
    form: Form = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        if name not in form:
            form[name] = value
        else:
            previous = form[name]
            form[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
    return form


def _first(form: Mapping[str, str | list[str]], name: str) -> str:
    value = form.get(name, "")
    return value[0] if isinstance(value, list) else value


async def _validated_form(request: Request, config: Settings, route: str) -> Form | None:
    """The form, if ``X-Twilio-Signature`` signs it for the URL Twilio used; else None."""
    body = await web.read_body(request)
    form = parse_form(body)
    url = web.public_url(request, config)
    signature = request.headers.get(twilio_signature.SIGNATURE_HEADER)
    if not twilio_signature.is_valid(config.twilio_auth_token or "", url, form, signature):
        web.count_auth_failure(route, "missing" if not signature else "invalid")
        return None
    return form


def _assistant_for(config: Settings, called: str) -> str | None:
    if called:
        try:
            bound = web.store(config).get_binding(called)
        except Exception:  # a storage hiccup must not drop the call: use the default
            web.logger.exception("binding lookup failed; using the default assistant")
        else:
            if bound:
                return bound
    return config.vapi_assistant_id


def _stream_twiml(
    request: Request, config: Settings, call_sid: str, form: Form, assistant_id: str
) -> str:
    """``<Connect><Stream>`` to the edge; the token binds this call to its assistant."""
    from twilio.twiml.voice_response import Connect, Stream, VoiceResponse

    token = stream_token.mint(
        config.stream_token_secret or "",
        call_sid,
        assistant_id,
        now=time.time(),
        ttl_seconds=config.stream_token_ttl_seconds,
    )
    stream = Stream(
        url=f"{config.edge_public_url}/media",
        status_callback=web.public_url(request, config, "/twilio/status"),
        status_callback_method="POST",
    )
    for name, value in (
        ("callSid", call_sid),
        ("from", _first(form, "From")),
        ("to", _first(form, "To")),
        ("token", token),
    ):
        stream.parameter(name=name, value=value)
    connect = Connect()
    connect.append(stream)
    response = VoiceResponse()
    response.append(connect)
    return str(response)


@router.post("/twilio/voice")
async def voice(request: Request) -> Response:
    config = web.settings()
    form = await _validated_form(request, config, "/twilio/voice")
    if form is None:
        return Response("invalid Twilio signature", status_code=403, media_type="text/plain")
    call_sid = _first(form, "CallSid")
    if not CALL_SID.match(call_sid):
        return Response("CallSid missing or malformed", status_code=400, media_type="text/plain")
    bind_call_sid(call_sid)
    caller, called = _first(form, "From"), _first(form, "To")
    assistant_id = _assistant_for(config, called)
    if not assistant_id:
        from twilio.twiml.voice_response import VoiceResponse

        web.logger.error("no assistant bound to the number and no VAPI_ASSISTANT_ID")
        response = VoiceResponse()
        response.say(NOT_CONFIGURED)
        response.hangup()
        return Response(str(response), media_type=TWIML)
    try:
        web.store(config).put_session(
            call_sid, caller, called, assistant_id, time.time(), config.session_ttl_seconds
        )
    except Exception:
        web.metrics.add_metric(
            name=telemetry.SESSION_WRITE_FAILURES, unit=MetricUnit.Count, value=1
        )
        web.logger.exception("session write failed; answering the call anyway")
    twiml = _stream_twiml(request, config, call_sid, form, assistant_id)
    web.logger.info("call answered", extra={"assistantId": assistant_id})
    return Response(twiml, media_type=TWIML)


@router.post("/twilio/status", status_code=204)
async def status(request: Request) -> Response:
    config = web.settings()
    form = await _validated_form(request, config, "/twilio/status")
    if form is None:
        return Response("invalid Twilio signature", status_code=403, media_type="text/plain")
    params = {name: _first(form, name) for name in form}
    envelope = twilio_event(params, time.time())
    if envelope.call_sid:
        bind_call_sid(envelope.call_sid)
    web.queue(config).send(envelope)
    web.metrics.add_metric(name=telemetry.EVENTS_ENQUEUED, unit=MetricUnit.Count, value=1)
    return Response(status_code=204)
