"""Whether this failsh is deciding: the policy thread's heartbeat, which the network
thread reads before it renews the lease (peers.py), and systemd's watchdog
(docs/failsh.md, "The lease means this failsh is deciding")."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from failover import daemon
from failover.shell import procedures
from failover.shell.tclhost import TclHost

LATE_OK = 0.1  # s: an event-loop round at most this late never counts as stuck


class Liveness:
    def __init__(self, tcl: TclHost, lease_ttl: Callable[[], float]) -> None:
        self.tcl = tcl
        self.lease_ttl = lease_ttl
        self._watchdog_usec = _watchdog_usec()  # systemd WatchdogSec=, fed by heartbeat
        self._watchdog_next = 0.0
        self._alive = time.monotonic()  # last event-loop round of the policy thread (heartbeat)

    def deciding_until(self) -> float:
        """Network thread: the monotonic time until which this failsh counts as deciding,
        so its lease may be renewed.  The policy thread stamps ``_alive`` on every round of
        its event loop; a procedure, trap or load in progress counts until its time bound
        (its watchdog then cancels it).  Anything else that holds the thread (an ``after``
        script that never returns) lets the lease lapse: the peers take over.  A round late by
        less than LATE_OK is not stuck: at the shortest intervals a third of the lease (17 ms
        at 20 ms) is within what Tcl's timers and Python's thread switches cost."""
        return max(self._alive + max(self.lease_ttl() / 3, LATE_OK), procedures.busy_until())

    def heartbeat(self) -> None:
        """Stamp the policy thread's liveness for the lease and systemd's watchdog; a Tcl
        ``after`` chain, so it runs only while the event loop does."""
        now = time.monotonic()
        self._alive = now
        if self._watchdog_usec and now >= self._watchdog_next:
            daemon.sd_notify("WATCHDOG=1")
            self._watchdog_next = now + self._watchdog_usec / 2e6
        period = min(self.lease_ttl() / 6, 0.5, self._watchdog_usec / 4e6 if self._watchdog_usec else 1.0)
        self.tcl.interp.after(max(10, int(period * 1000)), self.heartbeat)


def _watchdog_usec() -> int:
    """WATCHDOG_USEC if systemd's watchdog is meant for this process, else 0."""
    pid = os.environ.get("WATCHDOG_PID")
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return 0
    return usec if usec > 0 and (not pid or pid == str(os.getpid())) else 0
