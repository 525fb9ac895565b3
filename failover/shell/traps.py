"""failtrap: the policy's scripts for local transitions, hosts going up or down, and
peers' state changes (docs/tcl-extension.md, failtrap).  Each runs under a watchdog of
TRAP_TIMEOUT seconds; a failing or hanging one is logged and counted, never fatal."""

from __future__ import annotations

import logging
from collections.abc import Callable

from failover.observe import metrics
from failover.shell.localstate import Change
from failover.shell.policy import TRAP_TIMEOUT, Policy
from failover.shell.procedures import run_guarded
from failover.shell.tclhost import TclHost
from failover.shell.view import UNKNOWN, PeerView
from failover.states import State

tlog = logging.getLogger("failover.policy")


class Traps:
    def __init__(self, tcl: TclHost, policy: Callable[[], Policy]) -> None:
        self.tcl = tcl
        self.policy = policy
        self._peer_status: dict[str, str] = {}            # host -> status last reported to traps
        self._remote: dict[tuple[str, str], str] = {}     # (host, service) -> state last reported

    def run(self, script: str, *args: str) -> None:
        """Run one trap script with its arguments, at most TRAP_TIMEOUT seconds."""
        result, killed = run_guarded(self.tcl, lambda: self.tcl.callback(script, *args), TRAP_TIMEOUT)
        if killed is not None:
            tlog.error("failtrap script %r timed out after %g s; cancelled, %d processes killed",
                       script[:60], TRAP_TIMEOUT, killed)
        elif not result.ok:
            metrics.policy_error(args[0] if args else "", "trap")
            tlog.error("failtrap script failed%s: %s", f" at {result.where}" if result.where else "",
                       result.value)

    def on_change(self, change: Change) -> None:
        """failtrap state SERVICE (args: service old new reason)."""
        for trap in self.policy().traps:
            if trap.matches("state", change.service):
                self.run(trap.script, change.service, change.old.value if change.old else "", change.new.value,
                         change.reason)

    def on_peer(self, name: str, view: PeerView) -> None:
        """failtrap peer HOST (args: host old new) and remote SERVICE (service host old new)."""
        policy = self.policy()
        old = self._peer_status.get(name, UNKNOWN)
        if view.status != old:
            self._peer_status[name] = view.status
            for trap in policy.traps:
                if trap.matches("peer", name):
                    self.run(trap.script, name, old, view.status)
        if view.status == UNKNOWN:
            return
        for service in policy.services_of(name):
            state = view.state_of(service)
            new = state.value if state else State.FAIL.value
            before = self._remote.get((name, service), "")
            if new != before:
                self._remote[(name, service)] = new
                for trap in policy.traps:
                    if trap.matches("remote", service):
                        self.run(trap.script, service, name, before, new)
