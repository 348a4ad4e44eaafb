"""``PATCH /assistant/{id}``: Vapi's UpdateAssistantDTO, checked the way the emulator checks
a create (kept apart from ``validation.py``, which owns the create and call DTOs).

Sources (Vapi's OpenAPI schema): ``#/paths/~1assistant~1{id}/patch`` (operationId
``AssistantController_update``: the path ``id`` is ``format: uuid``, the body is required,
200 answers the whole ``Assistant``); ``#/components/schemas/UpdateAssistantDTO`` declares the
same properties as ``CreateAssistantDTO`` (every one optional), so the create's whitelist and
field checks apply unchanged (tests/e2e/test_vapi_schema.py compares the two property sets when
the schema is at hand). A PATCH replaces each top-level property it names, e.g. the whole
``server`` object (``#/components/schemas/Server``), and leaves the others as they were.
"""

from __future__ import annotations

import uuid
from typing import Any

from infra.vapi_emulator.validation import ValidationFailed, validate_assistant

IMMUTABLE = frozenset({"id", "orgId", "createdAt", "updatedAt"})  # Assistant, not the DTO


def parse_assistant_id(value: str) -> str | None:
    """The id when it is a UUID (``format: uuid``), else None."""
    try:
        return str(uuid.UUID(value)) if len(value) == 36 else None
    except ValueError:
        return None


def validate_update(body: Any) -> dict[str, Any]:
    """Check an UpdateAssistantDTO body; return it or raise ValidationFailed."""
    if not isinstance(body, dict):
        raise ValidationFailed(["body must be a JSON object"])
    return validate_assistant(body)


def apply_update(assistant: dict[str, Any], update: dict[str, Any], now: str) -> dict[str, Any]:
    """The assistant after the PATCH: named top-level properties replaced, ``updatedAt`` moved."""
    return {
        **assistant,
        **update,
        **{k: assistant[k] for k in IMMUTABLE if k in assistant},
        "updatedAt": now,
    }
