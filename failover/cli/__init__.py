"""Command-line entry points, one module per program.

The console scripts (pyproject.toml) call the functions below, which check the libraries
the program needs (failover/requirements.py) before its module is imported: a missing
tkinter or a too-old pyzmq is one line and exit 5, not a traceback.
"""

from __future__ import annotations

import importlib

from failover import requirements

# program -> needs tkinter
PROGRAMS = {"faild": False, "failsh": True, "failc": False, "failstat": False, "failmon": False,
            "faildebug": False, "failkey": False, "hc": False, "hcmon": False}


def launch(program: str) -> int:
    """Check the libraries ``program`` needs, then run its ``main()``."""
    requirements.require(program, tkinter=PROGRAMS[program])
    return importlib.import_module(f"failover.cli.{program}").main()


def faild() -> int:
    return launch("faild")


def failsh() -> int:
    return launch("failsh")


def failc() -> int:
    return launch("failc")


def failstat() -> int:
    return launch("failstat")


def failmon() -> int:
    return launch("failmon")


def faildebug() -> int:
    return launch("faildebug")


def failkey() -> int:
    return launch("failkey")


def hc() -> int:
    return launch("hc")


def hcmon() -> int:
    return launch("hcmon")
