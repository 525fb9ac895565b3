"""failsh's lease in its local faild: "I am alive for ttl seconds", renewed every ttl/3.

faild also remembers why the last lease ended (``ended``: released, exited or expired, and
the wall-clock time), until a new one is taken: peers log it when they take over.

A lease may name its holder (pid and the process's start time, from /proc).  faild then
also ends it as soon as that process is gone, so a failsh killed with -9 counts FAIL at
the peers' next poll, not after the rest of its ttl.  The start time must match what faild
itself reads for that pid when the lease is taken: a failsh in another pid namespace, or a
reused pid, is never watched, and its lease just runs its ttl.
"""

from __future__ import annotations

import logging
import time

from failover.model import LeaseEnd

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
        self.ended: LeaseEnd | None = None  # why the last lease ended, while no new one exists
        self.arbiter: str | None = None  # the holder's word on its etcd arbiter ("ok", "unreachable")

    def renew(self, ttl: float, pid: int | None = None, start: int | None = None, arbiter: str | None = None) -> None:
        """Take or renew for ``ttl`` s (0 gives it up); watch ``pid`` if its start matches;
        ``arbiter``: what the holder says of its arbiter, shown while the lease lives."""
        now = time.monotonic()
        if ttl <= 0:
            if self.until > now:  # a live lease given up (a second release changes nothing)
                self.ended = LeaseEnd("released", time.time())
            elif self.until > 0:  # it had run out unnoticed: that is how it ended
                self._end("expired", now)
        self.until = now + ttl if ttl > 0 else 0.0
        self.holder = None
        self.arbiter = arbiter if ttl > 0 else None
        if ttl > 0:
            self.ended = None
            if pid is not None and start is not None and process_start(pid) == start:
                self.holder = (pid, start)

    def _end(self, why: str, now: float) -> None:
        """The lease is over (``why``): at the wall-clock time it ran out, or now."""
        at = time.time() - max(0.0, now - self.until) if why == "expired" else time.time()
        self.ended = LeaseEnd(why, round(at, 3))
        self.until, self.holder, self.arbiter = 0.0, None, None

    def left(self) -> float | None:
        """Seconds left, rounded to ms; None when it ran out, was given up, or its holder died."""
        now = time.monotonic()
        left = self.until - now
        if left <= 0:
            if self.until > 0:  # ran out since the last call
                self._end("expired", now)
            return None
        if self.holder is not None and process_start(self.holder[0]) != self.holder[1]:
            log.warning("failsh (pid %d) is gone: its lease ends now", self.holder[0])
            self._end("exited", now)
            return None
        return round(left, 3)

    def status(self) -> tuple[float | None, LeaseEnd | None]:
        """(seconds left, None) while a lease is live, else (None, why the last one ended or None)."""
        left = self.left()
        return left, None if left is not None else self.ended
