"""What the programs need beyond the standard library, checked once at program start.

pip enforces the floors in pyproject.toml, but a Debian python3 may lack tkinter
(python3-tk is a separate package) and an install with ``--no-deps``, ``--system-site-packages``
or an older distribution package may bring older libraries.  Each console script
(failover/cli/__init__.py) calls :func:`require` before importing its module, so a missing
or too-old library is one line naming the package that provides it, exit 5, never a
traceback.  The floors are Debian 12's versions; tests/test_requirements.py keeps them equal
to pyproject.toml's.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib import metadata

EXIT_CONFIG = 5  # as failover.cli.common.EXIT_CONFIG, without importing it (it needs pyzmq)

# distribution -> (module, oldest version that works, Debian package)
LIBRARIES: dict[str, tuple[str, tuple[int, ...], str]] = {
    "pyzmq": ("zmq", (24, 0), "python3-zmq"),
    "attrs": ("attrs", (22, 2), "python3-attr"),
    "prometheus_client": ("prometheus_client", (0, 16), "python3-prometheus-client"),
}
TKINTER_PACKAGE = "python3-tk"


def parse_version(text: str) -> tuple[int, ...]:
    """The leading numeric parts of a version: '24.0.1' -> (24, 0, 1), '0.17.0rc1' -> (0, 17, 0)."""
    parts = []
    for piece in text.split("."):
        digits = ""
        for ch in piece:
            if not ("0" <= ch <= "9"):
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None if its module is not there.
    Read from the package metadata: the module is not imported (prometheus_client alone
    would add 50 ms to every failc)."""
    module = LIBRARIES[distribution][0]
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # no metadata (a vendored copy): ask the module
        try:
            return str(getattr(importlib.import_module(module), "__version__", "0"))
        except ImportError:
            return None


def library_problem(distribution: str, version: str | None) -> str | None:
    """Why ``version`` of ``distribution`` (None: not importable) does not do, or None."""
    module, floor, package = LIBRARIES[distribution]
    wanted = ".".join(map(str, floor))
    fix = f"apt-get install {package}, or pip install '{distribution}>={wanted}'"
    if version is None:
        return f"Python module {module} ({distribution}) is missing: {fix}"
    if parse_version(version) < floor:
        return f"{distribution} {version} is too old, failover needs {wanted} or newer: {fix}"
    return None


def tkinter_problem() -> str | None:
    try:
        import tkinter  # noqa: F401  (failsh runs the Tcl policy through it)
    except ImportError as exc:
        return (f"Python's tkinter is missing ({exc}); failsh runs policies in Tcl through it: "
                f"apt-get install {TKINTER_PACKAGE}")
    return None


def problems(tkinter: bool = False) -> list[str]:
    """Every missing or too-old library, one sentence each."""
    found = [library_problem(d, installed_version(d)) for d in LIBRARIES]
    if tkinter:
        found.append(tkinter_problem())
    return [p for p in found if p]


def require(prog: str, tkinter: bool = False) -> None:
    """At program start: print the first problem as ``prog: ...`` and exit 5, or return."""
    found = problems(tkinter)
    if found:
        print(f"{prog}: {found[0]}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
