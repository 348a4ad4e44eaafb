"""What the edge sends Vapi for a call the assistant places (variables, first message, the
callee as customer, the voicemail message), checked against Vapi's published OpenAPI schema
like every other request (``test_vapi_schema.py``: skipped when the schema is not beside the
repo)."""

import pytest

from tests.e2e.helpers import record_when
from tests.e2e.test_vapi_schema import Checker, spec  # noqa: F401 - the schema fixture

pytestmark = pytest.mark.e2e


def test_outbound_call_requests_match_vapis_schema(stack, spec):  # noqa: F811
    import httpx

    stack.twilio.outbound.cps = 10.0
    bodies = [
        {"to": "+15550180001", "variables": {"name": "Ada"}, "firstMessage": "Hi {{name}}"},
        {
            "to": "+15550180094",
            "machineDetection": "message",
            "voicemailMessage": "Please call Acme back.",
        },
    ]
    sids = []
    for body in bodies:
        response = httpx.post(
            f"{stack.api_url}/calls", json=body, headers=stack.admin_headers(), timeout=30
        )
        assert response.status_code == 201, response.text
        sids.append(response.json()["callSid"])
    for sid in sids:
        record_when(stack, sid, lambda r: r.get("outcome") and r.get("transcript"), 30)
    creates = [
        r.body
        for r in stack.vapi.requests
        if (r.method, r.path) == ("POST", "/call")
        and r.body.get("assistantOverrides", {}).get("metadata", {}).get("callSid") in sids
    ]
    assert len(creates) == 2
    assert creates[1]["assistantOverrides"]["firstMessage"] == "Please call Acme back."
    checker = Checker(spec)
    problems = []
    for body in creates:
        problems += checker.errors(body, "CreateCallDTO")
        problems += [
            f"Vapi answers 400 'property {path} should not exist'"
            for path in checker.undeclared(body, checker.ref("CreateCallDTO"))
        ]
    assert problems == []
