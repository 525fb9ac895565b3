"""failsh's heartbeats: liveness that does not ride on the polls (docs/failsh.md, "Liveness:
polls and heartbeats"; the datagram is failover/heartbeat.py).

With a cluster key (``failsh --heartbeat-key FILE``) the network thread (peers.py) owns
one UDP socket (``--heartbeat-port``, 1851) and, through this class:

* **sends** every host it polls a signed heartbeat every tenth of that host's dead time
  (at least every 5 ms, at most every second), and at once when its local faild's view
  changed (a state, the lease, a restart);
* **receives** the peers' heartbeats: a good one is a sign of life dated at the moment the
  sender's own faild last answered it (``age``), and a heartbeat whose faild start time,
  record counter or lease presence moved since the previous one asks for a poll of that
  peer now, repeated until a poll sent after it has been answered.  Until then its
  heartbeats vouch for nothing newer than the change: a peer whose change cannot be read
  counts FAIL a dead time later, as a silent one does.

The liveness rule (peerlink.py, ``PeerLink.expire``): a peer counts FAIL only when neither
a poll answer nor a heartbeat came for its dead time.  A heartbeat never makes a silent
peer UP by itself (what failsh knows of a peer comes from polls only): it makes failsh
poll it.  Garbage, forged (wrong key), replayed and unknown senders' datagrams are
dropped, counted (``failover_heartbeats_dropped_total{reason}``) and logged at most once
per sender address every 10 s (a heartbeat the network reordered only at DEBUG); nothing
a datagram holds can raise out of the loop.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import threading
import time
from collections.abc import Mapping

import attrs

from failover import daemon, heartbeat
from failover.heartbeat import BadHeartbeat, Heartbeat, ReplayGuard, Sequence
from failover.observe import metrics
from failover.shell.options import Options
from failover.shell.peerlink import PeerLink, PeerSpec
from failover.shell.view import UP, PeerView

log = logging.getLogger("failover.peers")
DROPPED = daemon.RateLimit(log, "dropped heartbeats", burst=1, period=10.0)

MIN_PERIOD = 0.005   # s: at most 200 heartbeats per second to one host
MAX_PERIOD = 1.0     # s: at least one per second (a change reaches the peers within it)
PER_DEADTIME = 10    # heartbeats per dead time
BATCH = 256          # datagrams read per round of the network thread (a flood waits its turn)
RESOLVE_EVERY = 300.0  # s: a host name is looked up again this often (10 s after a failure)
_ENDPOINT = re.compile(r"tcp://\[?([^\]/]+?)\]?:\d+")


def from_options(opts: Options) -> Heartbeats | None:
    """The heartbeats failsh's command line asks for; None without a key or a port."""
    if opts.heartbeat_key is None or not opts.heartbeat_port:
        return None
    return Heartbeats(opts.heartbeat_key, opts.node, opts.heartbeat_port)


def period_for(deadtime: float) -> float:
    return min(max(deadtime / PER_DEADTIME, MIN_PERIOD), MAX_PERIOD)


@attrs.define
class _Target:
    """One host heartbeats go to."""

    name: str
    host: str            # its address as failsh polls it (an IP literal or a host name)
    period: float
    next: float = 0.0    # monotonic time of its next heartbeat


@attrs.define
class _Heard:
    """What the heartbeats of one peer said."""

    content: tuple[float, int, bool] | None = None  # (faild started, record counter, holds a lease)
    stale: float | None = None   # monotonic time of the first change heard that no poll answer shows yet
    latest: float | None = None  # ... and of the last one: a poll sent after it, answered, clears both


class Heartbeats:
    """The heartbeat socket of failsh's network thread; only that thread calls it (the
    resolver thread only replaces ``_resolved``)."""

    def __init__(self, key: bytes, node: str, port: int, listen: str = "") -> None:
        self.key = key
        self.node = node
        self.port = port
        self.listen = listen
        self.sock: socket.socket | None = None
        self._seq = Sequence()
        self._guard = ReplayGuard()
        self._targets: dict[str, _Target] = {}
        self._heard: dict[str, _Heard] = {}
        self._fixed: dict[str, list[tuple]] = {}     # IP literal -> its socket address
        self._resolved: dict[str, list[tuple]] = {}  # host name -> socket address (resolver thread)
        self._names: frozenset[str] = frozenset()    # the hosts given by name, not IP literal
        self._wake = threading.Event()
        self._resolver: threading.Thread | None = None
        self._closed = False
        self._unusable: set[str] = set()          # endpoints already logged as unusable
        self._counted: tuple[Mapping, int] | None = None  # the local view's records, their record_counter

    # Socket -------------------------------------------------------------------------------
    def open(self) -> None:
        """Bind the UDP port (IPv6 and IPv4 where the host has IPv6); OSError if it cannot."""
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind((self.listen or "::", self.port))
            except OSError:
                sock.close()
                raise
        except OSError as exc:  # no IPv6 here (or an IPv4 listen address): IPv4 only
            if exc.errno == errno.EADDRINUSE:
                raise
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((self.listen or "0.0.0.0", self.port))
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        self.sock = sock

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self.sock is not None:
            self.sock.close()

    # Whom to tell -------------------------------------------------------------------------
    def sync(self, specs: list[PeerSpec]) -> None:
        """Send to these hosts from now on (the polled ones; the local node is left out)."""
        targets: dict[str, _Target] = {}
        for spec in specs:
            if spec.name == self.node:
                continue
            m = _ENDPOINT.fullmatch(spec.endpoint)
            if m is None:
                if spec.endpoint not in self._unusable:
                    self._unusable.add(spec.endpoint)
                    log.warning("%s: no heartbeats to %s (not a tcp:// address)", spec.name, spec.endpoint)
                continue
            old = self._targets.get(spec.name)
            targets[spec.name] = _Target(spec.name, m.group(1), period_for(spec.deadtime),
                                         old.next if old is not None else 0.0)
        self._targets = targets
        self._heard = {n: self._heard.get(n, _Heard()) for n in targets}
        self._guard.forget(set(targets))
        names = set()
        for host in {t.host for t in targets.values()}:
            numeric = self._numeric(host)
            if numeric is None:
                names.add(host)
            else:
                self._fixed[host] = numeric
        self._names = frozenset(names)
        if names:
            self._wake.set()
            if self._resolver is None:
                self._resolver = threading.Thread(target=self._resolve_loop, name="failsh-resolve", daemon=True)
                self._resolver.start()

    def _numeric(self, host: str) -> list[tuple] | None:
        """The socket address of an IP literal (no DNS); None for a host name."""
        try:
            infos = socket.getaddrinfo(host, self.port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)
        except (OSError, UnicodeError):
            return None
        return self._usable(infos)

    def _usable(self, infos: list) -> list[tuple]:
        """The addresses our socket can send to (IPv4 as v4-mapped on an IPv6 socket)."""
        family = self.sock.family if self.sock is not None else socket.AF_INET6
        out = []
        for fam, _type, _proto, _name, addr in infos:
            if fam == family:
                out.append(addr)
            elif fam == socket.AF_INET and family == socket.AF_INET6:
                out.append((f"::ffff:{addr[0]}", addr[1], 0, 0))
        return out[:1]

    def _resolve_loop(self) -> None:
        """A thread of its own: DNS must never block the network thread.  It only replaces
        ``_resolved`` as a whole; a name is looked up again every RESOLVE_EVERY s (10 s
        after a failure)."""
        tried: dict[str, float] = {}
        while not self._closed:
            for host in sorted(self._names):
                now = time.monotonic()
                last = tried.get(host)
                if last is not None and now - last < (RESOLVE_EVERY if host in self._resolved else 10.0):
                    continue
                tried[host] = now
                try:
                    addrs = self._usable(socket.getaddrinfo(host, self.port, type=socket.SOCK_DGRAM))
                except (OSError, UnicodeError) as exc:
                    addrs = []
                    if last is None:
                        log.warning("heartbeats: cannot resolve %s: %s", host, exc)
                if addrs:
                    self._resolved = {**self._resolved, host: addrs}
            self._wake.wait(10.0)
            self._wake.clear()

    def addresses(self, host: str) -> list[tuple]:
        return self._fixed.get(host) or self._resolved.get(host, [])

    # Sending ------------------------------------------------------------------------------
    def next_due(self) -> float:
        return min((t.next for t in self._targets.values()), default=float("inf"))

    def announce(self) -> None:
        """Send to every host now (the local view changed)."""
        for target in self._targets.values():
            target.next = 0.0

    def send(self, now: float, local: PeerLink, lease_off: bool = False) -> None:
        """Send to every host whose heartbeat is due, saying what the local faild last said.
        Nothing before the local faild has answered once.  ``lease_off``: say there is no
        lease (failsh is giving it up), to every host at once."""
        due = [t for t in self._targets.values() if lease_off or now >= t.next]
        for target in due:
            target.next = now + target.period
        if not due or self.sock is None or local.last_ok is None or local.view.started is None:
            return  # (nothing to vouch for before the local faild has answered)
        data = heartbeat.encode(self.key, self._beat(now, local, lease_off))
        for target in due:
            for addr in self.addresses(target.host):
                try:
                    self.sock.sendto(data, addr)
                    metrics.HEARTBEATS_SENT.inc()
                except OSError as exc:  # a full buffer, an unreachable network: the next one may pass
                    if exc.errno not in (errno.EAGAIN, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED,
                                         errno.EPERM, errno.ENOBUFS):
                        log.debug("heartbeat to %s %s: %s", target.name, addr[0], exc)

    def _beat(self, now: float, local: PeerLink, lease_off: bool) -> Heartbeat:
        view = local.view
        assert local.last_ok is not None and view.started is not None
        age = now - local.last_ok
        lease = None if lease_off or view.lease is None else max(0.0, view.lease - age)
        if self._counted is None or self._counted[0] is not view.services:  # a poll replaces them when they change
            self._counted = view.services, record_counter(view)
        return Heartbeat(self.node, self._seq.next(), view.started, lease, self._counted[1], age)

    # Receiving ----------------------------------------------------------------------------
    def receive(self, links: Mapping[str, PeerLink], now: float) -> list[str]:
        """Read what is waiting (at most BATCH datagrams); the peers to poll now."""
        if self.sock is None:
            return []
        poll: list[str] = []
        for _ in range(BATCH):
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # an ICMP error queued on the socket: take the next one
                log.debug("heartbeat socket: %s", exc)
                continue
            source = _shown(addr)
            try:
                name = self._take(data, source, links, now)
            except Exception:  # never out of the network thread's loop
                log.exception("heartbeat from %s not handled", source)
                self._drop("error", source, "internal error")
                continue
            if name is not None and name not in poll:
                poll.append(name)
        DROPPED.flush()
        return poll

    def _take(self, data: bytes, source: str, links: Mapping[str, PeerLink], now: float) -> str | None:
        """One datagram: the peer to poll now, if any."""
        try:
            hb = heartbeat.decode(self.key, data)
        except BadHeartbeat as exc:
            self._drop("signature" if exc.reason == "bad signature" else "malformed", source, exc.reason)
            return None
        link = links.get(hb.node)
        if hb.node == self.node or link is None or hb.node not in self._targets:
            self._drop("unknown-host", source, f"signed by {hb.node!r}, a host this failsh does not serve with")
            return None
        why = self._guard.verdict(hb)
        if why == "late":  # reordered by the network: older news than what came already
            metrics.HEARTBEATS_DROPPED.labels(why).inc()
            log.debug("%s: a heartbeat older than the last one came late", hb.node)
            return None
        if why is not None:
            self._drop(why, source, f"from {hb.node}: " + (
                "a sequence number already seen, or too old (replayed or duplicated)" if why == "replay" else
                f"its clock is more than {heartbeat.MAX_SKEW:g} s from ours"))
            return None
        metrics.HEARTBEATS_RECEIVED.labels(hb.node).inc()
        heard = self._heard.setdefault(hb.node, _Heard())
        if heard.latest is not None and link.answered >= heard.latest:
            heard.stale = heard.latest = None  # a poll sent after the last change has been answered
        content = (hb.started, hb.counter, hb.lease is not None)
        if content != heard.content and (heard.content is not None or not _reflects(link.view, content)):
            heard.latest = now
            if heard.stale is None:
                heard.stale = now
            log.debug("%s's heartbeat announces a change (faild started %.3f, record counter %d, %s)",
                      hb.node, hb.started, hb.counter, "a lease" if hb.lease is not None else "no lease")
        heard.content = content
        # a sign of life, dated when its own faild last answered it; but a change we cannot
        # read (its polls get lost) vouches for nothing after it: the peer then counts FAIL a
        # dead time after the change, as if silent
        alive = now - hb.age if heard.stale is None else min(now - hb.age, heard.stale)
        link.heard = max(link.heard, alive)
        if heard.stale is not None or link.view.status != UP:
            metrics.HEARTBEAT_POLLS.labels(hb.node).inc()
            return hb.node
        return None

    def _drop(self, reason: str, source: str, why: str) -> None:
        metrics.HEARTBEATS_DROPPED.labels(reason).inc()
        DROPPED.log(logging.WARNING, source, "dropped a heartbeat from %s: %s", source, why)


def _shown(addr: object) -> str:
    """A datagram's source address as a log line shows it (IPv4 without its v4-mapped form)."""
    host = str(addr[0]) if isinstance(addr, tuple) and addr else "?"
    return host.removeprefix("::ffff:") if "." in host else host


def record_counter(view: PeerView) -> int:
    """A faild's record counter as a list reply shows it: the highest of its records'."""
    return max((r.counter for r in view.services.values()), default=0)


def _reflects(view: PeerView, content: tuple[float, int, bool]) -> bool:
    started, counter, leased = content
    return view.status == UP and view.started == started and (view.lease is not None) == leased \
        and record_counter(view) >= counter
