"""Fixtures, and the lanes every test module declares (docs: README, "Tests").

Fixtures:
    faild          a started faild (no community file: '* public RW')
    faild_factory  make_faild(**options) -> FaildProcess, started; all stopped at teardown
    zctx           a private ZeroMQ context, destroyed after the test

The helpers are in support.py (``from support import ...``); the names free_port,
wait_for, run_cli, cli_command, Daemon, FaildProcess and BIN are importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from support import BIN, Daemon, FaildProcess, cli_command, free_port, run_cli, wait_for

from failover.shell.commands import Commands
from failover.shell.policy import Policy
from failover.shell.tclhost import TclHost

__all__ = ["BIN", "Daemon", "FaildProcess", "cli_command", "free_port", "run_cli", "wait_for"]

LANES = ("fast", "process", "netns", "slow")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test module names its lane (pytestmark), so that ``-m fast`` leaves nothing out
    by accident: a module without one is an error."""
    unmarked = sorted({item.module.__name__ for item in items  # type: ignore[attr-defined]
                       if not any(item.get_closest_marker(lane) for lane in LANES)})
    if unmarked:
        raise pytest.UsageError(f"test modules without a lane marker ({', '.join(LANES)}): {', '.join(unmarked)}")


@pytest.fixture
def faild_factory(tmp_path: Path) -> Iterator[Callable[..., FaildProcess]]:
    """make_faild(name="a", start=True, **FaildProcess options) -> FaildProcess; each on a fresh port."""
    made: list[FaildProcess] = []

    def make(name: str = "faild", start: bool = True, **options: object) -> FaildProcess:
        f = FaildProcess(tmp_path / f"{name}{len(made)}", **options)  # type: ignore[arg-type]
        made.append(f)
        return f.start() if start else f

    yield make
    for f in made:
        if f.running():
            f.kill9()


@pytest.fixture
def faild(faild_factory: Callable[..., FaildProcess]) -> FaildProcess:
    return faild_factory()


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    """A private ZeroMQ context for raw sockets; closed (linger 0) after the test."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def tcl() -> TclHost:
    """A fresh interpreter with failover's commands' host (no policy loaded)."""
    return TclHost()


@pytest.fixture
def cmds(tcl: TclHost) -> Commands:
    """failover's Tcl commands in ``tcl``, for node www1."""
    return Commands(tcl, Policy("www1"))
