"""The console scripts' entry points (pyproject.toml): each checks the libraries its program
needs (failover/cli/requirements.py) before the program's module (failover/cli/NAME.py) is
imported, so a missing tkinter or a too-old pyzmq is one line and exit 5, not a traceback.
The functions are named after the programs, so they live here, not in failover/cli/__init__.py,
where they would shadow the modules."""

from __future__ import annotations

import functools
import importlib

from failover.cli import requirements

# program -> needs tkinter
PROGRAMS = {"faild": False, "failsh": True, "failc": False, "failstat": False, "failctl": False,
            "failmon": False, "faildebug": False, "failkey": False, "hc": False, "hcmon": False}


def launch(program: str) -> int:
    """Check the libraries ``program`` needs, then run its ``main()``."""
    requirements.require(program, tkinter=PROGRAMS[program])
    return importlib.import_module(f"failover.cli.{program}").main()


# one entry point per program (pyproject.toml's [project.scripts])
faild = functools.partial(launch, "faild")
failsh = functools.partial(launch, "failsh")
failc = functools.partial(launch, "failc")
failstat = functools.partial(launch, "failstat")
failctl = functools.partial(launch, "failctl")
failmon = functools.partial(launch, "failmon")
faildebug = functools.partial(launch, "faildebug")
failkey = functools.partial(launch, "failkey")
hc = functools.partial(launch, "hc")
hcmon = functools.partial(launch, "hcmon")
