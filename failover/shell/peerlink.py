"""One polled host as failsh's network thread holds it: the connection to its faild,
the subscription to its change hints, the requests in flight and what its replies say
(its PeerView).  Only the network thread (peers.py) touches these sockets."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import attrs
import zmq

from failover import daemon, keys, model, protocol, transport
from failover.listing import ListReader
from failover.observe import feed, metrics
from failover.shell.view import DOWN, UP, PeerView
from failover.states import State

log = logging.getLogger("failover.peers")
BAD_REPLIES = daemon.RateLimit(log, "bad replies", burst=1, period=10.0)


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


class PeerLink:
    def __init__(self, spec: PeerSpec, ctx: zmq.Context, poller: zmq.Poller, now: float) -> None:
        self.spec = spec
        self.sock = _connect(ctx, spec)
        poller.register(self.sock, zmq.POLLIN)
        self.hints = _subscribe(ctx, spec)  # SUB to the peer's change hints, if it has a feed
        if self.hints is not None:
            poller.register(self.hints, zmq.POLLIN)
        self.polled = 0.0                  # monotonic time of the last poll sent
        self.view = PeerView(spec.name, spec.endpoint)
        self.lister = ListReader()  # its list, read in pages, then only what changed (listing.py)
        self.born = now
        self.next_due = now
        self.sent: dict[str, float] = {}   # outstanding request id -> monotonic send time
        self.last_ok: float | None = None
        self.rearmed = now                 # last rearm of a silent peer
        # liveness besides the polls (heartbeats.py): the latest sign of life a heartbeat
        # gave (monotonic), and the send time of the poll answered last (a change a
        # heartbeat announced is known once a poll sent after it is answered)
        self.heard = 0.0
        self.answered = 0.0
        self._lease_appeared = False       # news(): since the last call
        self._restarted = False

    def close(self, poller: zmq.Poller) -> None:
        for sock in (self.sock, self.hints):
            if sock is not None:
                poller.unregister(sock)
                sock.close(linger=0)

    def send(self, rid: int, op: str, **fields: Any) -> bool:
        """Send a request; False if there is no connection to send it on."""
        if op == "list":
            fields = {**fields, **self.lister.ask(str(rid))}
        req = protocol.Request(op=op, id=rid, community=self.spec.community, **fields)
        try:
            self.sock.send_multipart([b"", protocol.encode(req.to_wire())], zmq.NOBLOCK)
        except zmq.Again:
            return False  # no connection: the deadline in expire() notices a silent peer
        now = time.monotonic()
        self.sent[str(rid)] = now
        if len(self.sent) > 8:  # forget the oldest unanswered polls
            self.sent.pop(next(iter(self.sent)))
        if op == "list":
            self.polled = now
            self.view = attrs.evolve(self.view, last_call=time.time())
        return True

    def drain(self) -> bool:
        """Take every reply waiting; True if one changed what the Tcl thread acts on."""
        changed = False
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return changed
            changed |= self._reply(frames[-1])

    def news(self) -> tuple[bool, bool]:
        """Since the last call: did a lease appear in this faild, did its process change?"""
        news = self._lease_appeared, self._restarted
        self._lease_appeared = self._restarted = False
        return news

    def _reply(self, frame: bytes) -> bool:
        """Take one reply; a malformed one, or one from a faild that is not the host we
        meant to poll, counts as no reply (the peer goes FAIL after its dead time)."""
        name = self.spec.name
        try:
            reply = protocol.decode_reply(frame)
            sent = self.sent.pop(str(reply.get("id")), None)
            if sent is None:
                return False
            parsed = _parse_list(reply)
        except protocol.ProtocolError as exc:
            BAD_REPLIES.log(logging.WARNING, name, "bad reply from %s: %s", name, exc)
            return False
        host = parsed.host if parsed is not None else None
        if host is not None and host.name != name:
            BAD_REPLIES.log(logging.ERROR, name, "%s at %s answers as %r, not %r: counted as not "
                            "answering (check its faild -N and failsh's failhost/-P address)",
                            name, self.spec.endpoint, host.name, name)
            return False
        try:  # a page of the list: the view takes the records and flags once a read is complete
            listed = isinstance(parsed, model.Page) and self.lister.answer(str(reply.get("id")), parsed)
        except protocol.ProtocolError as exc:
            BAD_REPLIES.log(logging.WARNING, name, "bad reply from %s: %s", name, exc)
            return False
        if self.lister.pending:  # the next page, or a full read after a restart: ask now
            self.next_due = min(self.next_due, time.monotonic())
        now = time.monotonic()
        self.last_ok = now
        self.answered = max(self.answered, sent)
        metrics.observe_query(name, now - sent)
        if isinstance(parsed, model.Page) and not listed and not self.view.listed:
            return False  # a page of the first read: the host is heard once all its records are
        old = self.view
        if not reply["ok"]:  # e.g. DENIED: a community problem; failsh waits, it does not guess
            error = f"{reply.get('error')}: {reply['message']}"
            if error != old.error:
                log.warning("%s refused our poll: %s", name, error)
            self.view = attrs.evolve(old, status=UP, error=error, last_seen=time.time())
            return old.status != UP or old.error != error
        assert parsed is not None
        fields: dict = {"status": UP, "last_seen": time.time(), "rtt": now - sent, "error": "",
                        "lease": host.lease if host else None, "started": host.started if host else None,
                        "lease_end": host.lease_end if host else None, "arbiter": host.arbiter if host else None}
        self._lease_appeared |= old.lease is None and fields["lease"] is not None
        fields["leased"] = old.leased or fields["lease"] is not None
        if old.started is not None and fields["started"] != old.started:
            fields["restarted"] = now  # a new faild process: its failsh needs a moment to renew
            fields["leased"] = fields["lease"] is not None
            self._restarted = True
        if listed:  # a list read (not our lease's reply): the states and the flags
            fields["services"] = self.lister.records
            fields["maintenance"], fields["prefer"] = self.lister.maintenance, self.lister.prefer
            fields["listed"] = True
        self.view = attrs.evolve(old, **fields)
        new = self.view
        return (old.status != UP or (old.lease is None) != (new.lease is None) or old.arbiter != new.arbiter
                or (old.services is not new.services and _states(old) != _states(new))
                or old.started != new.started
                or old.maintenance != new.maintenance or old.prefer != new.prefer)

    def expire(self, now: float) -> bool:
        """True if the peer has just been silent for its dead time (it counts FAIL now):
        no poll answer and no heartbeat (heartbeats.py) for that long."""
        since = max(self.last_ok if self.last_ok is not None else self.born, self.heard)
        expired = self.view.status != DOWN and now - since > self.spec.deadtime
        if expired:
            log.warning("%s did not answer for %.2f s%s: counting it as FAIL", self.spec.name, now - since,
                        " (nor sent a heartbeat)" if self.heard else "")
            self.view = attrs.evolve(self.view, status=DOWN, error="no reply")
        if self.view.status == DOWN and now - self.rearmed > self.spec.deadtime:
            self.rearmed = now
            try:  # connect again: our CURVE key may have been refused
                transport.reconnect(self.sock, self.spec.endpoint)
            except zmq.ZMQError:
                pass  # an unusable address: the peer stays silent, so FAIL
        return expired

    def hinted(self) -> bool:
        """Read what the peer's feed sent; True if one was a change hint from that peer."""
        assert self.hints is not None
        hinted = False
        for frame in waiting(self.hints):
            try:
                hinted |= feed.decode_change(frame) == self.spec.name
            except ValueError as exc:
                log.debug("%s: ignored on its feed: %s", self.spec.name, exc)
        return hinted


def _connect(ctx: zmq.Context, spec: PeerSpec) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    transport.configure(sock, spec.deadtime)
    sock.setsockopt(zmq.IMMEDIATE, 1)  # don't queue polls for a peer that is down
    if spec.curve is not None:
        transport.curve_client(sock, spec.curve.identity, spec.curve.server)
    try:
        sock.connect(spec.endpoint)
    except zmq.ZMQError as exc:  # unusable address: the host stays silent, so FAIL
        log.error("%s: cannot use address %s: %s", spec.name, spec.endpoint, exc.strerror)
    return sock


def _subscribe(ctx: zmq.Context, spec: PeerSpec) -> zmq.Socket | None:
    """A SUB to the host's change hints: they only make us poll its faild sooner, so
    the feed needs no authentication (docs/security.md)."""
    if not spec.hint:
        return None
    sock = ctx.socket(zmq.SUB)
    transport.configure(sock, spec.deadtime)
    sock.rcvhwm = 16
    sock.setsockopt(zmq.SUBSCRIBE, feed.CHANGE_TOPIC)
    try:
        sock.connect(spec.hint)
    except zmq.ZMQError as exc:
        log.warning("%s: no change hints from %s: %s", spec.name, spec.hint, exc.strerror)
        sock.close(linger=0)
        return None
    return sock


def _parse_list(reply: dict) -> model.Page | model.Reply | None:
    """An ok reply's host, and for a list its page (model.Page: records, flags, paging
    members); None for a refusal.  ProtocolError (BADREPLY) if any field is malformed: a
    peer's bug must not stop the network thread."""
    if not reply["ok"]:
        return None
    return model.page_from_wire(reply) if "services" in reply else model.reply_from_wire(reply)


def waiting(sock: zmq.Socket, limit: int = 64) -> Iterator[bytes]:
    """The frames ``sock`` holds now, at most ``limit`` (a flood waits for the next loop)."""
    for _ in range(limit):
        try:
            yield sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return


def _states(view: PeerView) -> dict[str, State]:
    return {n: r.state for n, r in view.services.items()}
