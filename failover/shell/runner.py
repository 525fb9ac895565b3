"""One run of one service: gather the inputs, let gates.py decide, act, remember.

A run reads the network thread's snapshot (no I/O), brings the local state up to date
with the local faild (localstate.py), asks :func:`gates.evaluate` for the verdict, runs
the tie-breaker when the verdict asks for it and then asks again, runs the procedure
the verdict names, and keeps the memory the verdict returns for the next run.
startservice and stopservice (Tcl) and the engine's stops go through :meth:`act` too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import attrs

from failover.observe import metrics
from failover.shell import gates
from failover.shell.gates import Act
from failover.shell.hosts import Hosts
from failover.shell.localstate import LocalState
from failover.shell.peers import NetThread
from failover.shell.policy import Policy, ServiceConfig
from failover.shell.procedures import Outcome, run_guarded, run_procedure
from failover.shell.snapshot import Snapshots
from failover.shell.tclhost import TclHost
from failover.shell.view import DOWN, Pause
from failover.states import State

log = logging.getLogger("failover.scheduler")

_NO_SCRIPT = {"start": State.UP, "stop": State.RECOVER, "reclaim": State.RECOVER}  # a procedure left out


@attrs.define
class ServiceRunner:
    node: str
    tcl: TclHost
    policy: Callable[[], Policy]
    hosts: Hosts
    states: LocalState
    snapshots: Snapshots
    net: Callable[[], NetThread | None]
    net_died: Callable[[], None]
    memory: dict[str, gates.Memory] = attrs.Factory(dict)  # service -> what its runs remember (gates.py)
    _busy: set[str] = attrs.Factory(set)    # services in a run (a procedure may enter the event loop)
    _acting: set[str] = attrs.Factory(set)  # services whose procedure is running

    def run(self, name: str) -> None:
        svc = self.policy().services.get(name)
        if svc is None or self.net() is None or name not in self.states.local or name in self._busy:
            return  # _busy: a procedure of this service waits in vwait/update; no nested run
        self._busy.add(name)
        try:
            self._run(name, svc)
        finally:
            self._busy.discard(name)

    def _run(self, name: str, svc: ServiceConfig) -> None:
        net = self.net()
        assert net is not None
        if not net.is_alive():
            self.net_died()
            return
        self.snapshots.checked(name)
        self.states.reconcile(name, net.snapshot.get(self.node))
        inputs = self.inputs(name)
        assert inputs is not None
        verdict = gates.evaluate(inputs)
        if verdict.act is Act.ASK:  # the split-brain guard wants the tie-breaker's word
            out = self._procedure(name, "tiebreaker", svc)
            verdict = gates.evaluate(attrs.evolve(inputs, now=_now(),
                                                  tiebreaker=gates.Answer(out.state is State.UP, out.reason)))
        self.memory[name] = verdict.memory
        for level, line in verdict.events:
            log.log(level, "%s: %s", name, line)
        self.snapshots.note(name, verdict.note, verdict.level)
        if verdict.act in (Act.START, Act.STOP, Act.RECLAIM):
            new = self.act(name, svc, verdict.act.value, verdict.reason)
            if verdict.act is Act.START and new is State.UP:
                metrics.takeover(name, verdict.cause)
        elif verdict.act is Act.CHECK:
            out = self._procedure(name, "check", svc)
            if out.state is not State.UP:
                self.states.set(name, out.state, out.reason)
        if verdict.announce and self.states.state(name) is State.UP:
            self._announce(name, svc, verdict.announce)

    def inputs(self, name: str) -> gates.Inputs | None:
        """What a run of ``name`` decides on now; None before start (no live data)."""
        svc = self.policy().services.get(name)
        net = self.net()
        if svc is None or net is None:
            return None
        views = net.snapshot
        local_view = views.get(self.node)
        hosts = svc.polled()
        return gates.Inputs(
            service=svc, local=self.states.state(name), views=views, memory=self.memory.get(name, gates.Memory()),
            now=_now(), deadtimes={h: self.hosts.deadtime(h) for h in hosts},
            intervals={h: self.policy().interval_for(h) for h in hosts}, lease_ttl=self.hosts.lease_ttl(),
            deciding_since=self.states.activated_at, last_change=self.states.last_change.get(name, 0.0),
            local_faild_down=local_view is not None and local_view.status == DOWN,
            node=self.node,  # a prompt that never scheduled does not act: it need not hear its faild
            local_unheard=self.states.active and (local_view is None or not local_view.listed),
            unheard_masters=tuple(self.states.unheard_masters()) if self.states.lease_waiting else ())

    def paused(self, name: str) -> Pause | None:
        """Is ``name`` in maintenance on this host, as the local faild last said?"""
        net = self.net()
        view = net.snapshot.get(self.node) if net is not None else None
        return view.pause_of(name) if view is not None else None

    def act(self, name: str, svc: ServiceConfig, kind: str, reason: str) -> State:
        """Run the start, stop or reclaim procedure and take the state it returns."""
        if name in self._acting:
            log.warning("%s: %s requested while a procedure of it runs: ignored", name, kind)
            return self.states.state(name)
        self._acting.add(name)
        try:
            if getattr(svc, kind):
                out = self._procedure(name, kind, svc)
                new, why = out.state, out.reason
            else:
                new, why = _NO_SCRIPT[kind], f"no {kind} procedure"
            self.states.set(name, new, f"{reason}; {why}")
            return new
        finally:
            self._acting.discard(name)

    def _procedure(self, name: str, kind: str, svc: ServiceConfig) -> Outcome:
        out = run_procedure(self.tcl, name, kind, getattr(svc, kind), svc.timeout)
        metrics.procedure(name, kind, out.kind, out.error)
        return out

    def _announce(self, name: str, svc: ServiceConfig, yielded: tuple[str, ...]) -> None:
        """We stayed UP while another host held the service too (a partition, a frozen
        failsh): clients may still use that host's address, so tell them again (GARP)."""
        log.warning("%s: another host may have held it too (%s): re-announcing", name, ", ".join(yielded))
        result, killed = run_guarded(self.tcl, lambda: self.tcl.run(svc.announce), svc.timeout)
        if killed is not None or not result.ok:
            why = "timed out" if killed is not None else result.value
            log.error("%s: announce script failed%s: %s", name, f" at {result.where}" if result.where else "", why)


def _now() -> gates.Now:
    return gates.Now(time.monotonic(), time.time())
