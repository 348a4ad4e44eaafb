"""Compile the edge's per-frame modules with mypyc: the build the image ships.

``python infra/edge_compile.py OUT`` copies ``media_edge`` and ``voicebridge`` to OUT and
compiles MODULES there (each gets a C extension next to its ``.py``; mypyc's shared runtime
goes to OUT itself), then removes the C sources and build tree. Python imports an extension
before a ``.py`` of the same name, so OUT on ``sys.path`` (or as the working directory) runs
the compiled build, and the same sources without the extensions are the pure-Python fallback.
infra/Dockerfile runs exactly this in its builder stage, ``make test`` runs the edge's test
suite against OUT too, and ``benchmarks.edge`` measures OUT as the ``shipped`` variant.

MODULES is the one list of what is compiled. It names globs, so a module added to
``media_edge/core`` is compiled with the rest; a pattern that matches nothing fails the build
(a rename must be reflected here). What mypyc needs of the code: a class compiled here that
interpreted code subclasses carries ``@mypyc_attr(allow_interpreted_subclasses=True)``
(``WsConnection``: the server's TwilioSocket and the tests subclass it), and compiled classes
cannot be monkeypatched (the tests that do so run on the pure-Python build only).
Standard library only, plus mypy (``compile`` extra) at build time.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("media_edge", "voicebridge")  # what the image ships; the copy holds both
MODULES = (
    "media_edge/core/*.py",  # the call machine, playout, audio conversion, actions, events
    "media_edge/protocol/twilio.py",  # every Twilio message is parsed here
    "media_edge/dsp/framing.py",
    "media_edge/dsp/vad.py",
    "media_edge/io/ws.py",  # the WebSocket fast path
)
# mypy's own analysis needs the third-party packages' types; where one is missing (e.g. a
# builder without stubs) its values are Any, which compiles to the same generic code.
MYPYC_FLAGS = ("--ignore-missing-imports", "--no-warn-unused-ignores")
STAMP = ".compiled"


class CompileError(RuntimeError):
    """The build failed; the message says which module or step."""


def modules(root: Path = ROOT) -> list[str]:
    """MODULES expanded under ``root`` (``__init__.py`` left interpreted), sorted."""
    found: list[str] = []
    for pattern in MODULES:
        matches = sorted(
            p.relative_to(root).as_posix() for p in root.glob(pattern) if p.name != "__init__.py"
        )
        if not matches:
            raise CompileError(f"{pattern} matches no module: update MODULES in {__file__}")
        found += matches
    return sorted(set(found))


def source_digest(root: Path = ROOT) -> str:
    """A hash of every shipped source file and of this build recipe: OUT is rebuilt when it
    changes, and reused when it does not."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(sys.version.encode())
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def extension_path(out: Path, module: str) -> Path:
    """Where the compiled extension of ``module`` (a ``.py`` path) lands under ``out``."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return out / (module.removesuffix(".py") + suffix)


def build(out: Path, root: Path = ROOT, *, quiet: bool = True) -> Path:
    """Build the compiled tree at ``out`` (reused if it is current); returns ``out``."""
    stamp = out / STAMP
    digest = source_digest(root)
    if stamp.is_file() and stamp.read_text() == digest:
        return out
    listed = modules(root)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for package in PACKAGES:
        shutil.copytree(root / package, out / package, ignore=shutil.ignore_patterns("__pycache__"))
    # Our own (empty) mypy config: mypy would otherwise find the repo's pyproject.toml above a
    # build dir inside the repo (its plugins and strictness are the type gate's, not the build's).
    config = out / "mypyc.ini"
    config.write_text("[mypy]\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypyc", "--config-file", str(config), *MYPYC_FLAGS, *listed],
        cwd=out,
        capture_output=quiet,
        text=True,
        check=False,
    )
    if result.returncode:
        detail = (result.stdout or "") + (result.stderr or "")
        raise CompileError(f"mypyc failed ({result.returncode}):\n{detail[-4000:]}")
    missing = [m for m in listed if not extension_path(out, m).is_file()]
    if missing:
        raise CompileError(f"mypyc built no extension for {missing}")
    for scratch in ("build", ".mypy_cache"):
        shutil.rmtree(out / scratch, ignore_errors=True)
    config.unlink()
    stamp.write_text(digest)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: python {argv[0]} OUT_DIR", file=sys.stderr)
        return 2
    try:
        out = build(Path(argv[1]).resolve())
    except CompileError as exc:
        print(f"edge_compile: {exc}", file=sys.stderr)
        return 1
    print(f"edge_compile: {len(modules())} modules compiled into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
