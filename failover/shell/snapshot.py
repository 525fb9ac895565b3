"""What failsh shows of itself: the monitor snapshot, its publication, the state dump.

One snapshot (every service with its state, last check and decision, every polled host,
the recent transitions) feeds failmon (the -m feed), the web page (--http) and the
SIGINT dump (docs/failsh.md, "Signals"; docs/operations.md).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from failover.files import make_dir
from failover.model import Transition
from failover.observe import feed
from failover.protocol import HOST_WIDE
from failover.shell.gates import prefer_of
from failover.shell.localstate import Change, LocalState
from failover.shell.policy import Policy, ServiceConfig
from failover.shell.view import UNKNOWN, UP, Pause, PeerView
from failover.states import State

log = logging.getLogger("failover.scheduler")
_TEXT = {s: s.value for s in State}  # a state's name without the enum's value property, per service and peer


class Snapshots:
    def __init__(self, node: str, policy: Callable[[], Policy], states: LocalState,
                 peer_view: Callable[[str], PeerView | None]) -> None:
        self.node = node
        self.policy = policy
        self.states = states
        self.peer_view = peer_view
        self.history: deque[Transition] = deque(maxlen=200)
        self.decisions: dict[str, str] = {}      # service -> its last decision line
        self.last_check: dict[str, float] = {}   # service -> wall time of its last run
        self.sinks: list[Callable[[dict], None]] = []  # the feed, the web page
        self.seq = 0
        # the engine's Tcl after_idle: a decision line's change is published once the round of
        # runs is over, so that a round changing many of them builds one snapshot, not one each
        self.defer: Callable[[Callable[[], None]], object] | None = None
        self._publish_due = False
        self._dump_fd: int | None = None

    def on_change(self, change: Change) -> None:
        self.history.append(Transition(change.service, change.old, change.new, change.time, len(self.history),
                                       change.reason))

    def checked(self, name: str) -> None:
        self.last_check[name] = time.time()

    def note(self, name: str, decision: str, level: int = logging.DEBUG) -> None:
        """A run's decision line: logged and published when it changes."""
        if self.decisions.get(name) != decision:
            log.log(level, "%s: %s", name, decision)
            self.decisions[name] = decision
            if self.defer is None:
                self.publish()
            elif not self._publish_due:
                self._publish_due = True
                self.defer(self._publish_deferred)

    def _publish_deferred(self) -> None:
        self._publish_due = False
        self.publish()

    def snapshot(self) -> dict:
        self.seq += 1
        policy = self.policy()
        hosts = []
        for name in sorted(policy.hosts):
            v = self.peer_view(name)
            if v is not None:
                hosts.append({"name": name, "endpoint": v.endpoint, "status": v.status, "last_seen": v.last_seen,
                              "last_call": v.last_call, "rtt": v.rtt, "failsh": v.lease is not None,
                              "paused": HOST_WIDE in v.maintenance})
        services = []
        local = self.peer_view(self.node)
        views = {h: v for h in [self.node, *policy.hosts] if (v := self.peer_view(h)) is not None}
        # built every second for every service and peer: look-ups hoisted, rare parts only when present
        paused = local is not None and bool(local.maintenance)
        prefer = any(v.prefer for v in views.values())
        for name, svc in sorted(policy.services.items()):
            peers = {}
            for h in svc.peers():
                v = views.get(h)
                st = v.state_of(name) if v is not None else None
                peers[h] = {"role": "master" if h in svc.masters else "slave",
                            "state": _TEXT[st] if st else "FAIL", "status": v.status if v else UNKNOWN}
            services.append({"name": name, "state": _TEXT[self.states.state(name)],
                             "role": "master" if not svc.masters else "slave",
                             "masters": svc.masters, "slaves": svc.slaves, "interval": svc.interval,
                             "last_change": self.states.last_change.get(name),
                             "last_check": self.last_check.get(name),
                             "decision": self.decisions.get(name, ""), "peers": peers,
                             "paused": _paused(local.pause_of(name)) if paused and local is not None else None,
                             "prefer": _prefer(svc, views, self.node) if prefer else None})
        lease = local.lease if local is not None and local.status == UP else None
        return {"v": feed.FEED_VERSION, "type": "snapshot", "node": self.node, "time": time.time(),
                "seq": self.seq, "lease": lease, "services": services, "hosts": hosts,
                "history": [t.to_wire() for t in list(self.history)[-50:]]}

    def publish(self) -> None:
        if self.sinks:
            snap = self.snapshot()
            for sink in self.sinks:
                sink(snap)

    def dump(self, path: Path) -> None:
        """SIGINT: write the state dump (mode 0600); a FIFO stays open for the next dump.
        A symlink at the path is never followed: a planted one could aim at any file."""
        payload = feed.text(self.snapshot()).encode()
        try:
            if self._dump_fd is None:
                try:
                    mode = path.lstat().st_mode
                except FileNotFoundError:
                    mode = 0
                    make_dir(path.parent)
                if stat.S_ISLNK(mode):
                    raise OSError(f"{path} is a symlink; not followed (remove it)")
                fifo = stat.S_ISFIFO(mode)
                flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(path, flags | (os.O_NONBLOCK if fifo else os.O_CREAT | os.O_TRUNC), 0o600)
                if not fifo:
                    with os.fdopen(fd, "wb") as f:
                        os.fchmod(fd, 0o600)
                        f.write(payload)
                    log.info("state dumped to %s", path)
                    return
                self._dump_fd = fd
            os.write(self._dump_fd, payload)
        except OSError as exc:
            log.error("cannot dump state to %s: %s", path, exc)
            if self._dump_fd is not None:
                os.close(self._dump_fd)
                self._dump_fd = None


def _paused(pause: Pause | None) -> dict | None:
    if pause is None:
        return None
    return {"scope": pause.scope, "reason": pause.reason, "since": pause.since, "by": pause.by}


def _prefer(svc: ServiceConfig, views: dict[str, PeerView], node: str) -> str | None:
    """The switchover target the service's runs follow (gates.py), if any."""
    prefer = prefer_of(svc, views, node)
    return prefer.host if prefer is not None and (prefer.host == node or prefer.host in svc.peers()) else None
