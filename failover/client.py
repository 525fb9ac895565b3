"""Synchronous request/reply client for faild with timeouts and bounded retries.

One persistent REQ socket with REQ_RELAXED + REQ_CORRELATE: a request that got no
reply within the timeout is sent again on the same socket, and a late reply to an
earlier try is dropped by libzmq.  A dead peer therefore costs at most
``timeout * (retries + 1)`` and never leaves the socket stuck (tech notes §4.3).
"""

from __future__ import annotations

import builtins
import itertools
import os
import socket
import time
from typing import Any

import zmq

from failover import ports, protocol, transport
from failover.listing import Asked, ListReader
from failover.model import HostInfo, Page, Reply, ServiceRecord, Transition, page_from_wire, reply_from_wire
from failover.states import State, parse_state
from failover.transport import Curve

# failsh's peers.py imports these two from here; they live in failover.transport
configure_socket = transport.configure
reconnect = transport.reconnect


class ClientError(Exception):
    """Base of everything a faild client reports to its user."""


class UnknownHost(ClientError):
    pass


class Unreachable(ClientError):
    pass


class RequestFailed(ClientError):
    """faild answered with an error reply; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TooOld(RequestFailed):
    """faild answered BADOP to an op added after it was written (maint, prefer)."""


def endpoint_for(host: str, port: int = ports.FAILD, resolve: bool = True) -> str:
    """Turn ``host``, ``host:port``, ``[v6]:port`` or a ZeroMQ endpoint into an endpoint."""
    if "://" in host:
        return host
    name, sep, rest = host.rpartition(":")
    if sep and rest.isascii() and rest.isdigit() and (not name.count(":") or name.startswith("[")):
        host, port = name, int(rest)
    bare = host.strip("[]")
    if not 0 < port < 65536:
        raise UnknownHost(f"invalid port {port} for host {bare!r}")
    if resolve:
        try:
            socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UnknownHost(f"unknown host {bare!r}: {exc}") from None
    if ":" in bare:
        return f"tcp://[{bare}]:{port}"
    return f"tcp://{bare}:{port}"


class Client:
    """Talks to one faild.  Not thread-safe: use one per thread."""

    _ids = itertools.count(1)

    def __init__(self, endpoint: str, community: str = protocol.DEFAULT_COMMUNITY,
                 timeout: float = 1.0, retries: int = 2, context: zmq.Context | None = None,
                 curve: Curve | None = None, deadtime: float | None = None, agent: str = "") -> None:
        """``curve``: authenticate and encrypt with CURVE (a faild started with --curve-secret
        answers nothing else); a faild that refuses the key looks unreachable.  ``deadtime``:
        ZMTP heartbeats for a client that stays connected (see :func:`transport.configure`).
        ``agent``: the program's name, sent with every request; faild records "AGENT from
        ADDRESS" as who made a change (at most 32 of A-Za-z0-9_.:@+-, else ValueError)."""
        if agent and not (protocol.valid_name(agent) and len(agent) <= protocol.MAX_AGENT):
            raise ValueError(f"invalid agent name {agent!r}: 1-{protocol.MAX_AGENT} of A-Za-z0-9_.:@+-")
        self.agent = agent
        self.endpoint = endpoint
        self.community = community
        self.timeout = timeout
        self.retries = retries
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.REQ)
        transport.configure(self._sock, deadtime)
        self._sock.setsockopt(zmq.REQ_RELAXED, 1)
        self._sock.setsockopt(zmq.REQ_CORRELATE, 1)
        self._sock.sndtimeo = max(1, int(timeout * 1000))  # a send can block: see call()
        if curve is not None:
            transport.curve_client(self._sock, curve.identity, curve.server)
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            raise UnknownHost(f"cannot use address {endpoint!r}: {exc.strerror}") from None
        self._prefix = f"{os.getpid()}-{id(self):x}-"

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, op: str, **fields: Any) -> dict:
        """Send one request and return the ok reply, whose ``host``, ``services``,
        ``history``, ``changed`` and ``truncated`` (where present) are valid (see
        :meth:`ask`); raise a ClientError otherwise."""
        return self._exchange(op, fields)[0]

    def ask(self, op: str, **fields: Any) -> Reply:
        """:meth:`call`, with the reply's members as model objects.  A reply with a bad
        member is RequestFailed (BADREPLY) naming the member, like a malformed reply."""
        return self._exchange(op, fields)[1]

    def _exchange(self, op: str, fields: dict[str, Any]) -> tuple[dict, Reply]:
        reply = self._call(op, fields)
        try:
            return reply, reply_from_wire(reply)
        except protocol.ProtocolError as exc:
            raise RequestFailed(exc.code, f"bad reply from {self.endpoint}: {exc}") from None

    def _call(self, op: str, fields: dict[str, Any]) -> dict:
        rid = f"{self._prefix}{next(self._ids)}"
        request = protocol.Request(op=op, id=rid, community=self.community, agent=self.agent, **fields)
        frame = protocol.encode(request.to_wire())
        for _attempt in range(self.retries + 1):
            deadline = time.monotonic() + self.timeout
            try:
                self._sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:  # no connection left to queue on (handshake refused): see rearm()
                self.rearm()
                try:
                    self._sock.send(frame)  # bounded by sndtimeo
                except zmq.Again:
                    continue
            reply = self._await(rid, deadline)
            if reply is not None:
                if not reply["ok"]:
                    raise RequestFailed(_printable(reply.get("error"), 32), _printable(reply["message"], 500))
                return reply
        raise Unreachable(f"no reply from {self.endpoint} after {self.retries + 1} "
                          f"tries of {self.timeout:g} s")

    def rearm(self) -> None:
        """Connect again (see :func:`transport.reconnect`)."""
        transport.reconnect(self._sock, self.endpoint)

    def _await(self, rid: str, deadline: float) -> dict | None:
        while (left := deadline - time.monotonic()) > 0:
            if not self._sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                continue
            try:
                frame = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                continue
            try:
                reply = protocol.decode_reply(frame)
            except protocol.ProtocolError as exc:
                raise RequestFailed(exc.code, f"bad reply from {self.endpoint}: {exc}") from None
            if reply.get("id") in (rid, None):
                return reply
        return None

    # Typed helpers ---------------------------------------------------------------
    def _need(self, value: Any, member: str) -> Any:
        if value is None:
            raise RequestFailed("BADREPLY", f"bad reply from {self.endpoint}: reply.{member}: missing")
        return value

    def ping(self) -> HostInfo:
        return self._need(self.ask("ping").host, "host")

    def get(self, service: str) -> ServiceRecord:
        services = self._need(self.ask("get", service=service).services, "services")
        if len(services) != 1 or services[0].name != service:
            raise RequestFailed("BADREPLY", f"bad reply from {self.endpoint}: reply.services: "
                                f"not the one record of {service!r}")
        return services[0]

    def list(self) -> tuple[HostInfo, list[ServiceRecord]]:
        """Every record the community may read, by name (:meth:`list_all`)."""
        reader = self.list_all()
        assert reader.host is not None
        return reader.host, reader.sorted()

    def list_all(self) -> ListReader:
        """Everything the faild holds for the community (records, maintenance, prefer),
        read in as many pages as it takes (docs/protocol.md, "Paged and incremental list")."""
        return self.refresh(ListReader())

    def refresh(self, reader: ListReader) -> ListReader:
        """Bring ``reader`` up to date: a full read the first time, then only what changed
        since the last read (a full read again after a restart of the faild)."""
        resyncs = reader.resyncs
        for _ in range(protocol.MAX_SERVICES + 10):  # each page makes progress (ListReader.take)
            if reader.resyncs > resyncs + 3:
                raise RequestFailed("BADREPLY", f"bad reply from {self.endpoint}: its list changed under "
                                    "every read (restarted again and again?)")
            asked = reader.request()
            if reader.take(asked, self.page(asked)):
                return reader
        raise RequestFailed("BADREPLY", f"bad reply from {self.endpoint}: a list without end")

    def changes(self, since: int) -> Page:
        """The records changed after counter ``since`` (every page of one incremental read),
        and maintenance and prefer if they changed (else None).  The result's ``counter``
        is the ``since`` of the next call.  A restart of the faild is not looked for here
        (compare ``host.started``, or use :meth:`refresh`).  From a faild older than paging:
        the whole list, with ``counter`` None."""
        first = page = self.page({"since": since})
        services = list(page.services)
        while page.more:
            if not page.services:
                raise RequestFailed("BADREPLY", f"bad reply from {self.endpoint}: reply.services: "
                                    "empty, yet 'more' is true")
            after = services[-1].name
            page = self.page({"since": since, "after": after})
            if page.services and not page.services[0].name > after:
                raise RequestFailed("BADREPLY", f"bad reply from {self.endpoint}: reply.services: "
                                    f"{page.services[0].name!r} is not after {after!r}")
            if page.host.started != first.host.started:
                raise RequestFailed("BADREPLY", f"bad reply from {self.endpoint}: it restarted during the read")
            services += page.services
            if len(services) > protocol.MAX_SERVICES:
                raise RequestFailed("BADREPLY", f"bad reply from {self.endpoint}: more than "
                                    f"{protocol.MAX_SERVICES} services")
        return Page(first.host, services, first.counter, page.count, False, first.maintenance, first.prefer)

    def page(self, asked: Asked) -> Page:
        """One ``list`` request with the members ``asked`` (``after``, ``since``), its reply checked."""
        reply = self._call("list", dict(asked))
        try:
            return page_from_wire(reply)
        except protocol.ProtocolError as exc:
            raise RequestFailed(exc.code, f"bad reply from {self.endpoint}: {exc}") from None

    def set(self, service: str, state: State | str, reason: str = "") -> ServiceRecord:
        services = self._need(self.ask("set", service=service, state=parse_state(state), reason=reason).services,
                              "services")
        if len(services) != 1 or services[0].name != service:
            raise RequestFailed("BADREPLY", f"bad reply from {self.endpoint}: reply.services: "
                                f"not the one record of {service!r}")
        return services[0]

    def history(self, service: str | None = None, limit: int = 100) -> builtins.list[Transition]:
        return self._need(self.ask("history", service=service, limit=limit).history, "history")

    def maint(self, on: bool, service: str | None = None, reason: str = "") -> Reply:
        """Maintenance of ``service`` (None: the whole host) on or off.  The reply's
        ``changed`` says whether it changed, ``maintenance`` what is in maintenance now.
        TooOld from a faild that predates the op."""
        return self._new_op("maint", "maintenance", on=on, service=service, reason=reason)

    def prefer(self, service: str, host: str | None, reason: str = "") -> Reply:
        """The switchover target of ``service`` (None: back to the policy's order); the
        reply's ``changed`` and ``prefer``.  TooOld from a faild that predates the op."""
        return self._new_op("prefer", "switchover", service=service, host=host, reason=reason)

    def _new_op(self, op: str, what: str, **fields: Any) -> Reply:
        try:
            reply = self.ask(op, **fields)
        except RequestFailed as exc:
            if exc.code == "BADOP":
                raise TooOld("BADOP", f"faild on {_where(self.endpoint)} is too old for {what} "
                             f"(it does not know the op {op!r})") from None
            raise
        self._need(reply.changed, "changed")
        return reply


def _where(endpoint: str) -> str:
    """HOST:PORT of a tcp:// endpoint (the endpoint itself otherwise), for messages."""
    return endpoint.split("://", 1)[1] if endpoint.startswith("tcp://") else endpoint


def _printable(value: object, limit: int) -> str:
    """Text from a reply made safe for a terminal or a log line, and bounded."""
    text = protocol.clean_text(value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[:limit] + "..."
