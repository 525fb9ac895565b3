"""Runs each service at its interval with Tcl ``after`` chains on the policy thread.

The chain is re-armed before the service runs, so a run that fails keeps its
schedule, and a run longer than its interval is followed at once by the next
(runs never overlap: Tcl timers fire on this one thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from failover.shell.tclhost import TclHost

log = logging.getLogger("failover.scheduler")


class Scheduler:
    def __init__(self, tcl: TclHost, run: Callable[[str], None]) -> None:
        self.tcl = tcl
        self.run = run
        self.intervals: dict[str, float] = {}
        self.halted = False  # failsh is stopping: no run starts any more
        self._timers: dict[str, str] = {}
        tcl.interp.createcommand("::fo::tick", self._tick)

    def sync(self, intervals: dict[str, float]) -> None:
        """Make the set of chains match ``intervals``; new or changed services run soon."""
        for name in list(self._timers):
            if intervals.get(name) != self.intervals.get(name):
                self._cancel(name)
        self.intervals = dict(intervals)
        for name in self.intervals:
            if name not in self._timers:
                self._arm(name, 0.0)

    def halt(self) -> None:
        """From any thread (SIGTERM): no run starts any more; the chains end at their next tick."""
        self.halted = True

    def stop(self) -> None:
        for name in list(self._timers):
            self._cancel(name)

    def _arm(self, name: str, delay: float) -> None:
        self._timers[name] = str(self.tcl.interp.call("after", int(delay * 1000), f"::fo::tick {name}"))

    def _cancel(self, name: str) -> None:
        self.tcl.interp.call("after", "cancel", self._timers.pop(name))

    def _tick(self, name: str) -> None:
        if self.halted or name not in self.intervals:
            return
        self._arm(name, self.intervals[name])
        try:
            self.run(name)
        except Exception:  # a bug must not end the schedule, nor reach tkinter
            log.exception("run of service %s failed", name)
