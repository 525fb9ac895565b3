"""The Tcl files shipped inside the package (failover/shell/tcl/): failsh's helper library and
the demo's policy.  Found with importlib.resources, so a checkout, ``pip install .`` and
the Debian package all give the same answer."""

from __future__ import annotations

import atexit
import contextlib
from importlib import resources
from pathlib import Path

LIBRARY = "failover.tcl"      # the fo:: helpers failsh sources before every policy
DEMO_POLICY = "demo-web.tcl"  # the README's demo (python -m failover.lab.demo)

_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def path(name: str = LIBRARY) -> Path:
    """A real file holding the shipped Tcl file ``name`` (Tcl's ``source`` needs a path).
    From a zipped install it is extracted to a temporary file kept until exit."""
    resource = resources.files("failover.shell").joinpath("tcl", name)
    if isinstance(resource, Path):
        return resource
    return _extracted.enter_context(resources.as_file(resource))
