"""``voicebridge dial`` and ``voicebridge campaign ...``, ``voicebridge dnc ...``: the admin API's
outbound routes from a shell, against the local stack or a deployment.

``--api-url`` and ``--admin-key`` default to ``PUBLIC_BASE_URL`` and ``ADMIN_API_KEY`` (the
``export`` lines ``make run`` prints). Exit status: 0 done, 1 the API refused (its reason is
printed), 2 the API could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

OUTCOME_ORDER = ("answered", "machine", "busy", "no-answer", "failed", "canceled", "do-not-call")


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}")
        self.status = status
        self.body = body


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-url",
        default=os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000"),
        help="the API (default: $PUBLIC_BASE_URL)",
    )
    parser.add_argument(
        "--admin-key",
        default=os.environ.get("ADMIN_API_KEY"),
        help="the admin key (default: $ADMIN_API_KEY)",
    )


def _call_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--assistant", help="assistant id (default: the one bound to --from)")
    parser.add_argument("--from", dest="from_number", help="caller ID, a number of your account")
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template variable for the assistant (repeatable)",
    )
    parser.add_argument("--first-message", help="what the assistant says first")
    parser.add_argument(
        "--machine-detection",
        choices=["off", "hangup", "message"],
        default="off",
        help="answering machines: hang up, or leave --voicemail-message after the beep",
    )
    parser.add_argument("--voicemail-message", help="said to an answering machine")
    parser.add_argument("--ring-timeout", type=int, help="seconds to let it ring (5-600)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    dial = sub.add_parser("dial", help="have the assistant call a number now")
    dial.add_argument("to", help="the number to call, E.164 (+14155550123)")
    _call_options(dial)
    dial.add_argument("--wait", action="store_true", help="wait for the call's outcome")
    _connection(dial)
    dial.set_defaults(run=run_dial)

    campaign = sub.add_parser("campaign", help="create and run calling campaigns")
    actions = campaign.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a campaign (a draft) from a CSV or JSON")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", type=Path, help="header: number[,name][,timezone][,variable...]")
    source.add_argument("--json", type=Path, help='a list of {"number", "name"?, ...}')
    create.add_argument("--name")
    _call_options(create)
    create.add_argument("--max-concurrent", type=int, default=1)
    create.add_argument("--cps", type=float, default=1.0, help="calls per second (default 1)")
    create.add_argument("--window", help="calling hours in each contact's zone, e.g. 09:00-20:00")
    create.add_argument("--timezone", default="UTC", help="zone of contacts without one")
    create.add_argument("--retries", type=int, default=0, help="retries of busy/no-answer/failed")
    create.add_argument("--backoff", type=int, default=300, help="seconds before the 1st retry")
    create.add_argument("--start", action="store_true", help="start it at once")
    _connection(create)
    create.set_defaults(run=run_campaign_create)
    for name in ("start", "pause", "resume", "cancel"):
        action = actions.add_parser(name, help=f"{name} a campaign")
        action.add_argument("campaign_id")
        _connection(action)
        action.set_defaults(run=run_campaign_action)
    status = actions.add_parser("status", help="progress, counts and each contact's outcome")
    status.add_argument("campaign_id")
    status.add_argument("--contacts", action="store_true", help="list every contact")
    status.add_argument("--watch", type=float, metavar="S", help="refresh every S s until done")
    _connection(status)
    status.set_defaults(run=run_campaign_status)

    dnc = sub.add_parser("dnc", help="the do-not-call list")
    dnc_actions = dnc.add_subparsers(dest="action", required=True)
    add = dnc_actions.add_parser("add", help="never call these numbers")
    add.add_argument("numbers", nargs="+")
    add.add_argument("--reason")
    remove = dnc_actions.add_parser("remove", help="take a number off the list")
    remove.add_argument("number")
    listing = dnc_actions.add_parser("list", help="the numbers on the list")
    for parser in (add, remove, listing):
        _connection(parser)
        parser.set_defaults(run=run_dnc)


def _request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    if not args.admin_key:
        raise ApiError(0, {"error": "no admin key: pass --admin-key or set ADMIN_API_KEY"})
    response = httpx.request(
        method,
        args.api_url.rstrip("/") + path,
        json=body,
        headers={"Authorization": f"Bearer {args.admin_key}"},
        timeout=60,
    )
    try:
        data = response.json()
    except ValueError:
        data = {"error": response.text}
    if response.status_code >= 300:
        raise ApiError(response.status_code, data)
    return data


def _options(args: argparse.Namespace) -> dict[str, Any]:
    variables = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep:
            raise ApiError(0, {"error": f"--var {item!r}: expected NAME=VALUE"})
        variables[name] = value
    options: dict[str, Any] = {
        "assistantId": args.assistant,
        "from": args.from_number,
        "variables": variables or None,
        "firstMessage": args.first_message,
        "machineDetection": args.machine_detection,
        "voicemailMessage": args.voicemail_message,
        "ringTimeoutSeconds": args.ring_timeout,
    }
    return {k: v for k, v in options.items() if v is not None}


def run_dial(args: argparse.Namespace) -> int:
    call = _request(args, "POST", "/calls", {"to": args.to, **_options(args)})
    print(f"calling {call['to']} from {call['from']}: {call['callSid']} ({call['status']})")
    if not args.wait:
        return 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            record = _request(args, "GET", f"/calls/{call['callSid']}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            record = {}
        if record.get("outcome"):
            print(f"outcome: {record['outcome']} (status {record.get('call_status')})")
            if record.get("transcript"):
                print(record["transcript"])
            return 0
        time.sleep(1)
    print("no outcome after 10 minutes", file=sys.stderr)
    return 1


def _window(text: str, zone: str) -> dict[str, str]:
    start, sep, end = text.partition("-")
    if not sep:
        raise ApiError(0, {"error": f"--window {text!r}: expected START-END, e.g. 09:00-20:00"})
    return {"start": start.strip(), "end": end.strip(), "timezone": zone}


def run_campaign_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        **_options(args),
        "maxConcurrent": args.max_concurrent,
        "maxCallsPerSecond": args.cps,
        "retries": {"max": args.retries, "backoffSeconds": args.backoff},
    }
    if args.name:
        body["name"] = args.name
    if args.window:
        body["window"] = _window(args.window, args.timezone)
    if args.csv:
        body["contactsCsv"] = args.csv.read_text(encoding="utf-8-sig")
    else:
        body["contacts"] = json.loads(args.json.read_text(encoding="utf-8"))
    created = _request(args, "POST", "/campaigns", body)
    print(f"campaign {created['campaignId']}: {created['contacts']} contacts")
    _print_rejected(created.get("rejected") or [])
    if args.start:
        started = _request(args, "POST", f"/campaigns/{created['campaignId']}/start")
        print(f"status: {started['status']}")
    return 0


def _print_rejected(rejected: list[dict[str, Any]]) -> None:
    if rejected:
        print(f"{len(rejected)} rows rejected:")
        for row in rejected:
            print(f"  row {row['row']}: {row.get('number') or '-'}: {row['reason']}")


def run_campaign_action(args: argparse.Namespace) -> int:
    result = _request(args, "POST", f"/campaigns/{args.campaign_id}/{args.action}")
    print(f"campaign {result['campaignId']}: {result['status']}")
    return 0


def _fetch_status(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    page = _request(args, "GET", f"/campaigns/{args.campaign_id}?limit=1000")
    contacts = list(page["contacts"])
    while args.contacts and page.get("nextCursor"):
        page = _request(
            args, "GET", f"/campaigns/{args.campaign_id}?limit=1000&cursor={page['nextCursor']}"
        )
        contacts += page["contacts"]
    return page, contacts


def render_status(campaign: dict[str, Any], contacts: list[dict[str, Any]], full: bool) -> str:
    counts = campaign["counts"]
    lines = [
        f"campaign {campaign['campaignId']} ({campaign.get('name') or 'unnamed'}): "
        f"{campaign['status']}"
        + (f" - {campaign['statusReason']}" if campaign.get("statusReason") else ""),
        f"  {counts['done']}/{counts['total']} done, {counts['inProgress']} in progress,"
        f" {counts['pending']} pending, {counts['retriesScheduled']} retries scheduled",
        "  outcomes: "
        + ", ".join(f"{name} {counts['outcomes'].get(name, 0)}" for name in OUTCOME_ORDER),
    ]
    if full:
        lines.append(f"  {'number':<16} {'state':<12} {'outcome':<12} attempts")
        lines += [
            f"  {c['number']:<16} {c['state']:<12} {c.get('outcome') or '-':<12} {c['attempts']}"
            for c in contacts
        ]
    return "\n".join(lines)


def run_campaign_status(args: argparse.Namespace) -> int:
    while True:
        campaign, contacts = _fetch_status(args)
        print(render_status(campaign, contacts, args.contacts))
        if not args.watch or campaign["status"] in ("completed", "cancelled"):
            return 0
        time.sleep(args.watch)
        print()


def run_dnc(args: argparse.Namespace) -> int:
    if args.action == "add":
        body: dict[str, Any] = {"numbers": args.numbers}
        if args.reason:
            body["reason"] = args.reason
        print(f"added {_request(args, 'POST', '/dnc', body)['added']}")
    elif args.action == "remove":
        from urllib.parse import quote

        _request(args, "DELETE", f"/dnc/{quote(args.number)}")
        print(f"removed {args.number}")
    else:
        cursor = ""
        while True:
            page = _request(args, "GET", f"/dnc?limit=1000{cursor}")
            for entry in page["numbers"]:
                print(f"{entry['number']}  {entry.get('reason') or ''}".rstrip())
            if not page.get("nextCursor"):
                return 0
            cursor = f"&cursor={page['nextCursor']}"
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the chosen outbound subcommand with the CLI's exit codes."""
    try:
        return int(args.run(args))
    except httpx.HTTPError as exc:
        print(f"voicebridge {args.command}: cannot reach {args.api_url}: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        body = exc.body if isinstance(exc.body, dict) else {"error": exc.body}
        reason = body.get("error") or body.get("detail") or body
        print(f"voicebridge {args.command}: {reason}", file=sys.stderr)
        _print_rejected(body.get("rejected") or [])
        return 1
