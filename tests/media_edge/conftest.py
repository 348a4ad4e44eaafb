"""The edge suite runs twice in ``make test``: on the pure-Python sources, then against the
mypyc build (infra/edge_compile.py) with VOICEBRIDGE_EDGE_BUILD=compiled. That second run must
really import the compiled modules, or it would test the fallback twice: checked first."""

from __future__ import annotations

import importlib
import os
import sysconfig

import pytest

from infra import edge_compile

COMPILED = os.environ.get("VOICEBRIDGE_EDGE_BUILD") == "compiled"


def loaded_build() -> dict[str, bool]:
    """Each module the build compiles -> whether the imported one is its C extension."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    result = {}
    for path in edge_compile.modules():
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        result[module.__name__] = (module.__file__ or "").endswith(suffix)
    return result


def pytest_configure(config: pytest.Config) -> None:
    if COMPILED:
        build = loaded_build()
        if not all(build.values()):
            pure = sorted(name for name, compiled in build.items() if not compiled)
            raise pytest.UsageError(f"VOICEBRIDGE_EDGE_BUILD=compiled, but {pure} are not")
