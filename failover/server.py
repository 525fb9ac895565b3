"""faild's serve loop: answers requests from the store, checks communities, never acts."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path

import zmq

from failover import community, daemon, protocol
from failover.client import configure_socket
from failover.model import HostInfo
from failover.store import Store

log = logging.getLogger("failover.server")
plog = logging.getLogger("failover.protocol")


class Faild:
    def __init__(self, store: Store, rules: community.Rules, host: HostInfo,
                 community_file: Path | None = None) -> None:
        self.store = store
        self.rules = rules
        self.host = host
        self.community_file = community_file
        self._host_wire = host.to_wire()
        self._lease_until = 0.0  # monotonic; failsh on this host renews it
        self._stop = False

    # Request handling (pure: frame in, frame out) ----------------------
    def handle(self, frame: bytes) -> bytes:
        try:
            req = protocol.decode_request(frame)
        except protocol.ProtocolError as exc:
            plog.info("rejected request: %s", exc)
            return protocol.encode(protocol.error_reply(exc.request_id, exc.code, str(exc)))
        try:
            reply = self._dispatch(req)
        except PermissionError as exc:
            log.warning("refused %s on %s for community %r: %s", req.op, req.service or "*",
                        req.community, exc)
            reply = protocol.error_reply(req.id, "DENIED", str(exc))
        except LookupError as exc:
            reply = protocol.error_reply(req.id, "NOSERVICE", str(exc.args[0]))
        except ValueError as exc:
            reply = protocol.error_reply(req.id, "BADREQUEST", str(exc))
        return protocol.encode(reply)

    def _dispatch(self, req: protocol.Request) -> dict:
        rules = self.rules
        left = self._lease_until - time.monotonic()
        host = {**self._host_wire, "lease": round(left, 3) if left > 0 else None}
        if req.op == "ping":
            return protocol.ok_reply(req.id, host=host)
        if req.op in protocol.WRITE_OPS and not rules.may_write(req.service, req.community):
            raise PermissionError(f"community has no write access to {req.service or 'this host'}")
        if req.op == "get":
            if not rules.may_read(req.service, req.community):
                raise PermissionError(f"community has no read access to {req.service}")
            rec = self.store.get(req.service)
            if rec is None:
                raise LookupError(f"unknown service {req.service!r} on {self.host.name}")
            return protocol.ok_reply(req.id, host=host, services=[rec.to_wire()])
        if req.op == "list":
            recs = [r.to_wire() for r in self.store.all() if rules.may_read(r.name, req.community)]
            if not recs and not rules.may_read(None, req.community):
                raise PermissionError("community has no read access on this host")
            return protocol.ok_reply(req.id, host=host, services=recs)
        if req.op == "history":
            items = [t.to_wire() for t in self.store.history
                     if (req.service in (None, t.service)) and rules.may_read(t.service, req.community)]
            return protocol.ok_reply(req.id, host=host, history=items[-req.limit:])
        if req.op == "set":
            rec, changed = self.store.set(req.service, req.state, req.reason)
            if changed:
                log.info("%s -> %s (%s)", req.service, rec.state, req.reason or "failc/failsh request")
            return protocol.ok_reply(req.id, host=host, services=[rec.to_wire()], changed=changed)
        if req.op == "lease":
            self._lease_until = time.monotonic() + req.ttl
            host["lease"] = req.ttl or None
            return protocol.ok_reply(req.id, host=host)
        daemon.set_level(req.facility, req.level)  # op "loglevel"
        log.info("log level of %s set to %s", req.facility, req.level)
        return protocol.ok_reply(req.id, host=host)

    def reload(self) -> None:
        if self.community_file is None:
            return
        try:
            self.rules = community.load(self.community_file)
            log.info("reloaded community file %s", self.community_file)
        except community.CommunityFileError as exc:
            log.error("%s; keeping the previous rules", exc)

    # Serve loop --------------------------------------------------------
    def serve(self, endpoint: str, ready: callable | None = None) -> None:
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.REP)
        configure_socket(sock)
        bind_with_retry(sock, endpoint)
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        pending: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: pending.append(signum))
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(wake_r, zmq.POLLIN)
        log.info("faild %s serving %s (%d services)", self.host.name, endpoint, len(self.store.records))
        if ready:
            ready()
        try:
            while not self._stop:
                events = dict(poller.poll())
                if sock in events:
                    self._drain(sock)
                if wake_r.fileno() in events or pending:
                    self._signals(wake_r, pending)
        finally:
            signal.set_wakeup_fd(-1)
            sock.close(linger=0)
            log.info("faild %s stopped", self.host.name)

    def _drain(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            sock.send(self.handle(frame))

    def _signals(self, wake_r: socket.socket, pending: list[int]) -> None:
        try:
            wake_r.recv(512)
        except BlockingIOError:
            pass
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


def bind_with_retry(sock: zmq.Socket, endpoint: str, attempts: int = 20) -> None:
    """Bind, retrying briefly: a just-closed endpoint can still be in use (tech notes §4.3)."""
    for attempt in range(attempts):
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or attempt == attempts - 1:
                raise
            time.sleep(0.1)


def host_info(name: str | None) -> HostInfo:
    return HostInfo(name=name or socket.gethostname(), started=time.time(), pid=os.getpid())
