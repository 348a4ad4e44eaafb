"""The edge image's compiled build (infra/Dockerfile + infra/edge_compile.py), checked offline.

No Docker engine here: the Dockerfile's stages are parsed and checked for what matters (a
builder with a compiler that runs the same build script as `make test`, a runtime stage
without one), and the build script's module list is checked against the tree.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import deps, edge_compile
from tests.deploy import cfn

ROOT = Path(__file__).resolve().parents[2]


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name (``FROM ... AS name``; the last, unnamed one is ``runtime``) -> instructions."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, rest in cfn.dockerfile():
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else "runtime"
            current = result.setdefault(name, [])
        current.append((word, rest))
    return result


def runs(stage: list[tuple[str, str]]) -> str:
    return "\n".join(rest for word, rest in stage if word == "RUN")


def test_a_builder_stage_compiles_the_edge_with_the_script_make_test_uses() -> None:
    compile_stage = stages()["compile"]
    commands = runs(compile_stage)
    assert "gcc" in commands  # a C compiler, on the target platform (buildx runs the stage there)
    assert "infra/deps.py compile" in commands  # the pinned mypy from pyproject's compile extra
    assert "python infra/edge_compile.py /compiled" in commands
    copied = " ".join(rest for word, rest in compile_stage if word == "COPY")
    assert "infra/edge_compile.py" in copied
    assert "EDGE_BUILD=compiled" in " ".join(rest for word, rest in compile_stage if word == "ARG")
    makefile = (ROOT / "Makefile").read_text()
    assert "infra/edge_compile.py .build/edge-compiled" in makefile.split("\ntest:", 1)[1]


def test_the_runtime_stage_has_no_compiler_and_overlays_the_extensions_on_the_sources() -> None:
    runtime = stages()["runtime"]
    assert runtime[0] == ("FROM", "python:3.12-slim")
    assert "gcc" not in runs(runtime)
    assert "mypy" not in runs(runtime)
    copies = [rest for word, rest in runtime if word == "COPY"]
    sources = [c for c in copies if c.split()[0] in {"voicebridge", "media_edge"}]
    overlay = [c for c in copies if c.startswith("--from=compile")]
    assert len(sources) == 2  # the pure-Python fallback, always there
    assert overlay == ["--from=compile /compiled/ ./"]
    assert copies.index(overlay[0]) > copies.index(sources[-1])  # extensions beside the .py
    # The builder keeps only extensions (and mypyc's shared runtime) in what it hands over,
    # and refuses a build kind it does not know.
    commands = runs(stages()["compile"])
    assert "find /compiled -type f ! -name '*.so' -delete" in commands
    assert "exit 1" in commands


def test_compile_extra_is_only_the_pinned_mypy_and_the_edge_has_mypyc_attr_at_run_time() -> None:
    (pin,) = deps.requirements("compile")
    assert pin.startswith("mypy==")
    assert any(r.startswith("mypy-extensions") for r in deps.requirements("edge"))


def test_every_module_pattern_matches_and_the_hot_path_is_in_the_list() -> None:
    listed = edge_compile.modules()
    for module in listed:
        assert (ROOT / module).is_file()
    hot = {"media_edge/core/call.py", "media_edge/io/ws.py", "media_edge/protocol/twilio.py"}
    assert hot <= set(listed)
    assert not any(m.endswith("__init__.py") for m in listed)


def test_a_pattern_that_matches_nothing_fails_the_build_with_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_compile, "MODULES", ("media_edge/renamed.py",))
    with pytest.raises(edge_compile.CompileError, match=r"renamed\.py matches no module"):
        edge_compile.modules()


def test_the_build_is_keyed_by_the_sources(tmp_path: Path) -> None:
    for package in edge_compile.PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "a.py").write_text("x = 1\n")
    before = edge_compile.source_digest(tmp_path)
    (tmp_path / "media_edge" / "a.py").write_text("x = 2\n")
    assert edge_compile.source_digest(tmp_path) != before


def test_tasks_with_more_than_one_vcpu_run_one_worker_per_vcpu() -> None:
    (value,) = [
        e["Value"] for e in cfn.edge_container()["Environment"] if e["Name"] == "EDGE_WORKERS"
    ]
    condition, many, one = value["Fn::If"]
    assert (many, one) == ("auto", "1")
    cpus = {ref["Fn::Equals"][1] for ref in cfn.TEMPLATE["Conditions"][condition]["Fn::Or"]}
    allowed = {str(v) for v in cfn.TEMPLATE["Parameters"]["EdgeCpu"]["AllowedValues"]}
    assert cpus == {c for c in allowed if int(c) > 1024}
