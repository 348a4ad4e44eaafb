"""The Vapi emulator's ``PATCH /assistant/{id}``: auth, uuid ids, 404, the create's checks, and
a replaced ``server`` that later webhooks use."""

import json
import uuid
from pathlib import Path

import httpx
import pytest

from infra.vapi_emulator import VapiEmulator

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def vapi():
    emulator = VapiEmulator(KEY)
    await emulator.start()
    yield emulator
    await emulator.stop()


async def _assistant(client, vapi):
    body = {"name": "a", "server": {"url": "https://old.example/hook", "timeoutSeconds": 20}}
    created = await client.post(f"{vapi.base_url}/assistant", json=body, headers=AUTH)
    return created.json()


async def test_patch_replaces_server_and_keeps_the_rest(vapi):
    async with httpx.AsyncClient() as client:
        assistant = await _assistant(client, vapi)
        server = {"url": "https://new.example/vapi/webhook", "headers": {"x-vapi-secret": "s" * 20}}
        patched = await client.patch(
            f"{vapi.base_url}/assistant/{assistant['id']}", json={"server": server}, headers=AUTH
        )
    assert patched.status_code == 200
    body = patched.json()
    assert body["server"] == server  # the whole object: timeoutSeconds is gone, as with Vapi
    assert body["name"] == "a"
    assert body["createdAt"] == assistant["createdAt"]
    assert vapi.assistants[assistant["id"]]["server"] == server


@pytest.mark.parametrize(
    ("path_id", "body", "status"),
    [
        ("not-a-uuid", {"name": "b"}, 400),
        (str(uuid.uuid4()), {"name": "b"}, 404),
        (None, {"serverUrl": "https://legacy.example"}, 400),  # removed field: rejected
        (None, {"server": {"url": "not a url"}}, 400),
        (None, ["not", "an", "object"], 400),
    ],
)
async def test_patch_refuses_what_vapi_refuses(vapi, path_id, body, status):
    async with httpx.AsyncClient() as client:
        assistant = await _assistant(client, vapi)
        target = path_id or assistant["id"]
        url = f"{vapi.base_url}/assistant/{target}"
        assert (await client.patch(url, json=body)).status_code == 401
        answer = await client.patch(url, json=body, headers=AUTH)
    assert answer.status_code == status
    assert vapi.assistants[assistant["id"]]["server"]["url"] == "https://old.example/hook"


SPEC = Path(__file__).resolve().parents[3] / "shared/reference/vapi-openapi.json"


@pytest.mark.skipif(not SPEC.exists(), reason="Vapi's OpenAPI schema is not beside the repo")
def test_update_dto_declares_what_the_create_dto_declares():
    # update.py reuses the create's checks; that holds only while the two DTOs agree.

    schemas = json.loads(SPEC.read_text())["components"]["schemas"]
    update = schemas["UpdateAssistantDTO"]
    assert set(update["properties"]) == set(schemas["CreateAssistantDTO"]["properties"])
    assert not update.get("required")
