"""This host's service states and the local faild that holds them for the peers.

failsh keeps every service's state in memory and writes each change to the local faild
at once; the peers read it there.  This module owns that pair and keeps it consistent:
adopting a service's state at start-up, writes that faild did not take (retried), the
local faild going down and coming back, the lease (taken only once every master has
been heard), and changes made in faild with failc (followed).  Every transition goes to
the ``observers`` in their order: history, control port, log, metrics, traps, the feed,
and last the write to faild (docs/failsh.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import attrs

from failover import client
from failover.model import ServiceRecord
from failover.protocol import HOST_WIDE
from failover.shell.hosts import Hosts
from failover.shell.peers import NetThread
from failover.shell.policy import Policy
from failover.shell.view import DOWN, UNKNOWN, PeerView
from failover.states import State

log = logging.getLogger("failover.scheduler")


@attrs.frozen
class Change:
    """One transition of a local service state."""

    service: str
    old: State | None
    new: State
    reason: str
    time: float
    external: bool = False  # followed from the local faild (failc): nothing to write back


class LocalState:
    def __init__(self, policy: Callable[[], Policy], hosts: Hosts, stop: Callable[[str, str], None]) -> None:
        self.policy = policy
        self.hosts = hosts
        self.stop = stop                          # run a service's stop procedure (engine)
        self.local: dict[str, State] = {}
        self.written: dict[str, int] = {}         # service -> faild counter of our last write
        self.dirty: set[str] = set()              # states faild has not taken yet
        self.last_change: dict[str, float] = {}
        self.observers: list[Callable[[Change], None]] = []
        self.active = False       # holds the lease and writes faild: from the first "schedule on"
        self.activated_at = 0.0   # monotonic time of that
        self.lease_held = False   # the local faild was down: no lease until it is rewritten
        self.lease_waiting = False  # no lease yet: a master has not answered (take_lease)
        # set by the engine's start(): a ZeroMQ socket does not survive the daemon's fork
        self.faild: client.Client | None = None
        self.net: NetThread | None = None

    def state(self, name: str) -> State:
        return self.local.get(name, State.RECOVER)

    # Transitions --------------------------------------------------------------
    def set(self, name: str, state: State, reason: str) -> None:
        """A transition made by failsh: observers, then written to faild, then hinted."""
        if self.local.get(name) is not state:
            self._record(name, state, reason)

    def _record(self, name: str, state: State, reason: str, external: bool = False) -> None:
        old = self.local.get(name)
        self.local[name] = state
        now = time.time()
        self.last_change[name] = now
        change = Change(name, old, state, reason, now, external)
        for observer in self.observers:
            observer(change)

    def write_change(self, change: Change) -> None:
        """The observer that writes failsh's own transitions to faild and tells the peers
        (a change made in faild from outside is there already: only the peers are told)."""
        if not change.external:
            self._write(change.service, change.new, change.reason)
        if self.net is not None and self.active:
            self.net.hint()  # peers poll us now, not at their next tick

    # Taking over: start-up, schedule on, policy changes --------------------------
    def activate(self) -> None:
        """First "schedule on": stop what a dead failsh left UP, then take the lease.

        In this order, peers never see this host's lease together with a stale UP.
        """
        self.active = True
        self.activated_at = time.monotonic()
        self.follow_policy()

    def follow_policy(self) -> None:
        """Adopt the services the policy has gained, then (again) try to take the lease."""
        if not self.active:
            return
        for name in self.policy().services:
            if name not in self.local:
                self._adopt(name)
        self.take_lease()

    def _adopt(self, name: str) -> None:
        """Initial state of a service from the local faild (docs/failsh.md, "start-up")."""
        assert self.faild is not None
        paused = False
        try:
            reply = self.faild.ask("get", service=name)
            state = reply.services[0].state if reply.services else State.RECOVER
            paused = name in reply.maintenance or HOST_WIDE in reply.maintenance
        except client.RequestFailed:
            state = State.RECOVER  # new service
        except client.ClientError as exc:
            log.warning("%s: local faild unreachable at start (%s), assuming RECOVER", name, exc)
            state = State.RECOVER
            self.faild_down()  # no lease before faild has our states (its file may say UP)
        self.local[name] = state
        self.last_change[name] = time.time()
        if state is State.UP and paused:  # maintenance: left as it is (an upgrade of failsh)
            log.info("%s: UP and paused in the local faild: adopted as it is, no re-decision", name)
        elif state is State.UP:  # left UP by a failsh that died: stop first, then decide again
            self.stop(name, "failsh restarted: stopping to re-decide")
        else:
            self._write(name, state, "failsh started")

    def forget(self, name: str) -> None:
        """The service left the policy (its stop, if UP, has run)."""
        self.local.pop(name, None)

    # The lease --------------------------------------------------------------------
    def take_lease(self) -> None:
        """Hold the lease (peers then count this host's states), but only once every master
        of every service has answered or been counted FAIL.  A lease in RECOVER makes the
        slaves yield; with a master not heard yet this host could not start, so a slave
        that serves now would hand back to nobody for up to that master's dead time."""
        if not self.active or self.lease_held or self.net is None:
            return
        unheard = self.unheard_masters()
        if unheard:
            if not self.lease_waiting:
                log.info("waiting for master %s to answer before taking the lease, so that slaves keep "
                         "serving meanwhile (at most %g s)", ", ".join(unheard),
                         max(self.hosts.deadtime(h) for h in unheard))
            self.lease_waiting = True
            return
        if self.lease_waiting:
            log.info("every master answered or counts FAIL: taking the lease")
        self.lease_waiting = False
        self.net.set_lease(self.hosts.lease_ttl())

    def retry_lease(self) -> None:
        if self.lease_waiting:
            self.take_lease()

    def unheard_masters(self) -> list[str]:
        """Masters of any service that have neither answered nor been counted FAIL yet."""
        assert self.net is not None
        masters = {h for svc in self.policy().services.values() for h in svc.masters}
        return sorted(h for h in masters if (v := self.net.snapshot.get(h)) is None or v.status == UNKNOWN)

    # The local faild ------------------------------------------------------------------
    def reconcile(self, name: str, view: PeerView | None) -> None:
        """Before a run of ``name``: follow the local faild (down, back, writes it missed),
        try the lease, and take over a change made there with failc."""
        if view is not None and view.status == DOWN:
            self.faild_down()
            return
        if self.lease_held:
            self._faild_back()
        elif self.dirty:
            self._retry_writes()
        self.retry_lease()
        if not self.lease_waiting:
            self._follow_external(name, view)

    def faild_answers(self) -> None:
        """The network thread heard the local faild (again): write what it missed."""
        if self.dirty or self.lease_held:
            self._faild_back()

    def _write(self, name: str, state: State, reason: str) -> None:
        if not self.active or self.faild is None:
            return  # a prompt without scheduling keeps its states to itself
        if self.lease_held:  # faild is known down: write when it is back, don't block now
            self.dirty.add(name)
            return
        self._store(name, state, reason)

    def _store(self, name: str, state: State, reason: str) -> None:
        assert self.faild is not None
        try:
            rec = self.faild.set(name, state, reason[:250])
            self.written[name] = rec.counter
            self.dirty.discard(name)
        except client.ClientError as exc:
            if name not in self.dirty:
                log.error("%s: cannot write %s to the local faild: %s", name, state, exc)
            self.dirty.add(name)

    def faild_down(self) -> None:
        """The local faild stopped answering: renew no lease until it has our states again,
        so that a restarted faild never shows peers a stale UP together with a lease."""
        if not self.lease_held and self.net is not None:
            self.lease_held = True
            self.net.set_lease(0.0)
            self.dirty.update(self.local)  # a restarted faild may have lost them: write all

    def _faild_back(self) -> None:
        self._retry_writes()
        if self.lease_held and not self.dirty and self.net is not None and self.active:
            self.lease_held = False
            log.info("local faild answers again and has this host's states: lease renewed")
            self.take_lease()

    def _retry_writes(self) -> None:
        for name in list(self.dirty):
            if name in self.local:
                self._store(name, self.local[name], "failsh retry after faild was unreachable")
            else:
                self.dirty.discard(name)

    def changed_outside(self, view: PeerView | None) -> list[str]:
        """The services whose record in the local faild (``view``) was changed from outside
        (failc, hc, failctl) and not followed yet: they run at once."""
        return [name for name in self.local if self._external(name, view) is not None]

    def _external(self, name: str, view: PeerView | None) -> ServiceRecord | None:
        rec = view.services.get(name) if view else None
        if rec and rec.counter > self.written.get(name, 0) and rec.state is not self.local.get(name) \
                and name not in self.dirty:
            return rec
        return None

    def _follow_external(self, name: str, view: PeerView | None) -> None:
        """A change made in the local faild from outside (failc, hc, failctl) wins over
        failsh's memory; logged with who made it and why, as faild recorded them."""
        rec = self._external(name, view)
        if rec is not None:
            who = f" by {rec.by}" if rec.by else ""
            why = f": {rec.reason}" if rec.reason else ""
            log.warning("%s: changed outside failsh to %s%s%s", name, rec.state, who, why)
            self._record(name, rec.state, f"changed outside failsh{who}{why}", external=True)
            self.written[name] = rec.counter
