"""The README stands alone and its deploy guide is right: it names only parameters and outputs
the template has, the first-deploy table is the one ``make deploy`` asks, every secret key is
in the rotation table, every shell variable a command uses is defined, and nothing points
outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from infra import deploy
from tests.deploy import cfn
from voicebridge import config, telemetry

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DEPLOY_GUIDE = README.split("\n## Deploy\n", 1)[1]
CAMEL = re.compile(r"`([A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+)`")


def _table_rows(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| ---")
    ]


def test_the_first_deploy_table_is_what_make_deploy_asks():
    rows = {row[1]: row[2] for row in _table_rows(DEPLOY_GUIDE) if len(row) == 3}
    for ask in deploy.FIRST_DEPLOY:
        assert any(f"`{ask.parameter}`" in k and f"`{ask.env}`" in v for k, v in rows.items()), ask
    required = {n for n, p in cfn.TEMPLATE["Parameters"].items() if "Default" not in p}
    assert required <= {a.parameter for a in deploy.FIRST_DEPLOY}


def test_named_parameters_and_outputs_exist():
    known = set(cfn.TEMPLATE["Parameters"]) | set(cfn.TEMPLATE["Outputs"]) | set(cfn.RESOURCES)
    known |= {getattr(telemetry, n) for n in dir(telemetry) if n.isupper()}  # metric names
    known.add("IncomingPhoneNumbers")  # Twilio's resource
    unknown = set(CAMEL.findall(DEPLOY_GUIDE)) - known
    assert not unknown, sorted(unknown)
    named_outputs = set(re.findall(r"outputs? `(\w+)`", DEPLOY_GUIDE))
    assert named_outputs
    assert named_outputs <= set(cfn.TEMPLATE["Outputs"]), sorted(named_outputs)


def test_every_output_is_in_the_outputs_table():
    table = " ".join(row[0] for row in _table_rows(DEPLOY_GUIDE))
    missing = [name for name in cfn.TEMPLATE["Outputs"] if f"`{name}`" not in table]
    assert not missing, missing


def test_every_secret_key_has_a_rotation_row():
    keys = {row[0].strip("`") for row in _table_rows(DEPLOY_GUIDE) if len(row) == 3}
    assert keys >= config.SECRET_NAMES
    assert cfn.secret_keys() == config.SECRET_NAMES


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_every_shell_variable_used_is_defined_first():
    # make run prints `export` lines for these four (README: "The local stack")
    defined = {"PUBLIC_BASE_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "ADMIN_API_KEY"}
    for block in _shell_blocks(README):
        for line in block.splitlines():
            code = line.split("#", 1)[0]
            used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", code))
            undefined = used - defined
            assert not undefined, f"{sorted(undefined)} used before it is defined: {line}"
            defined |= set(re.findall(r"(?:^|\s|export\s+)([A-Z_][A-Z0-9_]*)=", code))


def test_the_readme_stands_alone():
    for path in (ROOT / "README.md", ROOT / "infra" / "README.md"):
        text = path.read_text()
        assert "../shared" not in text, path
        assert "/work/" not in text, path
        assert "development machine" not in text, path
