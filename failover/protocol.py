"""The one place that defines faild's wire format (see docs/protocol.md).

Every message is a single ZeroMQ frame holding a UTF-8 JSON object with a protocol
version ``v``.  Requests are validated field by field here; whatever enters the
daemon has passed :func:`decode_request`.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeGuard

import attrs

from failover import ports
from failover.states import BadState, State, parse_state

VERSION = 1
MAX_MESSAGE = 64 * 1024  # also set as ZMQ_MAXMSGSIZE on every faild socket
DEFAULT_PORT = ports.FAILD  # the table is failover/ports.py; this name is for failover/shell/
DEFAULT_COMMUNITY = "public"
MAX_SERVICES = 100_000  # per faild: a safety bound (state file, memory); 'list' is read in pages
LEGACY_LIST = 256  # most records an un-paged 'list' reply carries (what a failover 0.6 client accepts)
MAX_PAGE = MAX_MESSAGE // 32  # most records one reply can hold (the smallest record is over 40 bytes)
Wire = dict[str, Any]  # a message, or a member of one, as JSON gives it

# op -> fields it requires (beyond v, id, op)
OPS: dict[str, tuple[str, ...]] = {
    "ping": (),
    "get": ("service",),
    "list": (),
    "set": ("service", "state"),
    "history": (),
    "loglevel": ("facility", "level"),
    "lease": ("ttl",),  # failsh on this host says "I am alive for ttl seconds"
    "maint": ("on",),  # maintenance of a service (or, without one, of the whole host) on or off
    "prefer": ("service",),  # the switchover target of a service; "host" must be there, null clears
}
WRITE_OPS = frozenset({"set", "loglevel", "lease", "maint", "prefer"})
HOST_WIDE = "*"  # the key of the whole host's entry in a reply's "maintenance" (and in the state file)
MAX_AGENT = 32  # characters of a request's "agent": a name, as a service's
# a lease's "arbiter": can this failsh reach its etcd arbiter (docs/arbiter.md, "Etcd entirely down")
ARBITER_REACH = ("ok", "unreachable")

_NAME = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")
_TEXT_LIMIT = 256
_NUMBER = (int, float)


class ProtocolError(ValueError):
    """A message that breaks the wire format; ``code`` is sent back to the client."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


def valid_name(name: object) -> TypeGuard[str]:
    """Service and host names: 1-64 characters of letters, digits and ``_.:@+-``."""
    return isinstance(name, str) and bool(_NAME.match(name))


# What free text from outside (a ``reason``) may not carry into a log line or a terminal:
# line breaks (a forged log line), C0 controls with ESC (terminal escapes), DEL, C1, the
# Unicode line and paragraph separators, the bidi controls (text shown reordered) and
# lone surrogates (which no UTF-8 stream can write).  Line breaks and tabs become a
# space, the rest goes.
_SPACES = "\t\n\v\f\r\x1c\x1d\x1e\x1f\x85\u2028\u2029"
_CLEAN: dict[int, str | None] = {c: None for c in [*range(0x20), *range(0x7f, 0xa0), 0x061c, 0x200e, 0x200f,
                            *range(0x202a, 0x202f), *range(0x2066, 0x206a)]}
_CLEAN.update({ord(c): " " for c in _SPACES})
_CLEAN.update({c: "\ufffd" for c in range(0xd800, 0xe000)})
_DIRTY = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` without control characters (see _CLEAN): safe to log and to print."""
    return text.translate(_CLEAN) if _DIRTY.search(text) else text


@attrs.frozen
class Request:
    op: str
    id: str | int
    community: str = DEFAULT_COMMUNITY
    service: str | None = None
    state: State | None = None
    reason: str = ""
    limit: int = 100
    facility: str | None = None
    level: str | None = None
    ttl: float = 0.0
    pid: int | None = None       # lease: the holder's pid and start time (failover/faild/lease.py)
    pidstart: int | None = None
    on: bool | None = None       # maint: maintenance on (True) or off (False)
    host: str | None = None      # prefer: the switchover target, None to clear
    agent: str = ""              # any op: the sending program ("failctl"), for the "by" faild records
    arbiter: str | None = None   # lease: "ok" or "unreachable" (ARBITER_REACH); None: no arbiter
    after: str | None = None     # list: a paged read, from the first name after this one ("": from the start)
    since: int | None = None     # list: a paged read of the records changed after this counter only

    @property
    def paged(self) -> bool:
        """A ``list`` that reads in pages (docs/protocol.md, "Paged and incremental list")."""
        return self.after is not None or self.since is not None

    def to_wire(self) -> Wire:
        msg: dict[str, Any] = {"v": VERSION, "id": self.id, "op": self.op,
                               "community": self.community}
        for key in ("service", "reason", "facility", "level", "agent"):
            value = getattr(self, key)
            if value:
                msg[key] = value
        if self.state is not None:
            msg["state"] = self.state.value
        if self.op == "history":
            msg["limit"] = self.limit
        if self.op == "lease":
            msg["ttl"] = self.ttl
            if self.pid is not None and self.pidstart is not None:
                msg["pid"], msg["pidstart"] = self.pid, self.pidstart
            if self.arbiter is not None:
                msg["arbiter"] = self.arbiter
        if self.op == "maint":
            msg["on"] = bool(self.on)
        if self.op == "prefer":
            msg["host"] = self.host
        if self.after is not None:
            msg["after"] = self.after
        if self.since is not None:
            msg["since"] = self.since
        return msg


_DECODER = json.JSONDecoder()
_ENCODER = json.JSONEncoder(separators=(",", ":"))  # one instance: json.dumps(..., separators) builds one per call


def dumps(obj: Any) -> str:
    """Compact JSON text, as on the wire."""
    return _ENCODER.encode(obj)


def encode(msg: Wire) -> bytes:
    return _ENCODER.encode(msg).encode()


def encode_ok(request_id: Any, fields: str) -> bytes:
    """``encode(ok_reply(request_id, ...))`` from already encoded members: ``fields`` is the
    JSON text ``"key":value,...`` of the reply's other members."""
    return f'{{"v":{VERSION},"id":{_ENCODER.encode(request_id)},"ok":true,{fields}}}'.encode()


def _loads(frame: bytes) -> Wire:
    if len(frame) > MAX_MESSAGE:
        raise ProtocolError("TOOBIG", f"message of {len(frame)} bytes exceeds {MAX_MESSAGE}")
    try:
        msg = _DECODER.decode(frame.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, an integer of > 4300 digits
        raise ProtocolError("BADJSON", f"not a UTF-8 JSON message: {_short(exc)}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("BADREQUEST", "message must be a JSON object")
    return msg


def _short(value: object, limit: int = 80) -> str:
    """A bounded repr/str for error messages: replies must stay far below MAX_MESSAGE."""
    text = str(value) if isinstance(value, BaseException) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _text(msg: Wire, key: str, default: str = "", limit: int = _TEXT_LIMIT) -> str:
    value = msg.get(key, default)
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError("BADREQUEST", f"field {key!r} must be a string of at most {limit} characters")
    return value


def decode_request(frame: bytes) -> Request:
    """Parse and validate one request frame; raise ProtocolError with a reason."""
    msg = _loads(frame)
    rid: Any = msg.get("id")  # an int or a short string once rid_ok is checked
    rid_ok = type(rid) is int or (isinstance(rid, str) and len(rid) <= 64)
    v = msg.get("v")
    if type(v) is not int or v != VERSION:  # checked first: other versions may use other fields
        raise ProtocolError("VERSION", f"unsupported protocol version {_short(v)}, "
                            f"this faild speaks {VERSION}", rid if rid_ok else None)
    if not rid_ok:
        raise ProtocolError("BADREQUEST", "field 'id' must be an integer or a string of at most 64 characters")
    op = msg.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise ProtocolError("BADOP", f"unknown operation {_short(op)}; known: {', '.join(OPS)}", rid)
    for key in OPS[op]:
        if msg.get(key) in (None, ""):
            raise ProtocolError("BADREQUEST", f"operation {op!r} needs field {key!r}", rid)
    try:
        return _build(msg, op, rid)
    except ProtocolError as exc:
        exc.request_id = rid
        raise


def _build(msg: Wire, op: str, rid: str | int) -> Request:
    service = msg.get("service")
    if service is not None and not valid_name(service):
        raise ProtocolError("BADREQUEST", f"invalid service name {_short(service)}")
    state = None
    if "state" in msg:
        try:
            state = parse_state(_text(msg, "state", limit=16))
        except BadState as exc:
            raise ProtocolError("BADSTATE", str(exc)) from None
    limit = msg.get("limit", 100)
    if type(limit) is not int or not 0 < limit <= 1000:  # type(), not isinstance(): no bool
        raise ProtocolError("BADREQUEST", "field 'limit' must be an integer 1..1000")
    ttl = msg.get("ttl", 0.0)
    if type(ttl) not in _NUMBER or not 0 <= ttl <= 3600:
        raise ProtocolError("BADREQUEST", "field 'ttl' must be a number of seconds 0..3600")
    pid, pidstart = msg.get("pid"), msg.get("pidstart")
    if pid is not None and (type(pid) is not int or not 0 < pid < 2**31):
        raise ProtocolError("BADREQUEST", "field 'pid' must be a process id 1..2147483647")
    if pidstart is not None and (type(pidstart) is not int or not 0 <= pidstart < 2**63):
        raise ProtocolError("BADREQUEST", "field 'pidstart' must be an integer 0..2**63-1")
    on = msg.get("on")
    if on is not None and not isinstance(on, bool):
        raise ProtocolError("BADREQUEST", "field 'on' must be true or false")
    if op == "prefer" and "host" not in msg:  # a misspelt member must not clear a switchover
        raise ProtocolError("BADREQUEST", "operation 'prefer' needs field 'host' (a node name, or null to clear)")
    host = msg.get("host")
    if host is not None and not valid_name(host):
        raise ProtocolError("BADREQUEST", f"invalid host name {_short(host)}")
    after, since = msg.get("after"), msg.get("since")
    if after is not None and after != "" and not valid_name(after):
        raise ProtocolError("BADREQUEST", f"field 'after' must be \"\" or a service name, not {_short(after)}")
    if since is not None and (type(since) is not int or not 0 <= since < 2**63):
        raise ProtocolError("BADREQUEST", "field 'since' must be a counter 0..2**63-1")
    agent = msg.get("agent", "")
    if agent != "" and not (valid_name(agent) and len(agent) <= MAX_AGENT):
        raise ProtocolError("BADREQUEST", f"field 'agent' must be a name of at most {MAX_AGENT} characters "
                            "of A-Za-z0-9_.:@+-")
    arbiter = msg.get("arbiter")
    if arbiter is not None and (op != "lease" or arbiter not in ARBITER_REACH):
        raise ProtocolError("BADREQUEST", f"field 'arbiter' belongs to a lease and must be one of "
                            f"{', '.join(ARBITER_REACH)}, not {_short(arbiter)}")
    return Request(op=op, id=rid, ttl=float(ttl), pid=pid, pidstart=pidstart, on=on, host=host, agent=agent,
                   after=after, since=since, arbiter=arbiter,
                   community=_text(msg, "community", DEFAULT_COMMUNITY, 128),
                   service=service, state=state, reason=clean_text(_text(msg, "reason")), limit=limit,
                   facility=_text(msg, "facility", "", 32) or None,
                   level=_text(msg, "level", "", 16) or None)


def ok_reply(request_id: Any, **fields: Any) -> Wire:
    return {"v": VERSION, "id": request_id, "ok": True, **fields}


def error_reply(request_id: Any, code: str, message: str) -> Wire:
    return {"v": VERSION, "id": request_id, "ok": False, "error": code, "message": message}


def decode_reply(frame: bytes) -> Wire:
    """Parse a reply; raise ProtocolError if it is not a well-formed version-1 reply."""
    msg = _loads(frame)
    v = msg.get("v")
    if type(v) is not int or v != VERSION:
        raise ProtocolError("VERSION", f"reply has protocol version {_short(v)}, expected {VERSION}")
    if not isinstance(msg.get("ok"), bool):
        raise ProtocolError("BADREPLY", "reply lacks a boolean 'ok'")
    if msg["ok"] is False and not isinstance(msg.get("message"), str):
        raise ProtocolError("BADREPLY", "error reply lacks a 'message'")
    return msg
