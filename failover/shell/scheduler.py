"""Runs each service at its interval on the policy thread, from one Tcl ``after`` timer.

Each service has a due time in a heap; the one Tcl timer fires at the earliest, runs
every service due by then and is armed again for the next.  A round of Tcl's event
loop costs about 16 µs (more than a skipped run): one timer per service and run would
make that the cost of a thousand services at 0.1 s, one round per due time does not.

A service's next run is set before it runs, so a run that fails keeps its schedule,
and a run longer than its interval is followed at once by the next (runs never
overlap: they all run on this one thread).  A round runs only the services due when
it began, so the event loop (peer events, signals, the prompt) gets its turn between
rounds however long the runs take.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable

from failover.shell.tclhost import TclHost

log = logging.getLogger("failover.scheduler")

Entry = tuple[float, int, str]  # (monotonic due time, tie-break, service)


class Scheduler:
    def __init__(self, tcl: TclHost, run: Callable[[str], None]) -> None:
        self.tcl = tcl
        self.run = run
        self.intervals: dict[str, float] = {}
        self.halted = False  # failsh is stopping: no run starts any more
        self._heap: list[Entry] = []
        self._entries: dict[str, Entry] = {}  # service -> its live entry (others in the heap are stale)
        self._order = itertools.count()
        self._timer: str | None = None  # the Tcl after id, firing at _timer_at
        self._timer_at = math.inf
        tcl.interp.createcommand("::fo::tick", self._tick)

    def sync(self, intervals: dict[str, float]) -> None:
        """Make the set of scheduled services match ``intervals``; new or changed ones run soon."""
        for name in list(self._entries):
            if intervals.get(name) != self.intervals.get(name):
                del self._entries[name]
        self.intervals = dict(intervals)
        now = time.monotonic()
        for name in self.intervals:
            if name not in self._entries:
                self._push(name, now)
        self._arm()

    def halt(self) -> None:
        """From any thread (SIGTERM): no run starts any more; the timer ends at its next tick."""
        self.halted = True

    def stop(self) -> None:
        self._entries.clear()
        self._heap.clear()
        self._arm()

    def _push(self, name: str, due: float) -> None:
        entry = (due, next(self._order), name)
        self._entries[name] = entry
        heapq.heappush(self._heap, entry)

    def _live(self) -> Entry | None:
        """The earliest live entry, stale ones dropped on the way."""
        while self._heap and self._entries.get(self._heap[0][2]) is not self._heap[0]:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else None

    def _arm(self) -> None:
        """Have the Tcl timer fire when the earliest service is due (none: no timer)."""
        head = self._live()
        at = head[0] if head is not None and not self.halted else math.inf
        if at >= self._timer_at and self._timer is not None:
            return  # it fires soon enough; an early tick finds nothing due and arms again
        if self._timer is not None:
            self.tcl.interp.call("after", "cancel", self._timer)
            self._timer, self._timer_at = None, math.inf
        if at < math.inf:
            delay = max(0, math.ceil((at - time.monotonic()) * 1000))
            self._timer, self._timer_at = str(self.tcl.interp.call("after", delay, "::fo::tick")), at

    def _tick(self) -> None:
        self._timer, self._timer_at = None, math.inf
        try:
            began = time.monotonic()
            while not self.halted and (head := self._live()) is not None and head[0] <= began:
                heapq.heappop(self._heap)
                name = head[2]
                self._push(name, time.monotonic() + self.intervals[name])
                self._arm()  # a procedure that waits in the event loop (vwait) lets the others run
                try:
                    self.run(name)
                except Exception:  # a bug must not end the schedule, nor reach tkinter
                    log.exception("run of service %s failed", name)
        finally:
            self._arm()
