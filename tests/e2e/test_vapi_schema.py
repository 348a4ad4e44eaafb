"""What we send to Vapi, checked against Vapi's published OpenAPI schema.

The requests are the real ones, captured by the emulator during a call through the local stack:
``POST /assistant`` built by the control plane, ``POST /call`` built by the media edge. The schema
file lives outside the repo (``../shared/reference/vapi-openapi.json``); nothing of it is copied
here. Besides JSON-schema validity, properties the schema does not declare are reported, because
Vapi's API rejects them ("property X should not exist").
"""

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from infra.caller import Hangup, WaitForSpeech
from tests.e2e.helpers import call

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SPEC = REPO.parent / "shared/reference/vapi-openapi.json"
URI = "urn:vapi-openapi"


def _fix_spec_quirks(node):
    """Read Vapi's generated spec the way its API behaves (class-validator, not JSON Schema):
    string enums typed ``object`` (``AudioFormat.format``) are strings; an ``enum`` placed on an
    array (``serverMessages``) constrains its items, which ``items`` already says; ``oneOf`` of
    TypeScript unions is "any of" (``model: string | known-model-enum`` overlaps); patterns
    written as JavaScript literals (``/^[a-z]$/``) lose their slashes."""
    if isinstance(node, dict):
        values = node.get("enum")
        if node.get("type") == "object" and values and all(isinstance(v, str) for v in values):
            node["type"] = "string"
        if node.get("type") == "array" and "enum" in node:
            del node["enum"]
        if "oneOf" in node:
            node["anyOf"] = node.pop("oneOf")
        pattern = node.get("pattern")
        if isinstance(pattern, str) and len(pattern) > 1 and pattern[0] == pattern[-1] == "/":
            node["pattern"] = pattern[1:-1]  # a JavaScript regex literal, not a pattern
        for value in list(node.values()):
            _fix_spec_quirks(value)
    elif isinstance(node, list):
        for value in node:
            _fix_spec_quirks(value)
    return node


@pytest.fixture(scope="module")
def spec():
    if not SPEC.exists():
        pytest.skip(f"Vapi's OpenAPI schema is not beside the repo ({SPEC}); CI provides it")
    return _fix_spec_quirks(json.loads(SPEC.read_text()))


class Checker:
    def __init__(self, spec):
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(URI, resource)

    def validator(self, schema):
        return Draft202012Validator(schema, registry=self.registry)

    def ref(self, name):
        return {"$ref": f"{URI}#/components/schemas/{name}"}

    def resolve(self, schema):
        while isinstance(schema, dict) and "$ref" in schema:
            pointer = schema["$ref"].split("#", 1)[1]
            node = self.spec
            for part in pointer.strip("/").split("/"):
                node = node[part]
            schema = node
        return schema

    def errors(self, instance, name):
        found = self.validator(self.ref(name)).iter_errors(instance)
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in found]

    def undeclared(self, instance, schema, path=""):
        """Paths of properties the schema does not declare (Vapi's whitelist validation)."""
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return []
        if "anyOf" in schema:
            for branch in schema["anyOf"]:
                if self.validator(self._absolute(branch)).is_valid(instance):
                    return self.undeclared(instance, branch, path)
            return []
        properties = {}
        for part in [schema, *schema.get("allOf", [])]:
            properties.update(self.resolve(part).get("properties", {}))
        out = []
        if isinstance(instance, dict) and properties:
            for key, value in instance.items():
                if key not in properties:
                    out.append(f"{path}{key}")
                else:
                    out += self.undeclared(value, properties[key], f"{path}{key}.")
        elif isinstance(instance, list) and "items" in schema:
            for index, item in enumerate(instance):
                out += self.undeclared(item, schema["items"], f"{path}{index}.")
        return out

    def _absolute(self, schema):
        if isinstance(schema, dict) and str(schema.get("$ref", "")).startswith("#"):
            return {"$ref": URI + schema["$ref"]}
        return schema


async def test_requests_we_send_match_vapis_schema(stack, spec):
    report = await call(stack, [WaitForSpeech(), Hangup()])
    assert report.protocol_errors == []
    captured = {(r.method, r.path): r.body for r in stack.vapi.requests}
    checker = Checker(spec)
    problems = []
    for key, dto in (
        (("POST", "/assistant"), "CreateAssistantDTO"),
        (("POST", "/call"), "CreateCallDTO"),
    ):
        assert key in captured, f"no {key} was sent"
        body = captured[key]
        problems += [f"{key} breaks {dto}: {error}" for error in checker.errors(body, dto)]
        problems += [
            f"{key}: Vapi answers 400 'property {path} should not exist'"
            for path in checker.undeclared(body, checker.ref(dto))
        ]
    assert problems == []
