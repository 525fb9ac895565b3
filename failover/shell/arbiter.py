"""The arbiter thread: failsh's etcd lease and the keys of its arbitrated services.

One thread per failsh (docs/arbiter.md, "Why a thread of its own").  It holds one etcd
lease of the policy's ttl, renews it every ttl/3, claims the key of each service the runs
want (a transaction: put ``PREFIX+service`` = node name, bound to the lease, only if the
key is absent), checks the keys it holds at every renewal and deletes those no longer
wanted.  Its I/O never runs on the Tcl thread nor on the network thread: a member that
does not answer costs this thread a timeout, nobody else.

What it knows goes to the Tcl thread as :class:`~failover.shell.gates.ArbiterView` values
(replaced, never mutated), and each change wakes the engine, which runs the service at
once.  Deciding when a key counts as lost is not this thread's job: the gate does it
from the time of the last confirmed renewal (a call stuck in a timeout here cannot
delay that), and the engine arms a timer for that moment.

Whether etcd answers (:meth:`ArbiterThread.reach_now`) goes to the peers with failsh's
lease, for the failsafe (docs/arbiter.md, "Etcd entirely down").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import attrs

from failover.arbiter.etcd import TLS, Etcd, EtcdError
from failover.shell.gates import ArbiterView
from failover.shell.policy import ArbiterConfig

log = logging.getLogger("failover.arbiter")

RETRY = 0.2      # s: next try after an error, and how often a wanted key held by another is looked at
RELEASE_BOUND = 2.0  # s: a graceful stop's lease revoke waits at most this long
PENDING = 1.0  # s (ttl/10 at most): a renewal unanswered this long makes this failsh say "unreachable"


def client(config: ArbiterConfig) -> Etcd:
    """The etcd client for ``config``: each member gets at most ttl/6 s (1 s at most), so
    a renewal tried on every member still fits well within the lease."""
    tls = TLS(config.cacert, config.cert, config.key) if config.cacert or config.cert else None
    return Etcd(list(config.endpoints), timeout=min(1.0, config.ttl / 6), tls=tls, user=config.user,
                password=config.password)


class ArbiterThread(threading.Thread):
    """``want(service, yes)`` from the Tcl thread; ``view(service)`` for a run's inputs;
    ``on_change(services)`` is called from this thread when something changed."""

    def __init__(self, config: ArbiterConfig, node: str, on_change: Callable[[list[str]], None],
                 etcd: Etcd | None = None) -> None:
        super().__init__(name="failsh-arbiter", daemon=True)
        self.config = config
        self.node = node
        self.on_change = on_change
        self.reach = "unreachable"  # "ok" once a lease is granted and the last round had no error
        self._pending: float | None = None  # monotonic time the renewal under way was sent
        self._late = False  # a renewal took so long that reach_now() said "unreachable" meanwhile
        self._reached = float("-inf")  # monotonic time reach last turned "ok"
        self.etcd = etcd or client(config)
        self.views: dict[str, ArbiterView] = {}  # replaced as a whole: read from the Tcl thread
        self._wanted: frozenset[str] = frozenset()
        self._known: frozenset[str] = frozenset()  # arbitrated services of the policy
        self._lease: int | None = None
        self._renewed = float("-inf")
        self._held: dict[str, int] = {}   # service -> token (create_revision) of our key
        self._holder: dict[str, str] = {}  # service -> who holds it, when not us
        self._error = ""
        self._wake = threading.Event()
        self._probe = False  # renew now, not at ttl/3: a peer said it cannot reach etcd
        self._halt = threading.Event()

    # From the Tcl thread -----------------------------------------------------
    def key(self, service: str) -> str:
        return f"{self.config.prefix}{service}"

    def view(self, service: str) -> ArbiterView | None:
        """The service's key as the last round left it; not held once the runs no longer
        want it: its release is on its way, and another host may hold it any moment (a
        start decided on the older view would overlap with that host's)."""
        view = self.views.get(service)
        if view is not None and view.held and service not in self._wanted:
            return attrs.evolve(view, held=False, token=0)
        return view

    def set_services(self, services: list[str]) -> None:
        """The arbitrated services of the policy (a reload may change them)."""
        self._known = frozenset(services)
        self._wanted &= self._known
        self._wake.set()

    def want(self, service: str, yes: bool) -> None:
        """The runs of ``service`` want the key (a start waits for it, or it is UP here) or
        not any more (it is stopped: the key is deleted so that another host may take it)."""
        if (service in self._wanted) != yes:
            self._wanted = self._wanted | {service} if yes else self._wanted - {service}
            self._wake.set()

    def reach_now(self) -> str:
        """What the peers are told (failsh's lease, the failsafe): "unreachable" as soon as
        a renewal has waited PENDING for its answer, not only once every member failed."""
        pending = self._pending
        if self.reach == "ok" and pending is not None and time.monotonic() - pending > self.pending_bound():
            return "unreachable"
        return self.reach

    def pending_bound(self) -> float:
        return min(PENDING, self.config.ttl / 10)

    def probe(self) -> None:
        """A peer cannot reach etcd: renew at once, so that our word ("ok" or not) is fresh
        when the holder decides on the failsafe."""
        if self.reach == "ok" and not self._probe:
            self._probe = True
            self._wake.set()

    def close(self) -> None:
        """failsh stops: end the loop and revoke the lease (every key we hold goes at once)."""
        self._halt.set()
        self._wake.set()
        self.join(RELEASE_BOUND + 3 * self.etcd.timeout * len(self.etcd.endpoints))

    # The loop -------------------------------------------------------------------
    def run(self) -> None:
        log.info("arbiter etcd %s: prefix %s, ttl %g s", ", ".join(self.etcd.names), self.config.prefix,
                 self.config.ttl)
        while not self._halt.is_set():
            try:
                delay = self._round()
            except Exception:  # a bug must not end the thread: the runs would wait for ever
                log.exception("arbiter round failed")
                delay = RETRY
            self._wake.wait(delay)
            self._wake.clear()
        self._revoke()

    def _round(self) -> float:
        """One pass: lease, renewal, keys; returns how long to sleep."""
        before = dict(self.views)
        try:
            self._renew()
            for service in sorted(self._known | set(self._held)):  # a key no longer arbitrated is released
                self._service(service)
            if self._error:
                log.warning("arbiter etcd answers again")
            self._error = ""
        except EtcdError as exc:
            if not self._error:
                log.warning("%s", exc)
            self._error = str(exc)
        self._publish(before)
        if self._error or (self._wanted - set(self._held)):
            return RETRY
        return max(0.0, self._renewed + self.config.ttl / 3 - time.monotonic())

    def _renew(self) -> None:
        if self._lease is None:
            sent = time.monotonic()
            self._lease = self.etcd.grant(self.config.ttl)
            self._renewed = sent
            log.info("arbiter etcd: lease %x granted (ttl %g s)", self._lease, self.config.ttl)
            return
        if time.monotonic() < self._renewed + self.config.ttl / 3 and not self._probe:
            return
        self._probe = False
        sent = self._pending = time.monotonic()
        try:
            alive = self.etcd.keepalive(self._lease) > 0
            if alive:
                for service in list(self._held):  # a linearizable read: only a leader with a quorum answers
                    self._check(service)
        finally:
            self._pending = None
            self._late |= time.monotonic() - sent > self.pending_bound()
        if alive:
            self._renewed = sent  # confirmed: the lease cannot end before sent + ttl
            return
        log.warning("arbiter etcd: lease %x expired%s", self._lease,
                    f"; lost {', '.join(sorted(self._held))}" if self._held else "")
        self._lease = None
        self._held.clear()
        self._renew()

    def _check(self, service: str) -> None:
        """Is our key still there, ours, on our lease (an admin may have deleted it)?"""
        holder = self.etcd.get(self.key(service))
        if holder is None or holder.owner != self.node or holder.lease != self._lease:
            log.warning("%s: arbiter key %s %s", service, self.key(service),
                        "deleted" if holder is None else f"now held by {holder.owner}")
            del self._held[service]
            self._holder[service] = holder.owner if holder is not None else ""

    def _service(self, service: str) -> None:
        assert self._lease is not None
        key, wanted = self.key(service), service in self._wanted
        if service in self._held and not wanted:
            self.etcd.release(key, self.node)
            del self._held[service]
            log.info("%s: arbiter key %s released", service, key)
        elif wanted and service not in self._held:
            holder = self.etcd.get(key)
            if holder is None:
                holder = self.etcd.acquire(key, self.node, self._lease)
            if holder.owner == self.node and holder.lease == self._lease:
                self._held[service] = holder.revision
                self._holder.pop(service, None)
                log.info("%s: arbiter key %s held, fencing token %d", service, key, holder.revision)
            else:
                self._holder[service] = holder.owner
        elif not wanted:
            self._holder.pop(service, None)

    def _publish(self, before: dict[str, ArbiterView]) -> None:
        reach = "ok" if self._lease is not None and not self._error else "unreachable"
        if reach == "ok" and (self.reach != "ok" or self._late):  # the peers hear "ok" again from now on
            self._reached = time.monotonic()
        self._late = False
        views = {s: ArbiterView(key=self.key(s), ttl=self.config.ttl, held=s in self._held, renewed=self._renewed,
                                token=self._held.get(s, 0), holder=self._holder.get(s, ""), error=self._error,
                                failsafe=self.config.failsafe, reached=self._reached)
                 for s in self._known}
        self.views = views
        self.reach = reach
        if views != before:
            # a renewal alone changes nothing a run decides on (it moves the deadline timer)
            moved = [s for s, v in views.items() if s not in before
                     or attrs.evolve(before[s], renewed=v.renewed, error=v.error) != v
                     or bool(before[s].error) != bool(v.error)]
            self.on_change(moved)

    def _revoke(self) -> None:
        if self._lease is None:
            return
        try:
            self.etcd.revoke(self._lease)
            log.info("arbiter etcd: lease %x revoked%s", self._lease,
                     f" ({', '.join(sorted(self._held))} released)" if self._held else "")
        except EtcdError as exc:
            log.warning("arbiter etcd: lease %x not revoked (it ends within %g s): %s", self._lease,
                        self.config.ttl, exc)
        self._lease = None
        self._held.clear()
