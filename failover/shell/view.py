"""What failsh knows of one polled host: the network thread's snapshot entry.

Plain values, no I/O: peers.py builds them from faild's replies, gates.py decides on
them, snapshot.py shows them.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from failover.model import LeaseEnd, MaintEntry, PreferEntry, ServiceRecord
from failover.protocol import HOST_WIDE
from failover.states import State

# A host's status as the network thread sees its faild
UNKNOWN = "unknown"  # no reply yet since failsh started, and its dead time has not run out
UP = "up"            # its faild answers
DOWN = "down"        # no reply for its dead time


@attrs.frozen
class Pause:
    """A service in maintenance on a host: the service itself, or the whole host."""

    scope: str      # "service" or "host"
    since: float    # wall clock
    reason: str = ""
    by: str = ""


@attrs.frozen
class PeerView:
    """What the network thread last knew of one host."""

    name: str
    endpoint: str
    status: str = UNKNOWN          # unknown until first reply or deadtime since start
    last_seen: float | None = None  # wall clock of the last reply
    last_call: float | None = None  # wall clock of the last request
    rtt: float | None = None
    started: float | None = None
    restarted: float | None = None  # monotonic time this thread saw its faild restart
    lease: float | None = None     # seconds left of its failsh's lease; None: no failsh
    leased: bool = False           # a lease was seen from this faild process: its failsh ran
    services: dict[str, ServiceRecord] = attrs.field(factory=dict)
    error: str = ""
    # what the last reply said besides the states (docs/protocol.md, "Operations for administrators"):
    maintenance: Mapping[str, MaintEntry] = attrs.field(factory=dict)  # "*" (the host) or service -> entry
    prefer: Mapping[str, PreferEntry] = attrs.field(factory=dict)      # service -> its switchover target
    lease_end: LeaseEnd | None = None  # why its failsh's last lease ended (while it holds none)
    arbiter: str | None = None  # its failsh reaches its etcd arbiter: "ok", "unreachable"; None: not said
    listed: bool = False  # a list reply came (its states and flags are known; a lease reply has neither)

    def pause_of(self, service: str) -> Pause | None:
        """Is ``service`` in maintenance on this host (itself, or the whole host)?"""
        for key, scope in ((service, "service"), (HOST_WIDE, "host")):
            entry = self.maintenance.get(key)
            if entry is not None:
                return Pause(scope, entry.since, entry.reason, entry.by)
        return None

    def state_of(self, service: str) -> State | None:
        """The state this host provides ``service`` in; None when it counts as FAIL."""
        if self.status != UP or self.lease is None:
            return None
        rec = self.services.get(service)
        return rec.state if rec else None

    def counter_of(self, service: str) -> int | None:
        """The host's transition counter for ``service``: it moves on every change there."""
        rec = self.services.get(service)
        return rec.counter if rec else None
