"""Twilio webhooks: ``/twilio/voice`` answers a call with a media stream to the edge;
``/twilio/status`` takes call-status and stream-status callbacks into the queue.

Both validate ``X-Twilio-Signature`` against the URL Twilio used (see ``web.public_url``) before
anything else, then that the request is for our account (an ``AccountSid``, equal to
``TWILIO_ACCOUNT_SID`` when that is set): a failure gets 403 and causes no write, no enqueue.
Every identifier is then matched in full (``voicebridge.identifiers``): Twilio's signature
concatenates names and values without separators, so the signature of
``CallSid=X&CallStatus=ringing`` also signs a lone ``CallSid`` of ``X + "CallStatusringing"``,
which only a full match of the SID refuses.

When AWS falters both still answer within ``web.WEBHOOK_DEADLINE_S`` (see README, "When AWS
falters"): ``/twilio/voice`` with the number's last known assistant and without a session,
``/twilio/status`` with its event kept in the outbox's fallback.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response

from functions import aws, web
from functions.events import twilio_event
from functions.observability import MetricUnit, bind_call_sid
from voicebridge import stream_token, telemetry, twilio_signature
from voicebridge.config import Settings
from voicebridge.identifiers import is_account_sid, is_call_sid, is_stream_sid

router = APIRouter()
TWIML = "application/xml"
NOT_CONFIGURED = "Sorry, this number is not set up yet. Goodbye."
# "<Parameter> ... name and value ... must be under 500 characters" (name + value of each pair,
# https://www.twilio.com/docs/voice/twiml/stream#custom-parameters): a longer one and Twilio
# rejects the whole TwiML, so the call would fail. A SIP URI as From can be that long.
MAX_PARAMETER_CHARS = 500
STREAM_EVENTS = frozenset({"stream-started", "stream-stopped", "stream-error"})


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
    """The form, if ``X-Twilio-Signature`` signs it for the URL Twilio used and it is for our
    account; else None."""
    body = await web.read_body(request)
    form = parse_form(body)
    url = web.public_url(request, config)
    signature = request.headers.get(twilio_signature.SIGNATURE_HEADER)
    if not twilio_signature.is_valid(config.twilio_auth_token or "", url, form, signature):
        web.count_auth_failure(route, "missing" if not signature else "invalid")
        return None
    account, ours = form.get("AccountSid"), config.twilio_account_sid
    if not is_account_sid(account) or (ours and account != ours):
        web.count_auth_failure(route, "another account")
        return None
    return form


def _forbidden() -> Response:
    return Response("invalid Twilio request", status_code=403, media_type="text/plain")


def _bad_request(reason: str) -> Response:
    return Response(reason, status_code=400, media_type="text/plain")


def stream_twiml(
    request: Request,
    config: Settings,
    call_sid: str,
    assistant_id: str,
    *,
    optional: list[tuple[str, str]],
    signed: list[tuple[str, str]] | None = None,
) -> str:
    """``<Connect><Stream>`` to the edge, for an inbound call or one we placed. ``callSid`` and the
    stream token (binding this call to its assistant) always go, and so do ``signed`` parameters
    (an outbound call's signed options: the edge refuses the stream if one is missing).
    ``optional`` ones (``from``/``to``) go only if they fit Twilio's limit on a ``<Parameter>``'s
    name + value: the edge needs neither to bridge, and the session keeps both whatever their
    length (a SIP URI ``From`` can be longer)."""
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
    kept = [(n, v) for n, v in optional if len(n) + len(v) < MAX_PARAMETER_CHARS]
    if len(kept) < len(optional):
        dropped = sorted({name for name, _ in optional} - {name for name, _ in kept})
        web.logger.warning(
            "stream parameter too long for Twilio; left out", extra={"dropped": dropped}
        )
    for name, value in [("callSid", call_sid), *kept, ("token", token), *(signed or [])]:
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
        return _forbidden()
    call_sid = _first(form, "CallSid")
    if not is_call_sid(call_sid):
        return _bad_request("CallSid missing or malformed")
    bind_call_sid(call_sid)
    until = web.deadline()
    caller, called = _first(form, "From"), _first(form, "To")
    assistant_id = await web.assistant_for(config, called, until)
    if not assistant_id:
        from twilio.twiml.voice_response import VoiceResponse

        web.logger.error("no assistant bound to the number and no VAPI_ASSISTANT_ID")
        response = VoiceResponse()
        response.say(NOT_CONFIGURED)
        response.hangup()
        return Response(str(response), media_type=TWIML)
    direction = _first(form, "Direction") or "inbound"
    await _write_session(config, call_sid, caller, called, assistant_id, direction, until)
    twiml = stream_twiml(
        request, config, call_sid, assistant_id, optional=[("from", caller), ("to", called)]
    )
    web.logger.info("call answered", extra={"assistantId": assistant_id})
    return Response(twiml, media_type=TWIML)


async def _write_session(
    config: Settings,
    call_sid: str,
    caller: str,
    called: str,
    assistant_id: str,
    direction: str,
    until: aws.Deadline,
) -> None:
    """Record the live call (one write); a failure is counted and logged, never the caller's
    problem (the stream token carries everything the edge needs)."""
    store = web.store(config)
    write = functools.partial(store.put_session, direction=direction[:32])
    try:
        written = await aws.call(
            until,
            store.dependency,
            write,
            call_sid,
            caller,
            called,
            assistant_id,
            time.time(),
            config.session_ttl_seconds,
        )
    except Exception:
        web.metrics.add_metric(
            name=telemetry.SESSION_WRITE_FAILURES, unit=MetricUnit.Count, value=1
        )
        web.logger.exception("session write failed; answering the call anyway")
        return
    if not written:
        web.logger.info("session exists already (a retried or replayed request); kept as is")


def _status_problem(params: Mapping[str, str]) -> str | None:
    """Why a status callback's identifiers are not Twilio's, or None."""
    if not is_call_sid(params.get("CallSid")):
        return "CallSid missing or malformed"
    if params.get("StreamEvent"):
        if params["StreamEvent"] not in STREAM_EVENTS:
            return "unknown StreamEvent"
        if not is_stream_sid(params.get("StreamSid")):
            return "StreamSid missing or malformed"
        return None
    sequence = params.get("SequenceNumber", "")
    if sequence and not (sequence.isascii() and sequence.isdecimal() and len(sequence) <= 10):
        return "SequenceNumber malformed"
    if len(params.get("CallStatus", "")) > 32:
        return "CallStatus malformed"
    return None


@router.post("/twilio/status", status_code=204)
async def status(request: Request) -> Response:
    config = web.settings()
    form = await _validated_form(request, config, "/twilio/status")
    if form is None:
        return _forbidden()
    params = {name: _first(form, name) for name in form}
    problem = _status_problem(params)
    if problem:
        return _bad_request(problem)
    envelope = twilio_event(params, time.time())
    bind_call_sid(envelope.call_sid)
    if not await web.enqueue(config, envelope, web.deadline()):
        return Response("event not accepted; retry", status_code=503, media_type="text/plain")
    return Response(status_code=204)
