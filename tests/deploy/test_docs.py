"""The README's deploy guide names only parameters and outputs the template has, and every
parameter a user must answer (no default) is in its `sam deploy --guided` table."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy import cfn

DEPLOY_GUIDE = (
    (Path(__file__).resolve().parents[2] / "README.md").read_text().split("\n## Deploy\n", 1)[1]
)


def test_every_required_parameter_is_in_the_guided_table() -> None:
    required = {n for n, p in cfn.TEMPLATE["Parameters"].items() if "Default" not in p}
    table = set(re.findall(r"^\| `(\w+)`", DEPLOY_GUIDE, re.M))
    assert required <= table, f"undocumented: {sorted(required - table)}"


def test_named_parameters_and_outputs_exist() -> None:
    parameters = set(cfn.TEMPLATE["Parameters"])
    outputs = set(cfn.TEMPLATE["Outputs"])
    named_outputs = set(re.findall(r"outputs? `(\w+)`", DEPLOY_GUIDE))
    assert named_outputs, "the guide names no outputs"
    assert named_outputs <= outputs, sorted(named_outputs - outputs)
    table_names = {
        name
        for cell in re.findall(r"^\| ([^|]+) \|", DEPLOY_GUIDE, re.M)
        for name in re.findall(r"`([A-Z]\w+)`", cell)
    }
    assert table_names <= parameters, sorted(table_names - parameters)
