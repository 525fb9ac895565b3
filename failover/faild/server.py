"""faild's serve loop: answers requests from the store, checks communities, never acts."""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable, Reversible
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs
import zmq
from zmq.auth.thread import ThreadAuthenticator

from failover import daemon, keys, model, protocol, transport
from failover.faild import community
from failover.faild.lease import Lease
from failover.model import HostInfo, MaintEntry, PreferEntry, ServiceRecord, Transition
from failover.states import State

log = logging.getLogger("failover.server")
plog = logging.getLogger("failover.protocol")

def peer_address(frame: zmq.Frame | None) -> str:
    """Who sent ``frame`` (its TCP peer's address; "?" when ZeroMQ does not know)."""
    if frame is None:
        return "?"
    try:
        return str(frame.get("Peer-Address"))
    except (zmq.ZMQError, TypeError):
        return "?"


def changed_by(agent: str, address: str) -> str:
    """The ``by`` faild records for a change: "AGENT from ADDRESS", "AGENT" when ZeroMQ
    reports no address (ipc://), "ADDRESS" when the request names no agent.  An IPv4
    client of a dual-stack socket is shown as IPv4 (10.0.0.9, not ::ffff:10.0.0.9)."""
    address = "" if address in ("?", "None") else address
    if address.startswith("::ffff:"):
        try:
            mapped = ipaddress.IPv6Address(address).ipv4_mapped
        except ValueError:
            mapped = None
        address = str(mapped) if mapped is not None else address
    return protocol.clean_text(" from ".join(part for part in (agent, address) if part))[:model.MAX_BY]


# one line per peer per period for refused (DENIED) and malformed requests (docs/security.md)
REFUSED = daemon.RateLimit(log, "refused requests")
REJECTED = daemon.RateLimit(plog, "malformed requests")


def serve_one(sock: zmq.Socket, handle: Callable[[bytes, zmq.Frame], bytes], flags: int = 0) -> bool:
    """Receive one request on the REP socket ``sock`` and send exactly one reply.

    Every listener that speaks the faild protocol (faild, failsh's control port, hc's
    monitor) serves through this: a multi-frame request gets an error reply (replying
    before its last frame is EFSM, which would stop the thread), and an exception in
    ``handle`` an INTERNAL one; nothing a client sends makes this raise.  False if no
    request was waiting (zmq.Again: NOBLOCK or the receive timeout).
    """
    try:
        frame = sock.recv(flags, copy=False)
    except zmq.Again:
        return False
    if frame.more:
        parts = 1 + len(sock.recv_multipart(zmq.NOBLOCK))  # the rest arrived with it
        REJECTED.log(logging.INFO, peer_address(frame), "rejected request of %d frames from %s",
                     parts, peer_address(frame))
        reply = protocol.encode(protocol.error_reply(None, "BADREQUEST", f"a request is one frame, not {parts}"))
    else:
        try:
            reply = handle(frame.bytes, frame)
        except Exception as exc:  # a REP socket must answer every request, or it is stuck
            log.exception("internal error on a request from %s", peer_address(frame))
            reply = protocol.encode(protocol.error_reply(None, "INTERNAL", f"internal error: {type(exc).__name__}"))
    sock.send(reply)
    return True


class StateStore(Protocol):
    """What :class:`Faild` serves: faild's own store (failover/faild/store.py), or any other
    set of records with a history, such as hc's check states or failsh's own transitions."""

    @property
    def counter(self) -> int:
        """Moves on every change of a record: Faild re-encodes its replies when it has moved."""

    @property
    def history(self) -> Reversible[Transition]:
        """The transitions kept, oldest first."""

    def get(self, name: str) -> ServiceRecord | None: ...

    def all(self) -> list[ServiceRecord]:
        """Every record, sorted by name."""

    def __len__(self) -> int:
        """How many records."""

    def set(self, name: str, state: State, reason: str = "", by: str = "") -> tuple[ServiceRecord, bool]:
        """Set a state; the record and whether it changed.  OSError if it cannot be saved.
        ``by``: who asks (see changed_by)."""


@runtime_checkable
class FlagStore(Protocol):
    """A :class:`StateStore` that also holds an administrator's maintenance flags and
    switchover targets (faild's own store): Faild answers maint and prefer over it only."""

    @property
    def maintenance(self) -> dict[str, MaintEntry]:
        """"*" (the whole host) and services -> their maintenance entry."""

    @property
    def prefer(self) -> dict[str, PreferEntry]:
        """Services -> their switchover target."""

    @property
    def flags_version(self) -> int:
        """Moves on every change of maintenance or prefer."""

    @property
    def flags_counter(self) -> int:
        """The change counter of the last change of maintenance or prefer (which moves it)."""

    def maint(self, key: str, on: bool, reason: str = "", by: str = "") -> bool:
        """Maintenance of a service or "*" on or off; whether it changed.  OSError if not saved."""

    def set_prefer(self, service: str, host: str | None, reason: str = "", by: str = "") -> bool:
        """A service's switchover target (None clears it); whether it changed.  OSError if not saved."""


T = TypeVar("T")


def _given(value: T | None) -> T:
    """A field of the request that its op requires: decode_request let none through without it."""
    assert value is not None, "protocol.decode_request checks the fields of protocol.OPS"
    return value


@attrs.frozen
class _View:
    """The records one community may read, for paged lists: by name and by counter."""

    records: list[ServiceRecord]  # by name
    names: list[str]
    by_counter: list[ServiceRecord]
    counters: list[int]

    @classmethod
    def of(cls, records: list[ServiceRecord]) -> _View:
        by_counter = sorted(records, key=lambda r: r.counter)
        return cls(records, [r.name for r in records], by_counter, [r.counter for r in by_counter])


class Denied(Exception):
    """The request's community may not do this (not PermissionError: that is an OSError)."""


class NoService(Exception):
    """faild holds no record of the requested service (not LookupError: a KeyError is a bug)."""


class Faild:
    """The faild protocol over a :class:`StateStore`: access rules, the lease, cached replies.
    Pure request handling (:meth:`handle`) and the serve loop of the faild program (:meth:`serve`)."""

    def __init__(self, store: StateStore, rules: community.Rules, host: HostInfo,
                 community_file: Path | None = None, curve: keys.ServerKeys | None = None,
                 leases: bool = False) -> None:
        """``leases``: hold failsh's lease (the faild program): the ``lease`` op and the
        ``lease`` member of ``host``.  Other servers of the protocol (hc's monitor, failsh's
        control port) answer without that member, so that no client takes their services
        for ones a failsh should hold (failstat's "stale")."""
        self.store = store
        self.leases = leases
        self.rules = rules
        self.host = host
        self.community_file = community_file
        # CURVE required on the socket: only clients whose key is in the allow-list get in
        self.curve = curve
        self._allow = keys.AllowList(curve.allowed) if curve is not None else None
        self._host_wire = {"name": host.name, "started": host.started, "pid": host.pid}
        # the host object as JSON up to its last member, the lease, which changes every call
        self._host_json_head = protocol.dumps(self._host_wire)[:-1] + (',"lease":' if leases else "")
        self.lease = Lease()  # failsh on this host renews it
        # get/list: the "services" array (and the maintenance and prefer members) as JSON,
        # per service / per community, and the readable records (_View) and pages of paged
        # lists; cleared when the store's counter or flags_version moves (whoever changed
        # it) and on reload
        self._services_json: dict[str | tuple, Any] = {}
        self._record_json: dict[str, tuple[ServiceRecord, str]] = {}  # each record's JSON, while it stands
        self._flag_store = store if isinstance(store, FlagStore) else None
        self._cached_at = (store.counter, self._flags_version())
        self._stop = False

    # Request handling (pure: frame in, frame out) ----------------------
    def _flags_version(self) -> int:
        return self._flag_store.flags_version if self._flag_store is not None else 0

    def _flags_counter(self) -> int:
        return self._flag_store.flags_counter if self._flag_store is not None else 0

    def _need_flags(self, op: str) -> FlagStore:
        """The store of maint and prefer; BADOP where there is none (as from an older faild)."""
        if self._flag_store is None:
            raise protocol.ProtocolError("BADOP", f"{self.host.name} holds no maintenance flags: "
                                         f"operation {op!r} is not served here")
        return self._flag_store

    def invalidate(self) -> None:
        """Drop the cached replies (a store change is noticed by its counter without this)."""
        self._services_json.clear()

    def handle(self, frame: bytes, meta: zmq.Frame | None = None) -> bytes:
        """One request in, one reply out; ``meta`` (the received frame) names the peer in
        the log lines of refused and malformed requests, never the offered community."""
        try:
            req = protocol.decode_request(frame)
        except protocol.ProtocolError as exc:
            peer = peer_address(meta)
            REJECTED.log(logging.INFO, peer, "rejected request from %s: %s", peer, exc)
            return protocol.encode(protocol.error_reply(exc.request_id, exc.code, str(exc)))
        try:
            if req.op in ("get", "list"):
                return self._read(req)
            reply = self._dispatch(req, changed_by(req.agent, peer_address(meta)) if meta is not None
                                   else req.agent)
        except Denied as exc:
            peer = peer_address(meta)
            REFUSED.log(logging.WARNING, peer, "refused %s on %s from %s: %s", req.op, req.service or "*",
                        peer, exc)
            reply = protocol.error_reply(req.id, "DENIED", str(exc))
        except NoService as exc:
            reply = protocol.error_reply(req.id, "NOSERVICE", str(exc))
        except protocol.ProtocolError as exc:
            reply = protocol.error_reply(req.id, exc.code, str(exc))
        except ValueError as exc:
            reply = protocol.error_reply(req.id, "BADREQUEST", str(exc))
        except OSError as exc:
            log.error("%s failed: %s", req.op, exc)
            reply = protocol.error_reply(req.id, "STORE", f"cannot save the state file: {exc.strerror or exc}")
        except Exception as exc:  # a REP socket must answer every request, or it is stuck
            log.exception("internal error on %s", req.op)
            reply = protocol.error_reply(req.id, "INTERNAL", f"internal error: {type(exc).__name__}")
        return reply if isinstance(reply, bytes) else protocol.encode(reply)

    def _read(self, req: protocol.Request) -> bytes:
        """'get' and 'list', the peers' polling path: access is checked on every call, the
        services part of the reply is encoded once per state change."""
        rules = self.rules
        key: str | tuple
        if req.op == "get":
            if not rules.may_read(req.service, req.community):
                raise Denied(f"community has no read access to {req.service}")
            key = _given(req.service)
        else:
            if not rules.knows(req.community):
                raise Denied("community has no read access to this host")
            key = ("page", req.community, req.since, req.after or "") if req.paged else ("list", req.community)
        version = (self.store.counter, self._flags_version())
        if version != self._cached_at or len(self._services_json) > 256:
            self._services_json.clear()
            self._cached_at = version
        services = self._services_json.get(key)
        if services is None:
            if req.op == "get":
                rec = self.store.get(_given(req.service))
                if rec is None:
                    raise NoService(f"unknown service {req.service!r} on {self.host.name}")
                services = self._members([rec], req)
            elif req.paged:
                services = self._page(self._view(req.community), req)
            else:
                services = self._whole(self._view(req.community).records, req)
            self._services_json[key] = services
        if isinstance(services, protocol.ProtocolError):
            raise protocol.ProtocolError(services.code, str(services))  # a new one: a raise extends its traceback
        return protocol.encode_ok(req.id, f'"host":{self._host_json()},{services}')

    def _view(self, community: str) -> _View:
        """The records ``community`` may read (cached with the replies)."""
        key = ("view", community)
        view = self._services_json.get(key)
        if view is None:
            rules = self.rules
            readable = [r for r in self.store.all() if rules.may_read(r.name, community)]
            view = self._services_json[key] = _View.of(readable)
        return view

    def _whole(self, recs: list[ServiceRecord], req: protocol.Request) -> str | protocol.ProtocolError:
        """An un-paged list: every record in one reply, or TOOBIG when they do not fit (more
        than an old client takes, or than a message holds even without the reasons)."""
        text = self._members(recs, req) if len(recs) <= protocol.LEGACY_LIST else ""
        if not text or len(text) > self.BUDGET:
            return protocol.ProtocolError(
                "TOOBIG", f"{self.host.name} holds {len(recs)} services, more than one reply carries; "
                "this client must read them in pages (failover >= 0.7)")
        return text

    def _record(self, rec: ServiceRecord) -> str:
        cached = self._record_json.get(rec.name)
        if cached is None or cached[0] is not rec:
            if len(self._record_json) > 2 * protocol.MAX_SERVICES:
                self._record_json.clear()
            cached = self._record_json[rec.name] = (rec, protocol.dumps(rec.to_wire()))
        return cached[1]

    def _page(self, view: _View, req: protocol.Request) -> str:
        """One page of a paged list (docs/protocol.md, "Paged and incremental list"): the
        readable records after ``after`` (changed after ``since``), as many as fit, and on
        a read's first page the maintenance and prefer entries if they may have changed."""
        since, after = req.since, req.after or ""
        records: Iterable[ServiceRecord]
        if since is None:
            records = itertools.islice(view.records, bisect.bisect_right(view.names, after), None)
        else:
            changed = view.by_counter[bisect.bisect_right(view.counters, since):]
            records = sorted((r for r in changed if r.name > after), key=lambda r: r.name)
        flags = ""
        if not after and (since is None or self._flags_counter() > since):
            flags = "," + self._members([], req, services=False, half=True, empty=True)
        budget = self.BUDGET - len(flags)
        texts: list[str] = []
        size, more = 0, False
        for rec in records:
            text = self._record(rec)
            size += len(text) + 1
            if texts and size > budget:
                more = True
                break
            texts.append(text)
        return (f'"services":[{",".join(texts)}]{flags},"counter":{self.store.counter},'
                f'"count":{len(view.records)},"more":{"true" if more else "false"}')

    def _host_json(self) -> str:
        """The reply's ``host``: the fixed part, the lease, and why the last one ended."""
        if not self.leases:
            return self._host_json_head + "}"
        lease, ended = self.lease.status()
        text = self._host_json_head + ("null" if lease is None else protocol.dumps(lease))
        if lease is not None and self.lease.arbiter is not None:
            text += ',"arbiter":' + protocol.dumps(self.lease.arbiter)
        if ended is not None:
            text += ',"lease_end":' + protocol.dumps(ended.to_wire())
        return text + "}"

    def _flags(self, req: protocol.Request) -> tuple[dict[str, MaintEntry], dict[str, PreferEntry]]:
        """The maintenance and prefer entries a reply to ``req`` carries: those of its service
        (and the whole host's) for an op on one service, every readable one otherwise."""
        if self._flag_store is None:
            return {}, {}
        one = req.service if req.op in ("get", "set", "prefer") or (req.op == "maint" and req.service) else None
        rules, community = self.rules, req.community

        def shown(key: str) -> bool:
            if key == protocol.HOST_WIDE:
                return rules.knows(community)
            return (one is None or key == one) and rules.may_read(key, community)

        return ({k: v for k, v in self._flag_store.maintenance.items() if shown(k)},
                {k: v for k, v in self._flag_store.prefer.items() if k != protocol.HOST_WIDE and shown(k)})

    # what a reply may spend on its services and flags: the rest is "host" and the envelope
    BUDGET = protocol.MAX_MESSAGE - 2048

    def _members(self, recs: list[ServiceRecord], req: protocol.Request, services: bool = True,
                 half: bool = False, empty: bool = False) -> str:
        """The JSON text of a reply's ``services`` (unless not ``services``), ``maintenance``
        and ``prefer`` members (the last two only when not empty, unless ``empty``).  If that
        would not fit in a message (in half of one, with ``half``: a page's first part),
        the reasons and ``by`` of records and entries are left out: the states and flags
        always get through (docs/protocol.md, Limits)."""
        maintenance, prefer = self._flags(req)
        text = ""
        for full in (True, False):
            parts = []
            if services:
                parts.append('"services":' + protocol.dumps(
                    [r.to_wire() if full else attrs.evolve(r, reason="", by="").to_wire() for r in recs]))
            if maintenance or empty:
                parts.append('"maintenance":' + protocol.dumps(
                    {k: (v if full else MaintEntry(v.since)).to_wire() for k, v in sorted(maintenance.items())}))
            if prefer or empty:
                parts.append('"prefer":' + protocol.dumps(
                    {k: (v if full else PreferEntry(v.host, v.since)).to_wire() for k, v in sorted(prefer.items())}))
            text = ",".join(parts)
            if len(text) <= (self.BUDGET // 2 if half else self.BUDGET):
                break
        return text

    def _dispatch(self, req: protocol.Request, by: str = "") -> dict | bytes:
        """Every op but get and list (see _read); ``by``: who asks (see changed_by)."""
        rules = self.rules
        host = dict(self._host_wire)
        if self.leases:
            host["lease"], ended = self.lease.status()
            if host["lease"] is not None and self.lease.arbiter is not None:
                host["arbiter"] = self.lease.arbiter
            if ended is not None:
                host["lease_end"] = ended.to_wire()
        if req.op == "ping":
            return protocol.ok_reply(req.id, host=host)
        if req.op in protocol.WRITE_OPS and not rules.may_write(req.service, req.community):
            raise Denied(f"community has no write access to {req.service or 'this host'}")
        if req.op == "history":
            if not rules.knows(req.community) or (req.service and not rules.may_read(req.service, req.community)):
                raise Denied(f"community has no read access to {req.service or 'this host'}")
            return self._history(req, host)
        if req.op == "set":
            service = _given(req.service)
            if self.store.get(service) is None and len(self.store) >= protocol.MAX_SERVICES:
                raise protocol.ProtocolError("LIMIT", f"faild holds {protocol.MAX_SERVICES} services already")
            rec, changed = self.store.set(service, _given(req.state), req.reason, by)
            if changed:
                log.info("%s -> %s (%s)%s", req.service, rec.state, req.reason or "failc/failsh request",
                         f" by {by}" if by else "")
            return self._reply(req, host, [rec], changed=changed)
        if req.op == "maint":
            on = _given(req.on)
            key = req.service or protocol.HOST_WIDE
            changed = self._need_flags(req.op).maint(key, on, req.reason, by)
            if changed:
                log.info("maintenance %s for %s%s%s", "on" if on else "off",
                         req.service or "the whole host", f" by {by}" if by else "",
                         f": {req.reason}" if req.reason else "")
            return self._reply(req, host, None, changed=changed)
        if req.op == "prefer":
            service = _given(req.service)
            changed = self._need_flags(req.op).set_prefer(service, req.host, req.reason, by)
            if changed:
                log.info("switchover target of %s: %s%s%s", service, req.host or "none (the policy's order)",
                         f" by {by}" if by else "", f": {req.reason}" if req.reason else "")
            return self._reply(req, host, None, changed=changed)
        if req.op == "lease":
            if not self.leases:
                raise protocol.ProtocolError("BADOP", f"{self.host.name} holds no failsh lease (it is not a faild)")
            self.lease.renew(req.ttl, req.pid, req.pidstart, req.arbiter)
            host["lease"] = req.ttl or None
            host.pop("lease_end", None)
            host.pop("arbiter", None)
            if self.lease.arbiter is not None:
                host["arbiter"] = self.lease.arbiter
            if self.lease.ended is not None:
                host["lease_end"] = self.lease.ended.to_wire()
            return protocol.ok_reply(req.id, host=host)
        daemon.set_level(_given(req.facility), _given(req.level))  # op "loglevel"
        log.info("log level of %s set to %s", req.facility, req.level)
        return protocol.ok_reply(req.id, host=host)

    def _reply(self, req: protocol.Request, host: dict, recs: list[ServiceRecord] | None, changed: bool) -> bytes:
        """The encoded ok reply of set, maint and prefer: host, the records (set), the
        flags (see _members), changed."""
        members = self._members(recs or [], req, services=recs is not None)
        return protocol.encode_ok(req.id, f'"host":{protocol.dumps(host)},'
                                  + (members + "," if members else "") + f'"changed":{protocol.dumps(changed)}')

    def _history(self, req: protocol.Request, host: dict) -> dict:
        """The newest ``limit`` readable transitions, oldest first, cut to fit in one message."""
        items: list[dict] = []
        size, budget = 0, protocol.MAX_MESSAGE - 1024
        truncated = False
        for t in reversed(self.store.history):
            if len(items) == req.limit:
                break
            if req.service not in (None, t.service) or not self.rules.may_read(t.service, req.community):
                continue
            wire = t.to_wire()
            size += len(protocol.encode(wire)) + 1
            if size > budget:
                truncated = True
                break
            items.append(wire)
        items.reverse()
        return protocol.ok_reply(req.id, host=host, history=items, truncated=truncated)

    def reload(self) -> None:
        self._reload_allowed()
        if self.community_file is None:
            return
        try:
            self.rules = community.load(self.community_file)
            self._services_json.clear()
            log.info("reloaded community file %s", self.community_file)
        except community.CommunityFileError as exc:
            log.error("%s; keeping the previous rules", exc)

    def _reload_allowed(self) -> None:
        """SIGHUP with CURVE: re-read the allow-list directory (new connections only)."""
        if self.curve is None or self._allow is None:
            return
        try:
            allowed = keys.load_allowed(self.curve.allow_dir)
        except keys.KeyFileError as exc:
            log.error("%s; keeping the previous allow-list", exc)
            return
        self._allow.allowed = frozenset(allowed)
        keys.log.info("reloaded allow-list %s: %d keys", self.curve.allow_dir, len(allowed))

    # Serve loop --------------------------------------------------------
    SIGNAL_LATENCY = 0.2  # seconds: how long a signal may wait for an idle loop to notice it

    def serve(self, endpoint: str, ready: Callable[[], None] | None = None) -> None:
        """Answer requests until SIGTERM/SIGINT; SIGHUP re-reads the community file.

        The loop blocks in recv() with a receive timeout rather than polling the socket and
        a signal wake-up fd: zmq_poll costs 10-20 % of throughput (bench/faild_throughput.py).
        Signal handlers only queue the signal; the loop acts on it after the request in
        hand, or within SIGNAL_LATENCY when idle.
        """
        ctx: zmq.Context = zmq.Context.instance()
        sock = ctx.socket(zmq.REP)
        transport.configure(sock)
        transport.harden(sock)
        sock.rcvtimeo = int(self.SIGNAL_LATENCY * 1000)
        auth = None
        if self.curve is not None and self._allow is not None:
            auth = keys.start_authenticator(ctx, self._allow)  # before bind: see its doc
            transport.curve_server(sock, self.curve.identity)
            keys.log.info("CURVE required: %d client keys allowed (%s)", len(self._allow.allowed),
                          self.curve.allow_dir)
        handshakes = keys.HandshakeLog(sock)
        handshakes.start()
        try:
            transport.bind_with_retry(sock, endpoint)
        except zmq.ZMQError:
            self._close(sock, auth, handshakes)
            raise
        pending: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: pending.append(signum))
        log.info("faild %s serving %s (%d services)", self.host.name, endpoint, len(self.store))
        if ready:
            ready()
        try:
            while not self._stop:
                if not serve_one(sock, self.handle):  # idle (or a message libzmq discarded, tech notes §4.4)
                    REFUSED.flush()
                    REJECTED.flush()
                    if auth is not None and not auth.is_alive():  # fail closed, see start_authenticator
                        raise RuntimeError("the CURVE authenticator thread stopped")
                if pending:
                    self._signals(pending)
        finally:
            self._close(sock, auth, handshakes)
            log.info("faild %s stopped", self.host.name)

    @staticmethod
    def _close(sock: zmq.Socket, auth: ThreadAuthenticator | None, handshakes: keys.HandshakeLog) -> None:
        handshakes.stop()
        sock.close(linger=0)
        if auth is not None:
            auth.stop()

    def _signals(self, pending: list[int]) -> None:
        while pending:
            signum = pending.pop(0)
            if signum == signal.SIGHUP:
                daemon.sd_notify("RELOADING=1")
                self.reload()
                daemon.sd_notify("READY=1")
            else:
                log.info("got %s, shutting down", signal.Signals(signum).name)
                daemon.sd_notify("STOPPING=1")
                self._stop = True


def host_info(name: str | None) -> HostInfo:
    return HostInfo(name=name or socket.gethostname(), started=time.time(), pid=os.getpid())
