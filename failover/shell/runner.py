"""One run of one service: gather the inputs, let gates.py decide, act, remember.

A run reads the network thread's snapshot (no I/O), brings the local state up to date
with the local faild (localstate.py), asks :func:`gates.evaluate` for the verdict, runs
the tie-breaker when the verdict asks for it and then asks again, runs the procedure
the verdict names, and keeps the memory the verdict returns for the next run.
startservice and stopservice (Tcl) and the engine's stops go through :meth:`act` too.

A run whose inputs are those of the last evaluated run (the same policy, local state and,
per host it reads, the same decision-relevant view: see :meth:`ServiceRunner._key`) and
whose verdict's ``recheck_at`` has not come is skipped: the gates would say the same
again.  Only the check procedure of a service that is being checked still runs.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager

import attrs

from failover.observe import metrics
from failover.shell import gates, procedures
from failover.shell.arbiter import ArbiterThread
from failover.shell.gates import Act, ArbiterView
from failover.shell.hosts import Hosts
from failover.shell.localstate import LocalState
from failover.shell.peers import NetThread
from failover.shell.policy import Policy, ServiceConfig
from failover.shell.procedures import Outcome, run_guarded, run_procedure
from failover.shell.snapshot import Snapshots
from failover.shell.tclhost import TclHost
from failover.shell.view import DOWN, Pause, PeerView
from failover.states import State

log = logging.getLogger("failover.scheduler")

_NO_SCRIPT = {"start": State.UP, "stop": State.RECOVER, "reclaim": State.RECOVER}  # a procedure left out
MIN_STOP = 0.1  # s: a lost holder's stop gets at least this long, even when it comes too late
LEASE_WATCH = 0.05  # s: how often a running start looks whether the arbiter's key still holds


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
    arbiter: Callable[[], ArbiterThread | None] = attrs.field(default=lambda: None)  # engine's, if any
    memory: dict[str, gates.Memory] = attrs.Factory(dict)  # service -> what its runs remember (gates.py)
    _busy: set[str] = attrs.Factory(set)    # services in a run (a procedure may enter the event loop)
    _acting: set[str] = attrs.Factory(set)  # services whose procedure is running
    # what makes a run skippable: per service its last evaluated run's inputs (key) and verdict
    _last: dict[str, tuple[Hashable, gates.Verdict]] = attrs.field(init=False, factory=dict)
    _made_for: Policy | None = attrs.field(init=False, default=None)  # the policy the caches below are of
    _hosts_of: dict[str, tuple[str, ...]] = attrs.field(init=False, factory=dict)  # service -> hosts it reads
    _timing: dict[str, tuple[float, float]] = attrs.field(init=False, factory=dict)  # host -> dead time, interval
    _lease_ttl: float | None = attrs.field(init=False, default=None)
    # host -> its view last seen, what the gates read of it, and that as a version number
    _seen: dict[str, tuple[PeerView, Hashable, int]] = attrs.field(init=False, factory=dict)
    _versions: itertools.count = attrs.field(init=False, factory=itertools.count)

    def policy_changed(self) -> None:
        """A failsvc, failhost or reload: every service decides again, on the new settings."""
        self._made_for = None

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
        views = net.snapshot  # one snapshot for the whole run: the network thread replaces it
        self.states.reconcile(name, views.get(self.node))
        self._follow_policy()
        key, mono, wall = self._key(name, svc, views), time.monotonic(), time.time()
        last = self._last.get(name)
        if last is not None and last[0] == key and mono < last[1].recheck_at.monotonic \
                and wall < last[1].recheck_at.wall:
            metrics.service_run(skipped=True)
            log.debug("%s: unchanged, skipped", name)
            if last[1].act is Act.CHECK:  # a check procedure runs every interval, changes or not
                self._check(name, svc)
            return
        metrics.service_run(skipped=False)
        inputs = self._inputs(svc, views, gates.Now(mono, wall))
        verdict = gates.evaluate(inputs)
        if verdict.act is Act.ASK:  # the split-brain guard wants the tie-breaker's word
            out = self._procedure(name, "tiebreaker", svc)
            verdict = gates.evaluate(attrs.evolve(inputs, now=_now(),
                                                  tiebreaker=gates.Answer(out.state is State.UP, out.reason)))
        self.memory[name] = verdict.memory
        self._last[name] = key, verdict
        for level, line in verdict.events:
            log.log(level, "%s: %s", name, line)
        self.snapshots.note(name, verdict.note, verdict.level)
        if verdict.arbiter == "lost":
            self._lost(name, svc, verdict.reason, inputs.arbiter, failsafe=inputs.memory.failsafe)
        elif verdict.arbiter == "unready":  # no procedure: nothing runs; the reclaim brings it back
            self.states.set(name, State.FAIL, verdict.reason)
        elif verdict.act in (Act.START, Act.STOP, Act.RECLAIM):
            new = self.act(name, svc, verdict.act.value, verdict.reason)
            if verdict.act is Act.START and new is State.UP:
                metrics.takeover(name, verdict.cause)
            self.memory[name], events = gates.settled(inputs, verdict.memory, new)
            for level, line in events:
                log.log(level, "%s: %s", name, line)
        elif verdict.act is Act.CHECK:
            self._check(name, svc)
        if verdict.announce and self.states.state(name) is State.UP:
            self._announce(name, svc, verdict.announce)
        self._want(name, svc, verdict)

    def _check(self, name: str, svc: ServiceConfig) -> None:
        out = self._procedure(name, "check", svc)
        if out.state is not State.UP:
            self.states.set(name, out.state, out.reason)

    def inputs(self, name: str) -> gates.Inputs | None:
        """What a run of ``name`` decides on now; None before start (no live data)."""
        svc = self.policy().services.get(name)
        net = self.net()
        if svc is None or net is None:
            return None
        self._follow_policy()
        return self._inputs(svc, net.snapshot, _now())

    def _inputs(self, svc: ServiceConfig, views: Mapping[str, PeerView], now: gates.Now) -> gates.Inputs:
        name = svc.name
        local_view = views.get(self.node)
        timing = {h: self._timing_of(h) for h in self._polled(svc)}
        if self._lease_ttl is None:
            self._lease_ttl = self.hosts.lease_ttl()
        return gates.Inputs(
            service=svc, local=self.states.state(name), views=views, memory=self.memory.get(name, gates.Memory()),
            now=now, deadtimes={h: t[0] for h, t in timing.items()},  # ours too: the arbiter's failsafe
            intervals={h: t[1] for h, t in timing.items() if h != self.node}, lease_ttl=self._lease_ttl,
            deciding_since=self.states.activated_at, last_change=self.states.last_change.get(name, 0.0),
            local_faild_down=local_view is not None and local_view.status == DOWN,
            node=self.node,  # a prompt that never scheduled does not act: it need not hear its faild
            local_unheard=self.states.active and (local_view is None or not local_view.listed),
            unheard_masters=tuple(self.states.unheard_masters()) if self.states.lease_waiting else (),
            arbiter=self.arbiter_view(svc))

    # The arbiter (docs/arbiter.md) ------------------------------------------------
    def arbiter_view(self, svc: ServiceConfig) -> ArbiterView | None:
        """What the arbiter thread knows of an arbitrated service (None: nothing yet)."""
        if not svc.arbiter:
            return None
        if self.policy().arbiter is None:
            return ArbiterView(error=f"arbiter {svc.arbiter}: not configured (failarbiter {svc.arbiter} ENDPOINT ...)")
        arb = self.arbiter()
        return arb.view(svc.name) if arb is not None else None

    def _want(self, name: str, svc: ServiceConfig, verdict: gates.Verdict) -> None:
        """Tell the arbiter thread whether this host wants the key: while UP, while a start
        waits for it, and while FAIL with a reclaim to come (the resource may still be held
        until the reclaim has run); else it is deleted for the next holder."""
        arb = self.arbiter()
        if not svc.arbiter or arb is None:
            return
        state, view = self.states.state(name), arb.view(name)
        held_fail = state is State.FAIL and bool(svc.reclaim) and view is not None and view.held
        arb.want(name, state is State.UP or verdict.arbiter == "claim" or held_fail)

    def _stop_timeout(self, name: str, svc: ServiceConfig, view: ArbiterView | None) -> float:
        """The stop of a lost holder must end before its lease can: ttl after the last
        confirmed renewal (less a margin), whatever the service's timeout says."""
        if view is None or view.renewed == float("-inf"):
            return svc.timeout  # no lease of this failsh ever covered it
        left = view.stop_by() - time.monotonic()
        if left < MIN_STOP:
            log.error("%s: lost the arbiter %.1f s too late to stop before the etcd lease can end (was failsh "
                      "stalled?): another host may start it meanwhile", name, MIN_STOP - left)
            return MIN_STOP
        return min(svc.timeout, left)

    def _lost(self, name: str, svc: ServiceConfig, reason: str, view: ArbiterView | None,
              failsafe: bool = False) -> None:
        """Stop now, within the lease, then FAIL: peers take over once the key is free.  Out
        of the failsafe the lease is long gone: the stop gets a third of the ttl, which the
        peers' wait counts on (gates.FAILSAFE_WAIT)."""
        if failsafe and view is not None:
            timeout = min(svc.timeout, view.ttl * gates.FAILSAFE_STOP)
            log.warning("%s: %s: leaving the failsafe, stopping within %.2f s", name, reason, timeout)
        else:
            timeout = self._stop_timeout(name, svc, view)
            log.warning("%s: %s: stopping within %.2f s, before the etcd lease can end", name, reason, timeout)
        self.act(name, svc, "stop", reason, timeout=timeout, final=State.FAIL)

    @contextmanager
    def _lease_watch(self, name: str) -> Iterator[list[bool]]:
        """While a start runs: cancel it the moment the key no longer holds (yields [fired])."""
        fired, done = [False], threading.Event()

        def watch() -> None:
            for _ in range(10**7):  # bounded: LEASE_WATCH apart, until the start returns
                arb = self.arbiter()
                view = arb.view(name) if arb is not None else None
                if view is None or not view.holds(time.monotonic()):
                    fired[0] = True
                    procedures.cancel_running("cancelled: lost the arbiter")
                    return
                if done.wait(LEASE_WATCH):
                    return
        thread = threading.Thread(target=watch, name=f"lease-watch-{name}", daemon=True)
        thread.start()
        try:
            yield fired
        finally:
            done.set()
            thread.join(1)

    def _start_arbitrated(self, name: str, svc: ServiceConfig, view: ArbiterView) -> tuple[State, str]:
        """The start, with the fencing token in FO_FENCING_TOKEN, cancelled if the key is
        lost meanwhile; then the stop too, within the lease (the start may have done half)."""
        with self._lease_watch(name) as lost:
            out = self._procedure(name, "start", svc, env={"FO_FENCING_TOKEN": str(view.token)})
        if not lost[0]:
            return out.state, out.reason
        timeout = self._stop_timeout(name, svc, self.arbiter_view(svc))
        if svc.stop:
            stop = self._procedure(name, "stop", svc, timeout=timeout)
            return State.FAIL, f"lost the arbiter during the start ({out.reason}); {stop.reason}"
        return State.FAIL, f"lost the arbiter during the start ({out.reason})"

    # What makes a run skippable -------------------------------------------------------
    def _follow_policy(self) -> None:
        """Forget what was derived from an older policy (a reload makes a new one; failsvc
        and failhost change it in place and call policy_changed)."""
        policy = self.policy()
        if policy is not self._made_for:
            self._made_for = policy
            self._last.clear()
            self._hosts_of.clear()
            self._timing.clear()
            self._lease_ttl = None

    def _polled(self, svc: ServiceConfig) -> tuple[str, ...]:
        hosts = self._hosts_of.get(svc.name)
        if hosts is None:
            hosts = self._hosts_of[svc.name] = tuple(dict.fromkeys([*svc.polled(), self.node]))
        return hosts

    def _timing_of(self, host: str) -> tuple[float, float]:
        """(dead time, poll interval) of ``host``: both look at every service of the policy."""
        timing = self._timing.get(host)
        if timing is None:
            timing = self._timing[host] = self.hosts.deadtime(host), self.policy().interval_for(host)
        return timing

    def _key(self, name: str, svc: ServiceConfig, views: Mapping[str, PeerView]) -> Hashable:
        """What a run of ``name`` reads, in a form cheap to compare with the last run's: the
        local state and its bookkeeping, and per host the version of its view (below) and
        the service's record there."""
        st = self.states
        parts: list[object] = [st.local.get(name), st.last_change.get(name), st.activated_at, st.active,
                               tuple(st.unheard_masters()) if st.lease_waiting else ()]
        for host in self._polled(svc):
            view = views.get(host)
            if view is None:
                parts += (None, None)
            else:
                seen = self._seen.get(host)
                parts += (seen[2] if seen is not None and seen[0] is view else self._version(host, view, seen),
                          view.services.get(name))
        return tuple(parts)

    def _version(self, host: str, view: PeerView, seen: tuple[PeerView, Hashable, int] | None) -> int:
        """A number that changes when what the gates read of ``host``'s view, besides its
        service records, changes (maintenance and switchover targets included: rare), but
        not when only the time of its last reply, its round trip or its lease's seconds
        left do (every poll replaces the view)."""
        key = (view.status, view.error, view.lease is None, view.leased, view.restarted, view.started, view.arbiter,
               view.listed, view.lease_end, view.maintenance, view.prefer,
               view.last_seen if view.status == DOWN else None)
        version = seen[2] if seen is not None and seen[1] == key else next(self._versions)
        self._seen[host] = view, key, version
        return version

    def paused(self, name: str) -> Pause | None:
        """Is ``name`` in maintenance on this host, as the local faild last said?"""
        net = self.net()
        view = net.snapshot.get(self.node) if net is not None else None
        return view.pause_of(name) if view is not None else None

    def act(self, name: str, svc: ServiceConfig, kind: str, reason: str, timeout: float | None = None,
            final: State | None = None) -> State:
        """Run the start, stop or reclaim procedure and take the state it returns (``final``
        instead, unless it is UP); ``timeout`` instead of the service's.  An arbitrated
        service starts only while this host holds its key."""
        if name in self._acting:
            log.warning("%s: %s requested while a procedure of it runs: ignored", name, kind)
            return self.states.state(name)
        view = self.arbiter_view(svc) if kind == "start" else None
        if svc.arbiter and kind == "start" and (view is None or not view.holds(time.monotonic())):
            log.warning("%s: not started: this host does not hold its key in the arbiter", name)
            return self.states.state(name)
        self._acting.add(name)
        try:
            if view is not None and svc.start:
                new, why = self._start_arbitrated(name, svc, view)
            elif getattr(svc, kind):
                out = self._procedure(name, kind, svc, timeout)
                new, why = out.state, out.reason
            else:
                new, why = _NO_SCRIPT[kind], f"no {kind} procedure"
            if final is not None and new is not State.UP:
                new = final
            self.states.set(name, new, f"{reason}; {why}")
            return new
        finally:
            self._acting.discard(name)

    def _procedure(self, name: str, kind: str, svc: ServiceConfig, timeout: float | None = None,
                   env: Mapping[str, str] | None = None) -> Outcome:
        out = run_procedure(self.tcl, name, kind, getattr(svc, kind), timeout or svc.timeout, env)
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
