"""What ships: the Lambda bundle (make build-*) and the edge image (infra/Dockerfile).

Docker cannot run here, so the Dockerfile is checked as text for what matters. Both artefacts
install only their slice of pyproject.toml (infra/deps.py), so every third-party import in the
code they copy must be satisfied by that slice: checked statically (lazy imports included).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from infra import deps
from tests.deploy import cfn

ROOT = Path(__file__).resolve().parents[2]
LOCAL = {"voicebridge", "functions", "media_edge", "infra", "tests", "benchmarks"}
# deployable (= its pyproject slice in infra/deps.py) -> the packages copied into it
SHIPPED = {"lambda": {"voicebridge", "functions"}, "edge": {"voicebridge", "media_edge"}}


def _imports(packages: set[str]) -> set[str]:
    """Top-level module names imported anywhere in the packages' source."""
    names: set[str] = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[str]) -> set[str]:
    """Distributions the requirements pull in (as installed in this venv), transitively."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        for line in md.distribution(req.name).requires or []:
            sub = Requirement(line)
            wanted = not sub.marker or any(
                sub.marker.evaluate({"extra": extra}) for extra in ["", *req.extras]
            )
            if wanted:
                sub.marker = None
                todo.append(sub)
    return seen


@pytest.mark.parametrize("deployable", sorted(SHIPPED))
def test_shipped_code_imports_only_what_its_slice_installs(deployable: str) -> None:
    packages = SHIPPED[deployable]
    imported = _imports(packages)
    local = imported & LOCAL
    assert local <= packages, f"{deployable} imports {local - packages}, which it does not ship"
    third_party = imported - LOCAL - set(sys.stdlib_module_names) - {"__future__"}
    providers = md.packages_distributions()
    installed = _closure(deps.requirements(deployable))
    missing = {
        module
        for module in third_party
        if not {_norm(d) for d in providers.get(module, [module])} & installed
    }
    assert not missing, f"{deployable} imports {missing}, not in its pyproject slice"


def test_slices_are_disjoint_where_it_matters() -> None:
    # The functions never pay for numpy/websockets, the edge never for FastAPI.
    assert "numpy" not in _closure(deps.requirements("lambda"))
    assert "fastapi" not in _closure(deps.requirements("edge"))
    with pytest.raises(ValueError, match="unknown deployable"):
        deps.requirements("worker")


def test_lambda_build_recipe_installs_the_slice_for_lambda_and_copies_its_packages() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    target = "build-ApiFunction build-WorkerFunction build-ConsoleGatewayFunction:"
    recipe = makefile.split(target, 1)[1].split("\n\n", 1)[0]
    assert "infra/deps.py lambda" in recipe
    flags = makefile.split("LAMBDA_PIP  :=", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ").split()
    assert {"manylinux2014_aarch64", "3.12", "cp", "--only-binary=:all:"} <= set(flags)
    copied = re.search(r"cp -R ([\w ]+) \"\$\(ARTIFACTS_DIR\)/\"", recipe)
    assert copied
    assert set(copied.group(1).split()) == SHIPPED["lambda"]
    # sam build reaches the recipe through infra/lambda/Makefile (CodeUri) from the repo root.
    assert cfn.TEMPLATE["Globals"]["Function"]["CodeUri"] == "infra/lambda"
    assert (ROOT / "infra" / "lambda" / "Makefile").read_text().count("-f Makefile $@") == 1
    for name in cfn.functions():
        assert cfn.RESOURCES[name]["Metadata"]["WorkingDirectory"] == "."


def test_dockerfile_is_a_slim_multi_stage_non_root_edge_image() -> None:
    instructions = cfn.dockerfile()
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert len(stages) >= 2
    assert all(s.startswith("python:3.12-slim") for s in stages)
    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM") :]
    users = [rest for word, rest in final if word == "USER"]
    assert users
    assert users[-1] not in {"root", "0", "0:0"}
    copied = {rest.split()[0] for word, rest in final if word == "COPY" and "--from" not in rest}
    assert copied == SHIPPED["edge"]
    assert "infra/deps.py edge" in " ".join(rest for word, rest in instructions if word == "RUN")


def test_dockerfile_runs_the_edge_module_with_health_check_and_sigterm() -> None:
    instructions = dict(cfn.dockerfile())
    entry = instructions.get("ENTRYPOINT") or instructions["CMD"]
    assert entry.startswith("[")
    command = ast.literal_eval(entry)
    assert command[-2:] == ["-m", "media_edge"]
    assert (ROOT / "media_edge" / "__main__.py").is_file()
    health = instructions["HEALTHCHECK"]
    assert "/health" in health
    assert "urllib.request" in health
    assert instructions["STOPSIGNAL"] == "SIGTERM"
    port = cfn.edge_container()["PortMappings"][0]["ContainerPort"]
    assert instructions["EXPOSE"] == str(port)
    assert f"EDGE_PORT={port}" in instructions["ENV"].split()


def test_dockerignore_keeps_the_context_to_what_the_image_copies() -> None:
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    assert allowed == {"pyproject.toml", "infra/deps.py", *SHIPPED["edge"]}
    assert (
        "docker buildx build --platform linux/arm64 --load -f infra/Dockerfile"
        in (ROOT / "Makefile").read_text()
    )
