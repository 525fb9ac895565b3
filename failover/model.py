"""Value classes shared by faild, its clients and failsh."""

from __future__ import annotations

import attrs

from failover.states import State, parse_state


@attrs.frozen
class ServiceRecord:
    """One service's state on one host, as faild stores and serves it."""

    name: str
    state: State = attrs.field(converter=parse_state)
    last_change: float
    counter: int

    def to_wire(self) -> dict:
        return {"name": self.name, "state": self.state.value,
                "last_change": self.last_change, "counter": self.counter}


@attrs.frozen
class Transition:
    """A state change kept in faild's bounded history."""

    service: str
    old: State | None
    new: State
    time: float
    counter: int
    reason: str = ""

    def to_wire(self) -> dict:
        return {"service": self.service, "old": self.old.value if self.old else None,
                "new": self.new.value, "time": self.time, "counter": self.counter,
                "reason": self.reason}


@attrs.frozen
class HostInfo:
    """Who answered: the node name faild was given and when it started."""

    name: str
    started: float
    pid: int

    def to_wire(self) -> dict:
        return {"name": self.name, "started": self.started, "pid": self.pid}
