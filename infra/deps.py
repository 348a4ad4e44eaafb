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


def requirements(deployable: str, pyproject: Path = PYPROJECT) -> list[str]:
    """Shared runtime dependencies followed by the deployable's own extra."""
    if deployable not in DEPLOYABLES:
        raise ValueError(f"unknown deployable {deployable!r}; one of {', '.join(DEPLOYABLES)}")
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return [*project["dependencies"], *project["optional-dependencies"][deployable]]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in DEPLOYABLES:
        print(f"usage: python {argv[0]} {{{'|'.join(DEPLOYABLES)}}}", file=sys.stderr)
        return 2
    print("\n".join(requirements(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
