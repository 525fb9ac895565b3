"""The network thread: owns every ZeroMQ socket of failsh.

It polls each peer's faild (and the local one) at the peer's interval, renews
failsh's lease in the local faild, publishes the monitor feed and answers the
control port.  The Tcl thread never does network I/O for peers: it reads
``snapshot`` (replaced atomically) and is woken through a pipe when a peer
changes, so a policy blocked in ``exec`` never delays polls (tech notes §0).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import attrs
import zmq

from failover import daemon, keys, model, protocol
from failover.client import configure_socket, reconnect
from failover.faild import lease, server
from failover.model import HostInfo, ServiceRecord
from failover.observe import feed, metrics
from failover.shell.view import DOWN, UP, PeerView
from failover.shell.wakeup import Wakeup
from failover.states import State

log = logging.getLogger("failover.peers")

HINT_GAP = 0.02  # s: at most one hinted poll per peer this often, however many hints come
RETRY = 0.1  # s: next try of a poll that found no connection to send on


@attrs.frozen
class PeerSpec:
    """Where and how often to poll one host."""

    name: str
    endpoint: str
    interval: float
    deadtime: float
    community: str = protocol.DEFAULT_COMMUNITY
    curve: keys.Curve | None = None  # CURVE identity and the host's faild key (failsh --curve-keys)
    hint: str | None = None  # the host's failsh feed: a change hint there means "poll now"


class _Peer:
    def __init__(self, spec: PeerSpec, sock: zmq.Socket, hints: zmq.Socket | None, now: float) -> None:
        self.spec = spec
        self.sock = sock
        self.hints = hints                 # SUB to the peer's change hints, if it has a feed
        self.polled = 0.0                  # monotonic time of the last poll sent
        self.view = PeerView(spec.name, spec.endpoint)
        self.born = now
        self.next_due = now
        self.sent: dict[str, float] = {}   # outstanding request id -> monotonic send time
        self.last_ok: float | None = None
        self.rearmed = now                 # last _rearm() of a silent peer


class NetThread(threading.Thread):
    def __init__(self, peers: list[PeerSpec], local: PeerSpec, lease_ttl: float,
                 on_change: Callable[[list[str]], None],
                 monitor_endpoint: str | None = None,
                 control: Callable[[bytes], bytes] | None = None,
                 control_endpoint: str | None = None,
                 deciding_until: Callable[[], float] | None = None) -> None:
        super().__init__(name="failsh-net", daemon=True)
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
        # the lease means "this failsh is deciding": renewed only until this monotonic time
        # (Engine.deciding_until); None: not watched
        self.deciding_until = deciding_until
        self._stuck = False
        self._ids = itertools.count(1)
        self._ctx = zmq.Context.instance()
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
        """False while the policy thread is stuck (see Engine.deciding_until)."""
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
        peers: dict[str, _Peer] = {}
        self._sync_peers(peers, list(self.specs.values()) + [self.local], poller)
        next_lease = 0.0
        self.ready.set()
        while not self._halt.is_set():
            now = time.monotonic()
            if self._renew_now:
                next_lease, self._renew_now = 0.0, False
            if self.lease_ttl > 0 and now >= next_lease:
                if self._policy_alive(now):
                    sent = self._send(peers[self.local.name], "lease", ttl=self.lease_ttl, **self._holder)
                    next_lease = now + (self.lease_ttl / 3 if sent else min(self.lease_ttl / 3, RETRY))
                else:  # the lease means "this failsh is deciding": let it lapse
                    next_lease = now + min(self.lease_ttl / 3, RETRY)
            for peer in peers.values():
                if now >= peer.next_due:
                    # not connected (yet): try again soon, not an interval later, or a peer
                    # that starts with us stays unknown for a whole (maybe 30 s) interval
                    sent = self._send(peer, "list")
                    peer.next_due = now + (peer.spec.interval if sent else min(peer.spec.interval, RETRY))
            dues = [p.next_due for p in peers.values()] + ([next_lease] if self.lease_ttl > 0 else [])
            wait = min(dues) - time.monotonic()
            events = dict(poller.poll(max(0, min(wait, 0.05)) * 1000))
            if self._wakeup.fd in events:
                self._wakeup.drain()
            if pub is not None and pub in events:
                self._subscriptions(pub)
            for peer in peers.values():
                if peer.hints is not None and peer.hints in events and _hinted(peer):
                    peer.next_due = min(peer.next_due, max(time.monotonic(), peer.polled + HINT_GAP))
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

    def _bind(self, kind: int, endpoint: str | None) -> zmq.Socket | None:
        if not endpoint:
            return None
        sock = self._ctx.socket(kind)
        configure_socket(sock)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise zmq.ZMQError(exc.errno, f"cannot bind {endpoint}: {exc.strerror}") from None
        return sock

    def _sync_peers(self, peers: dict[str, _Peer], specs: list[PeerSpec], poller: zmq.Poller) -> None:
        wanted = {s.name: s for s in specs}
        for name, peer in peers.items():  # new interval or deadtime: keep the connection and view
            spec = wanted.get(name)
            if spec is not None and (spec.endpoint, spec.community, spec.curve) == \
                    (peer.spec.endpoint, peer.spec.community, peer.spec.curve):
                peer.next_due = min(peer.next_due, time.monotonic() + spec.interval)
                peer.spec = spec
        for name in [n for n in peers if n not in wanted or peers[n].spec != wanted[n]]:
            gone = peers.pop(name)
            for sock in (gone.sock, gone.hints):
                if sock is not None:
                    poller.unregister(sock)
                    sock.close(linger=0)
        now = time.monotonic()
        for name, spec in wanted.items():
            if name not in peers:
                sock = self._ctx.socket(zmq.DEALER)
                configure_socket(sock, spec.deadtime)
                sock.setsockopt(zmq.IMMEDIATE, 1)  # don't queue polls for a peer that is down
                if spec.curve is not None:
                    keys.client_socket(sock, spec.curve.identity, spec.curve.server)
                try:
                    sock.connect(spec.endpoint)
                except zmq.ZMQError as exc:  # unusable address: the host stays silent, so FAIL
                    log.error("%s: cannot use address %s: %s", name, spec.endpoint, exc.strerror)
                poller.register(sock, zmq.POLLIN)
                hints = self._subscribe(spec)
                if hints is not None:
                    poller.register(hints, zmq.POLLIN)
                peers[name] = _Peer(spec, sock, hints, now)
        self.snapshot = {n: p.view for n, p in peers.items()}

    def _subscribe(self, spec: PeerSpec) -> zmq.Socket | None:
        """A SUB to the host's change hints: they only make us poll its faild sooner, so
        the feed needs no authentication (docs/security.md)."""
        if not spec.hint:
            return None
        sock = self._ctx.socket(zmq.SUB)
        configure_socket(sock, spec.deadtime)
        sock.rcvhwm = 16
        sock.setsockopt(zmq.SUBSCRIBE, feed.CHANGE_TOPIC)
        try:
            sock.connect(spec.hint)
        except zmq.ZMQError as exc:
            log.warning("%s: no change hints from %s: %s", spec.name, spec.hint, exc.strerror)
            sock.close(linger=0)
            return None
        return sock

    def _send(self, peer: _Peer, op: str, **fields: object) -> bool:
        """Send a request; False if there is no connection to send it on."""
        rid = next(self._ids)
        req = protocol.Request(op=op, id=rid, community=peer.spec.community, **fields)
        try:
            peer.sock.send_multipart([b"", protocol.encode(req.to_wire())], zmq.NOBLOCK)
        except zmq.Again:
            return False  # no connection: the deadline in _expire notices a silent peer
        now = time.monotonic()
        peer.sent[str(rid)] = now
        if len(peer.sent) > 8:  # forget the oldest unanswered polls
            peer.sent.pop(next(iter(peer.sent)))
        if op == "list":
            peer.polled = now
            peer.view = attrs.evolve(peer.view, last_call=time.time())
        return True

    def _subscriptions(self, pub: zmq.Socket) -> None:
        """Read what subscribers sent; a new subscriber to the change hints gets one."""
        if b"\x01" + feed.CHANGE_TOPIC in list(_waiting(pub)):  # list: read them all
            self._hint()

    def _hint(self) -> None:
        if self._pub is not None:
            self._pub.send(feed.encode_change(self.local.name), zmq.NOBLOCK)

    def _drain(self, peer: _Peer) -> bool:
        changed = False
        while True:
            try:
                frames = peer.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return changed
            changed |= self._reply(peer, frames[-1])

    def _reply(self, peer: _Peer, frame: bytes) -> bool:
        """Take one reply; a malformed one, or one from a faild that is not the host we
        meant to poll, counts as no reply (the peer goes FAIL after its dead time)."""
        try:
            reply = protocol.decode_reply(frame)
            sent = peer.sent.pop(str(reply.get("id")), None)
            if sent is None:
                return False
            host, lease_left, records = _parse_list(reply)
        except protocol.ProtocolError as exc:
            BAD_REPLIES.log(logging.WARNING, peer.spec.name, "bad reply from %s: %s", peer.spec.name, exc)
            return False
        if host is not None and host.name != peer.spec.name:
            BAD_REPLIES.log(logging.ERROR, peer.spec.name, "%s at %s answers as %r, not %r: counted as not "
                            "answering (check its faild -N and failsh's failhost/-P address)",
                            peer.spec.name, peer.spec.endpoint, host.name, peer.spec.name)
            return False
        now = time.monotonic()
        peer.last_ok = now
        metrics.observe_query(peer.spec.name, now - sent)
        old = peer.view
        if not reply["ok"]:  # e.g. DENIED: a community problem; failsh waits, it does not guess
            error = f"{reply.get('error')}: {reply['message']}"
            if error != old.error:
                log.warning("%s refused our poll: %s", peer.spec.name, error)
            peer.view = attrs.evolve(old, status=UP, error=error, last_seen=time.time())
            return old.status != UP or old.error != error
        fields: dict = {"status": UP, "last_seen": time.time(), "rtt": now - sent, "error": "",
                        "lease": lease_left, "started": host.started if host else None}
        if peer.spec.name == self.local.name and old.lease is None and fields["lease"] is not None:
            self._hint()  # we hold a lease now: a slave can hand back to us
        fields["leased"] = old.leased or fields["lease"] is not None
        if old.started is not None and fields["started"] != old.started:
            fields["restarted"] = now  # a new faild process: its failsh needs a moment to renew
            fields["leased"] = fields["lease"] is not None
            if peer.spec.name == self.local.name:
                self._renew_now = True  # and that failsh is us
        if records is not None:
            fields["services"] = {r.name: r for r in records}
        peer.view = attrs.evolve(old, **fields)
        return (old.status != UP or (old.lease is None) != (peer.view.lease is None)
                or _states(old) != _states(peer.view) or old.started != peer.view.started)

    def _expire(self, peers: dict[str, _Peer]) -> list[str]:
        now = time.monotonic()
        changed = []
        for name, peer in peers.items():
            since = peer.last_ok if peer.last_ok is not None else peer.born
            if peer.view.status != DOWN and now - since > peer.spec.deadtime:
                log.warning("%s did not answer for %.2f s: counting it as FAIL", name, now - since)
                peer.view = attrs.evolve(peer.view, status=DOWN, error="no reply")
                changed.append(name)
            if peer.view.status == DOWN and now - peer.rearmed > peer.spec.deadtime:
                peer.rearmed = now
                _rearm(peer)
        return changed

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

    def _commands(self, peers: dict[str, _Peer], poller: zmq.Poller, pub: zmq.Socket | None) -> bool:
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
                arg.set()


BAD_REPLIES = daemon.RateLimit(log, "bad replies", burst=1, period=10.0)


def _parse_list(reply: dict) -> tuple[HostInfo | None, float | None, list[ServiceRecord] | None]:
    """The host, its lease's seconds left and the service records of an ok reply (None
    where absent); ProtocolError (BADREPLY) if any field is malformed: a peer's bug must
    not stop this thread."""
    if not reply["ok"]:
        return None, None, None
    parsed = model.reply_from_wire(reply)
    return parsed.host, parsed.host.lease if parsed.host else None, parsed.services


def _rearm(peer: _Peer) -> None:
    """Connect a silent peer's socket again (our CURVE key may have been refused)."""
    try:
        reconnect(peer.sock, peer.spec.endpoint)
    except zmq.ZMQError:
        pass  # an unusable address: the peer stays silent, so FAIL


def _waiting(sock: zmq.Socket, limit: int = 64) -> Iterator[bytes]:
    """The frames ``sock`` holds now, at most ``limit`` (a flood waits for the next loop)."""
    for _ in range(limit):
        try:
            yield sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return


def _hinted(peer: _Peer) -> bool:
    """Read what the peer's feed sent; True if one was a change hint from that peer."""
    assert peer.hints is not None
    hinted = False
    for frame in _waiting(peer.hints):
        try:
            hinted |= feed.decode_change(frame) == peer.spec.name
        except ValueError as exc:
            log.debug("%s: ignored on its feed: %s", peer.spec.name, exc)
    return hinted


def _states(view: PeerView) -> dict[str, State]:
    return {n: r.state for n, r in view.services.items()}
