"""failsh's lease in its local faild: "I am alive for ttl seconds", renewed every ttl/3.

A lease may name its holder (pid and the process's start time, from /proc).  faild then
also ends it as soon as that process is gone, so a failsh killed with -9 counts FAIL at
the peers' next poll, not after the rest of its ttl.  The start time must match what faild
itself reads for that pid when the lease is taken: a failsh in another pid namespace, or a
reused pid, is never watched, and its lease just runs its ttl.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("failover.server")


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot), None if there is none,
    it has exited (a zombie its parent has not reaped yet), or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()  # from field 3 on; the name may hold ") "
        return None if fields[0] in (b"Z", b"X") else int(fields[19])  # state, start time
    except (OSError, ValueError, IndexError):
        return None


class Lease:
    """The lease faild holds for the failsh of its host (monotonic clock)."""

    def __init__(self) -> None:
        self.until = 0.0
        self.holder: tuple[int, int] | None = None  # (pid, start time) of a watched holder

    def renew(self, ttl: float, pid: int | None = None, start: int | None = None) -> None:
        """Take or renew for ``ttl`` s (0 gives it up); watch ``pid`` if its start matches."""
        self.until = time.monotonic() + ttl if ttl > 0 else 0.0
        self.holder = None
        if ttl > 0 and pid is not None and start is not None and process_start(pid) == start:
            self.holder = (pid, start)

    def left(self) -> float | None:
        """Seconds left, rounded to ms; None when it ran out, was given up, or its holder died."""
        left = self.until - time.monotonic()
        if left <= 0:
            return None
        if self.holder is not None and process_start(self.holder[0]) != self.holder[1]:
            log.warning("failsh (pid %d) is gone: its lease ends now", self.holder[0])
            self.until, self.holder = 0.0, None
            return None
        return round(left, 3)
