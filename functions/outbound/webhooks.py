"""Twilio webhooks of the calls we place: TwiML when a call is answered, its status callbacks.

``POST /twilio/outbound/answer?dial=ID`` is the call's ``Url``: Twilio requests it when the callee
answers (after answering machine detection, whose verdict comes as ``AnsweredBy``). It answers
``<Hangup/>`` for a machine under the "hangup" policy and for a fax always, and otherwise what
``/twilio/voice`` answers an incoming call: a session and a ``<Connect><Stream>`` to the edge with
a stream token for this CallSid, plus the call's signed options (variables, first message, the
callee as Vapi's customer). ``POST /twilio/outbound/status?dial=ID`` queues the call's status
callbacks for the worker exactly like ``/twilio/status`` does, with the dial id added. Twilio
signs the URL with its query, so both check ``X-Twilio-Signature`` first, as every Twilio route
does.
"""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, Request, Response

from functions import aws, web
from functions.events import twilio_event
from functions.observability import bind_call_sid
from functions.outbound.dial import (
    ANSWER_PATH,
    DIAL_PARAM,
    STATUS_PATH,
    DialPlan,
    call_options,
    is_machine,
)
from functions.outbound.store import get_outbound_store
from functions.twilio_webhooks import (
    TWIML,
    _bad_request,
    _first,
    _forbidden,
    _status_problem,
    _validated_form,
    _write_session,
    stream_twiml,
)
from voicebridge import call_overrides
from voicebridge.identifiers import is_call_sid

router = APIRouter()
_DIAL_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")


def _dial_id(request: Request) -> str | None:
    value = request.query_params.get("dial", "")
    return value if _DIAL_ID.fullmatch(value) else None


def _hangup() -> Response:
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    response.hangup()
    return Response(str(response), media_type=TWIML)


@router.post(ANSWER_PATH)
async def answer(request: Request) -> Response:
    config = web.settings()
    form = await _validated_form(request, config, ANSWER_PATH)
    if form is None:
        return _forbidden()
    call_sid, dial_id = _first(form, "CallSid"), _dial_id(request)
    if not is_call_sid(call_sid) or dial_id is None:
        return Response("CallSid or dial id missing or malformed", 400, media_type="text/plain")
    bind_call_sid(call_sid)
    answered_by = _first(form, "AnsweredBy") or None
    if not config.outbound_table:
        web.logger.error("outbound call answered but OUTBOUND_TABLE is not configured")
        return _hangup()
    outbound = get_outbound_store(config.outbound_table, config.aws_endpoint_url)
    until = web.deadline()  # Twilio waits for this TwiML: every AWS call is bounded by it
    try:
        item = await aws.call(
            until, outbound.dependency, outbound.answered, dial_id, call_sid, answered_by
        )
    except Exception:
        web.logger.exception("outbound dial not readable; hanging up", extra={"dial": dial_id})
        return _hangup()
    if item is None:
        web.logger.error("outbound call answered for an unknown dial", extra={"dial": dial_id})
        return _hangup()
    plan = DialPlan.from_item(item)
    if answered_by == "fax" or (is_machine(answered_by) and plan.machine_detection == "hangup"):
        web.logger.info("answered by a machine: hanging up", extra={"answeredBy": answered_by})
        return _hangup()
    await _write_session(
        config, call_sid, plan.from_number, plan.to, plan.assistant_id, "outbound-api", until
    )
    web.logger.info(
        "outbound call answered",
        extra={"assistantId": plan.assistant_id, "answeredBy": answered_by},
    )
    options = call_overrides.encode(
        config.stream_token_secret or "", call_sid, call_options(plan, answered_by)
    )
    twiml = stream_twiml(
        request,
        config,
        call_sid,
        plan.assistant_id,
        optional=[("from", plan.from_number), ("to", plan.to)],
        signed=list(options.items()),
    )
    return Response(twiml, media_type=TWIML)


@router.post(STATUS_PATH, status_code=204)
async def status(request: Request) -> Response:
    config = web.settings()
    form = await _validated_form(request, config, STATUS_PATH)
    if form is None:
        return _forbidden()
    dial_id = _dial_id(request)
    if dial_id is None:
        return Response("dial id missing or malformed", 400, media_type="text/plain")
    params = {name: _first(form, name) for name in form}
    problem = _status_problem(params)
    if problem:
        return _bad_request(problem)
    envelope = twilio_event(params, time.time(), {DIAL_PARAM: dial_id})
    bind_call_sid(envelope.call_sid)
    if not await web.enqueue(config, envelope, web.deadline()):  # bounded, with fallbacks
        return Response("event not accepted; retry", status_code=503, media_type="text/plain")
    return Response(status_code=204)
