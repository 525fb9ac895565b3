"""What failsh knows of one polled host: the network thread's snapshot entry.

Plain values, no I/O: peers.py builds them from faild's replies, gates.py decides on
them, snapshot.py shows them.
"""

from __future__ import annotations

import attrs

from failover.model import ServiceRecord
from failover.states import State

# A host's status as the network thread sees its faild
UNKNOWN = "unknown"  # no reply yet since failsh started, and its dead time has not run out
UP = "up"            # its faild answers
DOWN = "down"        # no reply for its dead time


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
