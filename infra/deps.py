"""Print one deployable's runtime requirements, read from pyproject.toml (the only list).

``python infra/deps.py lambda`` -> the shared dependencies plus the ``lambda`` extra, one per
line: what ``make build-ApiFunction`` installs for the Lambda platform and what the edge image
installs with ``edge``. Standard library only, so it runs before anything is installed.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
DEPLOYABLES = ("lambda", "edge")


BUILD_TOOLS = ("compile",)  # extras a build stage installs alone (mypyc for the edge image)


def requirements(deployable: str, pyproject: Path = PYPROJECT) -> list[str]:
    """Shared runtime dependencies followed by the deployable's own extra; for a build tool,
    its extra alone."""
    if deployable not in (*DEPLOYABLES, *BUILD_TOOLS):
        raise ValueError(f"unknown deployable {deployable!r}; one of {', '.join(DEPLOYABLES)}")
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extra = project["optional-dependencies"][deployable]
    return list(extra) if deployable in BUILD_TOOLS else [*project["dependencies"], *extra]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in (*DEPLOYABLES, *BUILD_TOOLS):
        choices = "|".join((*DEPLOYABLES, *BUILD_TOOLS))
        print(f"usage: python {argv[0]} {{{choices}}}", file=sys.stderr)
        return 2
    print("\n".join(requirements(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
