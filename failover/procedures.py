"""Running a service's start/stop/reclaim/check script and reading the state it returns.

A procedure that runs longer than its timeout has every process failsh started
killed (with their process groups), which ends a blocking ``exec`` with an error;
the result is then FAIL with the reason "timed out".  Tcl errors and results
other than UP/RECOVER/FAIL also become FAIL, with the policy's file:line.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from failover.states import BadState, State, parse_state
from failover.tclhost import TclHost

log = logging.getLogger("failover.procedures")


def run_procedure(tcl: TclHost, service: str, kind: str, script: str,
                  timeout: float) -> tuple[State, str]:
    """Evaluate ``script``; return the new state and a reason for the log."""
    fired = threading.Event()
    timer = threading.Timer(timeout, _kill_children, args=(fired,))
    timer.daemon = True
    timer.start()
    try:
        result = tcl.run(script)
    finally:
        timer.cancel()
    if fired.is_set():
        return State.FAIL, f"{kind} procedure timed out after {timeout:g} s, its processes were killed"
    if not result.ok:
        where = f" at {result.where}" if result.where else ""
        log.error("%s: %s procedure failed%s: %s", service, kind, where, result.value)
        return State.FAIL, f"{kind} procedure failed{where}: {result.value}"
    try:
        return parse_state(result.value), f"{kind} procedure returned {result.value.strip().upper()}"
    except BadState:
        log.error("%s: %s procedure returned %r, not UP/RECOVER/FAIL", service, kind, result.value[:80])
        return State.FAIL, f"{kind} procedure returned {result.value[:80]!r}, not UP, RECOVER or FAIL"


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid`` (all threads), recursively, via /proc."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            found.extend(_descendants(child))
    return found


def _kill_children(fired: threading.Event) -> None:
    fired.set()
    mine = os.getpgid(0)
    for pid in _descendants(os.getpid()):
        try:
            pgid = os.getpgid(pid)
            if pgid != mine:
                os.killpg(pgid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    log.warning("procedure timeout: killed the processes it started")
