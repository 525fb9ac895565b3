"""The network thread: owns every ZeroMQ socket of failsh.

It polls each peer's faild (and the local one) at the peer's interval, renews
failsh's lease in the local faild, publishes the monitor feed and answers the
control port.  The Tcl thread never does network I/O for peers: it reads
``snapshot`` (replaced atomically) and is woken through a pipe when a peer
changes, so a policy blocked in ``exec`` never delays polls (tech notes §0).
Each polled host is a PeerLink (peerlink.py).  With a cluster key it also sends and
receives the heartbeats that keep a peer alive while its polls are lost (heartbeats.py).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import zmq

from failover import transport
from failover.faild import lease, server
from failover.observe import feed
from failover.shell.heartbeats import Heartbeats
from failover.shell.peerlink import PeerLink, PeerSpec, waiting
from failover.shell.view import PeerView
from failover.shell.wakeup import Wakeup

__all__ = ["NetThread", "PeerSpec", "PeerView"]

log = logging.getLogger("failover.peers")

HINT_GAP = 0.02  # s: at most one hinted poll per peer this often, however many hints come
RETRY = 0.1  # s: next try of a poll that found no connection to send on


def _poll_soon(peer: PeerLink) -> None:
    """Poll ``peer`` now, or HINT_GAP after its last poll: hints and heartbeats come in bursts."""
    peer.next_due = min(peer.next_due, max(time.monotonic(), peer.polled + HINT_GAP))


class NetThread(threading.Thread):
    def __init__(self, peers: list[PeerSpec], local: PeerSpec, lease_ttl: float,
                 on_change: Callable[[list[str]], None],
                 monitor_endpoint: str | None = None,
                 control: Callable[[bytes], bytes] | None = None,
                 control_endpoint: str | None = None,
                 deciding_until: Callable[[], float] | None = None,
                 heartbeats: Heartbeats | None = None) -> None:
        super().__init__(name="failsh-net", daemon=True)
        self.heartbeats = heartbeats  # None: liveness from the polls alone
        self.specs = {p.name: p for p in peers}
        self.local = local
        self.lease_ttl = lease_ttl
        self.on_change = on_change
        self.monitor_endpoint = monitor_endpoint
        self.control = control
        self.control_endpoint = control_endpoint
        self.snapshot: dict[str, PeerView] = {}
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self.ready = threading.Event()
        self.error: str = ""
        self._halt = threading.Event()
        self._renew_now = False
        self.arbiter: str | None = None  # sent with the lease: "ok", "unreachable" (set_arbiter); None: none
        self._arbiter_source: Callable[[], str] | None = None
        # the lease means "this failsh is deciding": renewed only until this monotonic time
        # (liveness.py); None: not watched
        self.deciding_until = deciding_until
        self._stuck = False
        self._ids = itertools.count(1)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._pub: zmq.Socket | None = None
        # name this process in the lease: faild ends it at once if we are killed
        self._holder = {"pid": os.getpid(), "pidstart": lease.process_start(os.getpid())}
        # commands wake the loop at once (a change hint must not wait for the poll timeout)
        self._wakeup = Wakeup()
        weakref.finalize(self, Wakeup.close_fds, (self._wakeup.fd, self._wakeup.write_fd))

    # API for the Tcl thread --------------------------------------------
    def publish(self, payload: bytes) -> None:
        self._put(("publish", payload))

    def set_peers(self, peers: list[PeerSpec], local: PeerSpec | None = None) -> None:
        """Poll these hosts from now on (and the local faild as ``local``, if given)."""
        self._put(("peers", (peers, local)))

    def hint(self) -> None:
        """Tell the peers a local state changed, so they poll our faild now (the feed's
        change hint; best effort: their regular polls stay the guarantee)."""
        self._put(("hint", None))

    def set_lease(self, ttl: float) -> None:
        """Renew failsh's lease in the local faild every ttl/3 seconds; 0 holds none."""
        self._put(("lease", ttl))

    def set_arbiter(self, source: Callable[[], str] | None) -> None:
        """Whether this failsh reaches its etcd arbiter: ``source()`` says "ok" or
        "unreachable" (None: it has none).  Looked at on every turn of the loop; it goes with
        the lease, renewed at once with a change hint when it changes, and the peers see it
        in their polls (the failsafe, docs/arbiter.md)."""
        self._arbiter_source = source
        self._wakeup.poke()

    def stop(self) -> None:
        self._halt.set()
        self._wakeup.poke()

    def _put(self, command: tuple) -> None:
        self.commands.put(command)
        self._wakeup.poke()

    def release_lease(self) -> None:
        """Tell the local faild this failsh is leaving (lease ttl 0); waits briefly."""
        if not self.is_alive():
            return
        done = threading.Event()
        self._put(("release", done))
        done.wait(1.0)

    def _policy_alive(self, now: float) -> bool:
        """False while the policy thread is stuck (see liveness.py)."""
        if self.deciding_until is None:
            return True
        stuck = now > self.deciding_until()
        if stuck and not self._stuck:
            log.error("policy thread stuck (no event-loop round, no bounded procedure running): "
                      "lease not renewed, peers will take over")
        elif self._stuck and not stuck:
            log.warning("policy thread runs again: lease renewed")
        self._stuck = stuck
        return not stuck

    # Thread body ---------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except zmq.ZMQError as exc:  # typically a monitor or control port in use
            log.error("network thread stopped: %s", exc)
            self.error = str(exc)
        except Exception as exc:  # a dead net thread must be loud, failsh stops on it
            log.exception("network thread failed")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()
            if not self._halt.is_set():
                self._notify([])  # wake the Tcl thread, which sees the thread is gone

    def _run(self) -> None:
        poller = zmq.Poller()
        # XPUB: it also hears who subscribes, and a peer that (re)subscribes to our change
        # hints gets one at once (it may have missed one while we restarted)
        pub = self._pub = self._bind(zmq.XPUB, self.monitor_endpoint)
        try:
            ctl = self._bind(zmq.REP, self.control_endpoint if self.control else None)
        except zmq.ZMQError:
            if pub is not None:
                pub.close(linger=0)
            raise
        if ctl is not None:
            poller.register(ctl, zmq.POLLIN)
        if pub is not None:
            pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, not only a topic's first
            poller.register(pub, zmq.POLLIN)
        poller.register(self._wakeup.fd, zmq.POLLIN)
        beats = self._open_heartbeats(poller, [s for s in (pub, ctl) if s is not None])
        peers: dict[str, PeerLink] = {}
        self._sync_peers(peers, list(self.specs.values()) + [self.local], poller)
        next_lease = 0.0
        self.ready.set()
        while not self._halt.is_set():
            now = time.monotonic()
            source = self._arbiter_source
            reach = source() if source is not None else None
            told = reach != self.arbiter
            if told:
                self.arbiter, self._renew_now = reach, True
            if self._renew_now:
                next_lease, self._renew_now = 0.0, False
            if self.lease_ttl > 0 and now >= next_lease:
                if self._policy_alive(now):
                    sent = self._send(peers[self.local.name], "lease", ttl=self.lease_ttl, arbiter=self.arbiter,
                                      **self._holder)
                    if told and sent:
                        self._hint()  # the peers poll our faild now: the failsafe waits for every host's word
                    next_lease = now + (self.lease_ttl / 3 if sent else min(self.lease_ttl / 3, RETRY))
                else:  # the lease means "this failsh is deciding": let it lapse
                    next_lease = now + min(self.lease_ttl / 3, RETRY)
            for peer in peers.values():
                if now >= peer.next_due:
                    # not connected (yet): try again soon, not an interval later, or a peer
                    # that starts with us stays unknown for a whole (maybe 30 s) interval
                    sent = self._send(peer, "list")
                    peer.next_due = now + (peer.spec.interval if sent else min(peer.spec.interval, RETRY))
            if beats is not None:
                beats.send(now, peers[self.local.name])
            dues = [p.next_due for p in peers.values()] + ([next_lease] if self.lease_ttl > 0 else []) + \
                ([beats.next_due()] if beats is not None else [])
            wait = min(dues) - time.monotonic()
            events = dict(poller.poll(math.ceil(max(0.0, min(wait, 0.05) * 1000.0))))
            if self._wakeup.fd in events:
                self._wakeup.drain()
            if pub is not None and pub in events:
                self._subscriptions(pub)
            for peer in peers.values():
                if peer.hints is not None and peer.hints in events and peer.hinted():
                    _poll_soon(peer)
            if beats is not None and beats.fileno() in events:
                for name in beats.receive(peers, time.monotonic()):  # a change, or a silent peer talks
                    _poll_soon(peers[name])
            answered = [name for name, peer in peers.items() if peer.sock in events]
            changed = [name for name in answered if self._drain(peers[name])]
            if ctl is not None and ctl in events:
                self._serve_control(ctl)
            changed += self._expire(peers)
            if self._commands(peers, poller, pub):
                next_lease = 0.0  # lease switched on or changed: renew now
            if answered or changed:  # last_seen and rtt move on every reply
                self.snapshot = {n: p.view for n, p in peers.items()}
            if changed:
                self._notify(sorted(set(changed)))
        for sock in [s for p in peers.values() for s in (p.sock, p.hints)] + [ctl]:
            if sock is not None:
                sock.close(linger=0)
        if pub is not None:
            pub.close(linger=200)  # the last change hint (lease released) should still go out
        if beats is not None:
            beats.close()

    def _bind(self, kind: int, endpoint: str | None) -> zmq.Socket | None:
        if not endpoint:
            return None
        sock = self._ctx.socket(kind)
        transport.configure(sock)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise zmq.ZMQError(exc.errno, f"cannot bind {endpoint}: {exc.strerror}") from None
        return sock

    def _open_heartbeats(self, poller: zmq.Poller, opened: list[zmq.Socket]) -> Heartbeats | None:
        """Bind the heartbeat port (a port in use stops failsh, as the feed's does)."""
        beats = self.heartbeats
        if beats is None:
            return None
        try:
            beats.open()
        except OSError as exc:
            for sock in opened:
                sock.close(linger=0)
            raise zmq.ZMQError(exc.errno or zmq.EADDRINUSE,
                               f"cannot bind heartbeat port udp {beats.port}: {exc.strerror or exc}") from None
        poller.register(beats.fileno(), zmq.POLLIN)
        return beats

    def _sync_peers(self, peers: dict[str, PeerLink], specs: list[PeerSpec], poller: zmq.Poller) -> None:
        wanted = {s.name: s for s in specs}
        for name, peer in peers.items():  # new interval or deadtime: keep the connection and view
            spec = wanted.get(name)
            if spec is not None and (spec.endpoint, spec.community, spec.curve) == \
                    (peer.spec.endpoint, peer.spec.community, peer.spec.curve):
                peer.next_due = min(peer.next_due, time.monotonic() + spec.interval)
                peer.spec = spec
        for name in [n for n in peers if n not in wanted or peers[n].spec != wanted[n]]:
            peers.pop(name).close(poller)
        now = time.monotonic()
        for name, spec in wanted.items():
            if name not in peers:
                peers[name] = PeerLink(spec, self._ctx, poller, now)
        if self.heartbeats is not None:
            self.heartbeats.sync([s for s in specs if s.name != self.local.name])
        self.snapshot = {n: p.view for n, p in peers.items()}

    def _send(self, peer: PeerLink, op: str, **fields: Any) -> bool:
        return peer.send(next(self._ids), op, **fields)

    def _subscriptions(self, pub: zmq.Socket) -> None:
        """Read what subscribers sent; a new subscriber to the change hints gets one."""
        if b"\x01" + feed.CHANGE_TOPIC in list(waiting(pub)):  # list: read them all
            self._hint()

    def _hint(self) -> None:
        if self._pub is not None:
            self._pub.send(feed.encode_change(self.local.name), zmq.NOBLOCK)

    def _drain(self, peer: PeerLink) -> bool:
        changed = peer.drain()
        lease_appeared, restarted = peer.news()
        if peer.spec.name == self.local.name:
            if changed and self.heartbeats is not None:
                self.heartbeats.announce()  # the peers hear of it now and poll us
            if lease_appeared:
                self._hint()  # we hold a lease now: a slave can hand back to us
            if restarted:
                self._renew_now = True  # a new local faild: renew our lease there now
        return changed

    def _expire(self, peers: dict[str, PeerLink]) -> list[str]:
        now = time.monotonic()
        return [name for name, peer in peers.items() if peer.expire(now)]

    def _notify(self, names: list[str]) -> None:
        try:
            self.on_change(names)
        except Exception:
            log.exception("peer change callback failed")

    def _serve_control(self, ctl: zmq.Socket) -> None:
        """Answer what is waiting, at most 100 requests: a flood on the control port must
        not hold back the polling of peers."""
        control = self.control
        assert control is not None  # ctl exists only with a control callback
        for _ in range(100):
            if not server.serve_one(ctl, lambda frame, _meta: control(frame), zmq.NOBLOCK):
                break
        server.REFUSED.flush()
        server.REJECTED.flush()

    def _commands(self, peers: dict[str, PeerLink], poller: zmq.Poller, pub: zmq.Socket | None) -> bool:
        """Apply the Tcl thread's requests; True if the lease must be renewed now."""
        renew = False
        while True:
            try:
                kind, arg = self.commands.get_nowait()
            except queue.Empty:
                return renew
            if kind == "publish" and pub is not None:
                pub.send(arg, zmq.NOBLOCK)
            elif kind == "hint":
                self._hint()
                if self.heartbeats is not None:  # read it back now: the heartbeats then announce it
                    _poll_soon(peers[self.local.name])
            elif kind == "peers":
                specs, local = arg
                if local is not None and local != self.local:
                    self.local = local
                    renew = True
                self._sync_peers(peers, specs + [self.local], poller)
            elif kind == "lease":
                renew |= arg != self.lease_ttl
                self.lease_ttl = arg
            elif kind == "release":
                if self.lease_ttl > 0:
                    self.lease_ttl = 0.0
                    self._send(peers[self.local.name], "lease", ttl=0)
                    peers[self.local.name].sock.poll(500)
                    self._hint()  # peers may take over now: our services count FAIL
                    if self.heartbeats is not None:
                        self.heartbeats.send(time.monotonic(), peers[self.local.name], lease_off=True)
                arg.set()
