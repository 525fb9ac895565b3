"""The master/slave decision rule of failover 0.5 (reference §3.3), free of I/O.

From the local host's point of view, per service and per scheduler run:

* masters outrank the local host: while any master is UP or RECOVER, the local
  service must not run (an UP local service is stopped and waits in RECOVER);
* with no master ready, the local host may start the service, but only once no
  slave is UP any more.  Slaves list this host as a master, so they see it in
  RECOVER and stop; that is the two-phase handover that keeps two hosts from being
  UP at once outside the detection window;
* an unreachable host counts as FAIL (the caller maps it to ``None`` or FAIL);
* a FAIL service is given to its reclaim procedure, which may bring it back.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from failover.states import State


class Action(enum.StrEnum):
    NONE = "none"        # keep the current state
    START = "start"      # run the start procedure (RECOVER -> UP)
    STOP = "stop"        # run the stop procedure (UP -> RECOVER), a master wants it back
    RECLAIM = "reclaim"  # run the reclaim procedure (FAIL -> RECOVER?)
    WAIT = "wait"        # RECOVER and not allowed to start yet


@attrs.frozen
class Decision:
    action: Action
    reason: str

    def __str__(self) -> str:
        return f"{self.action}: {self.reason}"


def _names(states: Mapping[str, State | None], wanted: tuple[State | None, ...]) -> list[str]:
    return sorted(h for h, s in states.items() if s in wanted)


def decide(local: State, masters: Mapping[str, State | None],
           slaves: Mapping[str, State | None], has_reclaim: bool = True,
           why: Mapping[str, str] | None = None) -> Decision:
    """What to do with a service in state ``local`` given its peers' states.

    ``None`` means the host did not answer; it counts as FAIL.  ``why``: how the caller
    found a master down (named in the reason of a start).
    """
    ready = _names(masters, (State.UP, State.RECOVER))
    if local is State.FAIL:
        if has_reclaim:
            return Decision(Action.RECLAIM, "service is FAIL, trying its reclaim procedure")
        return Decision(Action.NONE, "service is FAIL and has no reclaim procedure")
    if local is State.UP:
        if ready:
            return Decision(Action.STOP, f"master {', '.join(ready)} is {masters[ready[0]]}: handing back")
        return Decision(Action.NONE, "UP and no master is ready")
    if ready:
        return Decision(Action.WAIT, f"master {', '.join(ready)} is {masters[ready[0]]}")
    busy = _names(slaves, (State.UP,))
    if busy:
        return Decision(Action.WAIT, f"no master ready; waiting for slave {', '.join(busy)} to yield")
    down = _names(masters, (State.FAIL, None))
    found = f"master {', '.join(down)} down" if down else "no masters"
    causes = [(h, why[h]) for h in down if why and why.get(h)]
    if causes and len(causes) == len(down) and len({c for _, c in causes}) == 1:
        found += f" ({causes[0][1]})"
    elif causes:
        found += f" ({'; '.join(f'{h}: {c}' for h, c in causes)})"
    return Decision(Action.START, f"{found} and no slave is UP")
