"""What failsh shows of itself: the monitor snapshot, its publication, the state dump.

One snapshot (every service with its state, last check and decision, every polled host,
the recent transitions) feeds failmon (the -m feed), the web page (--http) and the
SIGINT dump (docs/failsh.md, "Signals"; docs/operations.md).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import attrs

from failover.files import make_dir
from failover.model import ServiceRecord, Transition
from failover.observe import feed
from failover.protocol import HOST_WIDE
from failover.shell.gates import prefer_of
from failover.shell.localstate import Change, LocalState
from failover.shell.policy import Policy, ServiceConfig
from failover.shell.view import UNKNOWN, UP, Pause, PeerView
from failover.states import State

log = logging.getLogger("failover.scheduler")
_encode = json.JSONEncoder(separators=(",", ":")).encode  # as feed.encode
_TEXT = {s: s.value for s in State}  # a state's name without the enum's value property, per service and peer


@attrs.frozen
class _Row:
    key: tuple   # what the row shows of the local state (state, last_change, decision) and of the
                 # service (masters, slaves, interval); the peers' records are followed apart
    data: dict   # the row, last_check None: shared by the snapshots, copied before last_check is set
    head: str    # its JSON up to last_check's value
    tail: str    # and after it


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
        self._rows: dict[str, _Row] = {}  # service -> its row as the last snapshot built it
        self._context: tuple | None = None  # the policy and the hosts' status the rows were built with
        self._records: dict[str, dict[str, ServiceRecord]] = {}  # host -> its records the rows show

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

    def snapshot(self) -> feed.Snapshot:
        """Every service and polled host, and the recent transitions, with the encoding:
        a service's row is rebuilt (and encoded) only when what it shows changed; its
        last_check, which moves at every run, is put in at each snapshot."""
        self.seq += 1
        policy = self.policy()
        views = {h: v for h in [self.node, *policy.hosts] if (v := self.peer_view(h)) is not None}
        local = views.get(self.node)
        hosts = [{"name": name, "endpoint": v.endpoint, "status": v.status, "last_seen": v.last_seen,
                  "last_call": v.last_call, "rtt": v.rtt, "failsh": v.lease is not None,
                  "paused": HOST_WIDE in v.maintenance}
                 for name in sorted(policy.hosts) if (v := views.get(name)) is not None]
        # a row reads of a host its status and, while it answers with a lease, its records
        context = (policy, tuple((h, v.status, v.lease is None) for h, v in views.items()))
        records = {h: v.services if v.status == UP and v.lease is not None else {} for h, v in views.items()}
        # rare parts: while any is present, rows are built afresh at every snapshot (and none kept)
        cached = not (local is not None and local.maintenance) and not any(v.prefer for v in views.values())
        if context != self._context or not cached:
            self._context, self._rows, dirty = context, {}, set()
        else:
            dirty = _changed(self._records, records)
        self._records = records
        services, frames = [], []
        # run every second for every service: look-ups hoisted
        rows, state, changed, decision, last_check = \
            self._rows, self.states.state, self.states.last_change.get, self.decisions.get, self.last_check.get
        for name, svc in sorted(policy.services.items()):
            row = rows.get(name) if cached else None
            key = (state(name), changed(name), decision(name, ""),
                   tuple(svc.masters), tuple(svc.slaves), svc.interval)  # failsvc changes svc in place
            if row is None or row.key != key or name in dirty:
                row = self._row(name, svc, views, local, key)
                if cached:
                    rows[name] = row
            checked = last_check(name)
            services.append({**row.data, "last_check": checked})
            frames.append(row.head + ("null" if checked is None else repr(checked)) + row.tail)
        lease = local.lease if local is not None and local.status == UP else None
        snap = feed.Snapshot(v=feed.FEED_VERSION, type="snapshot", node=self.node, time=time.time(), seq=self.seq,
                             lease=lease, services=services, hosts=hosts,
                             history=[t.to_wire() for t in list(self.history)[-50:]])
        head = _encode({k: snap[k] for k in ("v", "type", "node", "time", "seq", "lease")})
        snap.frame = "".join([head[:-1], ',"services":[', ",".join(frames), '],"hosts":', _encode(hosts),
                              ',"history":', _encode(snap["history"]), "}"]).encode()
        return snap

    def _row(self, name: str, svc: ServiceConfig, views: dict[str, PeerView], local: PeerView | None,
             key: tuple) -> _Row:
        """A service's row without its last_check, and its JSON before and after that."""
        peers = {}
        for h in svc.peers():
            v = views.get(h)
            st = v.state_of(name) if v is not None else None
            peers[h] = {"role": "master" if h in svc.masters else "slave",
                        "state": _TEXT[st] if st else "FAIL", "status": v.status if v else UNKNOWN}
        data = {"name": name, "state": _TEXT[key[0]], "role": "master" if not svc.masters else "slave",
                "masters": list(key[3]), "slaves": list(key[4]), "interval": svc.interval, "last_change": key[1],
                "last_check": None, "decision": key[2], "peers": peers,
                "paused": _paused(local.pause_of(name)) if local is not None and local.maintenance else None,
                "prefer": _prefer(svc, views, self.node) if any(v.prefer for v in views.values()) else None}
        # the first ',"last_check":null,' is the member: no string in JSON holds an unescaped quote
        head, _, tail = _encode(data).partition(',"last_check":null,')
        return _Row(key, data, head + ',"last_check":', "," + tail)

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


def _changed(old: dict[str, dict[str, ServiceRecord]], new: dict[str, dict[str, ServiceRecord]]) -> set[str]:
    """The services whose record on some host changed.  A host's records are replaced,
    never changed in place (listing.py), and an unchanged record keeps its identity: a
    host with nothing new keeps its dict, and the rest compare by ``is``."""
    names: set[str] = set()
    for host, recs in new.items():
        was = old.get(host, {})
        if recs is not was:
            names.update(n for n, r in recs.items() if was.get(n) is not r)
            names.update(was.keys() - recs.keys())
    return names


def _paused(pause: Pause | None) -> dict | None:
    if pause is None:
        return None
    return {"scope": pause.scope, "reason": pause.reason, "since": pause.since, "by": pause.by}


def _prefer(svc: ServiceConfig, views: dict[str, PeerView], node: str) -> str | None:
    """The switchover target the service's runs follow (gates.py), if any."""
    prefer = prefer_of(svc, views, node)
    return prefer.host if prefer is not None and (prefer.host == node or prefer.host in svc.peers()) else None
