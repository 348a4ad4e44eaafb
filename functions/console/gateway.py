"""The console's WebSocket API (API Gateway): one Lambda for its authorizer and routes.

``functions.console.gateway.handler`` receives, as API Gateway sends them
(https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-websocket-api-overview.html):

- the ``$connect`` REQUEST authorizer (identity source ``route.request.querystring.ticket``):
  the single-use ticket ``POST /console/ticket`` minted seconds ago is redeemed (deleted as it
  is read) and the socket is allowed, carrying its console session in the authorizer context;
  anything else is denied, so API Gateway refuses the upgrade (403);
- ``$connect``: the socket is recorded (connections table, TTL);
- ``$disconnect``: it and its subscriptions are forgotten;
- ``subscribe`` (route selection ``$request.body.action``), ``{"action": "subscribe", "topic":
  "call:CA..." | "calls", "since": 0}``: the subscription is recorded, then the stored events
  after ``since`` are sent back as ``history`` messages (the last says ``through``: everything up
  to that seq). The edge finds the new subscriber within a second; what it published meanwhile
  shows as a gap in ``seq``, and the page asks again from the last one it has;
- ``unsubscribe``, ``ping`` (keeps an idle socket inside API Gateway's 10 minutes), ``$default``
  (an unknown action: an error message back).

The same handler runs under ``make run`` behind the emulated gateway (``infra/ws_gateway.py``).
No secrets: tickets are random and stored hashed.
"""

from __future__ import annotations

import json
import time
from typing import Any

from functions.console.live import LiveStore, Sockets, history_messages
from functions.observability import logger_for
from voicebridge import live, telemetry
from voicebridge.config import get_settings, running_in_lambda

logger = logger_for(telemetry.SERVICE_CONSOLE)
MAX_BODY_CHARS = 4096  # our client's messages are tiny; API Gateway itself stops at 128 KB


def _store() -> LiveStore:
    config = get_settings("console")
    return LiveStore(
        config.console_connections_table or "",
        config.console_events_table,
        config.aws_endpoint_url,
    )


def _sockets(event: dict[str, Any]) -> Sockets:
    """The management API of the stage this event came through (the documented way to reach
    the callback URL: ``https://{domainName}/{stage}``)."""
    context = event["requestContext"]
    domain, stage = context["domainName"], context["stage"]
    scheme = "http" if domain.startswith(("127.0.0.1", "localhost")) else "https"
    return Sockets(f"{scheme}://{domain}/{stage}")


def _policy(effect: str, event: dict[str, Any], context: dict[str, str]) -> dict[str, Any]:
    return {
        "principalId": context.get("session", "anonymous"),
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": effect, "Resource": event["methodArn"]}
            ],
        },
        "context": context,
    }


def authorize(event: dict[str, Any]) -> dict[str, Any]:
    ticket = (event.get("queryStringParameters") or {}).get("ticket") or ""
    redeemed = _store().redeem_ticket(ticket, time.time()) if ticket else None
    if redeemed is None:
        logger.warning("socket refused", extra={"reason": "no ticket" if not ticket else "bad"})
        return _policy("Deny", event, {})
    session, expires = redeemed
    return _policy("Allow", event, {"session": session, "sessionExpires": str(expires)})


def _reply(status: int, body: str = "") -> dict[str, Any]:
    return {"statusCode": status, "body": body}


def _error(event: dict[str, Any], connection_id: str, message: str) -> dict[str, Any]:
    _sockets(event).send(connection_id, json.dumps({"type": "error", "message": message}))
    return _reply(400, message)


def _subscribe(event: dict[str, Any], connection_id: str, message: dict[str, Any]) -> None:
    topic = live.parse_topic(message.get("topic"))
    since = message.get("since", 0)
    if topic is None:
        _error(event, connection_id, "topic must be 'calls' or 'call:' and a CallSid")
        return
    if type(since) is not int or since < 0:
        _error(event, connection_id, "since must be a seq number (0 for everything)")
        return
    store = _store()
    known = store.connection(connection_id)
    now = time.time()
    if known is None or known["valid_until"] <= now:
        _error(event, connection_id, "this socket's console session has ended: sign in again")
        _sockets(event).close(connection_id)
        return
    store.subscribe(connection_id, topic, known["valid_until"])
    bodies: list[str] = []
    through = since
    if topic != live.TOPIC_CALLS:
        bodies, through = store.history(topic.removeprefix("call:"), since, now)
    sockets = _sockets(event)
    for text in history_messages(topic, bodies, through):
        if not sockets.send(connection_id, text):
            return


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("type") == "REQUEST":
        return authorize(event)
    request = event["requestContext"]
    route, connection_id = request["routeKey"], request["connectionId"]
    if route == "$connect":
        authorizer = request.get("authorizer") or {}
        session, expires = authorizer.get("session"), authorizer.get("sessionExpires")
        if not session or not str(expires).isdigit():
            return _reply(403, "not authorized")
        _store().connect(connection_id, str(session), int(str(expires)), time.time())
        return _reply(200)
    if route == "$disconnect":
        _store().disconnect(connection_id)
        return _reply(200)
    body = event.get("body") or ""
    try:
        message = json.loads(body) if len(body) <= MAX_BODY_CHARS else None
    except ValueError:
        message = None
    if not isinstance(message, dict):
        return _error(event, connection_id, "messages are JSON objects with an action")
    if route == "subscribe":
        _subscribe(event, connection_id, message)
        return _reply(200)
    if route == "unsubscribe":
        topic = live.parse_topic(message.get("topic"))
        if topic is not None:
            _store().unsubscribe(connection_id, topic)
        return _reply(200)
    if route == "ping":
        _sockets(event).send(connection_id, '{"type":"pong"}')
        return _reply(200)
    return _error(event, connection_id, "unknown action (subscribe, unsubscribe, ping)")


if running_in_lambda():
    get_settings("console")  # fail the init with one line naming the variable
