"""Value classes shared by faild, its clients and failsh, and the one place that turns
what comes from outside (a reply, the state file) into them.

Every ``from_wire`` is strict: a field of the wrong type, a number that is not finite or
out of range, an invalid name or state raise :class:`protocol.ProtocolError` with code
``BADREPLY`` and a message naming the field (``services[2].last_change: ...``).  Unknown
members are ignored (docs/protocol.md, "Clients must ignore reply members they do not
know"); ``reason`` text is stripped of control characters (protocol.clean_text).
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

import attrs

from failover import protocol
from failover.protocol import Wire
from failover.states import BadState, State, parse_state

LATEST_TIME = 4102444800.0  # 2100-01-01: a later "time" is garbage, not clock skew
MAX_COUNTER = 2**63 - 1
MAX_PID = 2**31 - 1
MAX_LEASE = 3600.0  # what protocol accepts as a lease ttl
MAX_REASON = 256    # what protocol accepts as a set request's reason
MAX_HISTORY = 1000  # a history reply holds at most 'limit' (<= 1000) transitions
MAX_BY = 80         # "by": who made a change, as faild builds it ("failctl from 10.0.0.9")
MAX_MAINT = 64      # entries of a "maintenance" object ("*" and services) faild holds at most
MAX_PREFER = 64     # entries of a "prefer" object faild holds at most
LEASE_END_WHY = ("released", "exited", "expired")

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = _repr.maxlong = 40
_repr.maxlist = _repr.maxdict = 4


def _show(value: object) -> str:
    """A short repr for an error message (escapes control characters, cuts long values)."""
    try:
        text = _repr.repr(value)
    except ValueError:  # an int too long for str()
        return f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:60] + "..."


def bad(where: str, what: str) -> protocol.ProtocolError:
    """The BADREPLY error for the field ``where``."""
    return protocol.ProtocolError("BADREPLY", f"{where}: {what}")


def _object(d: object, where: str) -> Wire:
    if not isinstance(d, dict):
        raise bad(where, f"expected an object, not {_show(d)}")
    return d


def _value(d: Wire, key: str, where: str) -> Any:
    if key not in d:
        raise bad(where, f"no {key!r}")
    return d[key]


def wire_name(d: Wire, key: str, where: str) -> str:
    value = _value(d, key, where)
    if not protocol.valid_name(value):
        raise bad(f"{where}.{key}", f"not a name (1-64 of A-Za-z0-9_.:@+-): {_show(value)}")
    return value


def wire_state(d: Wire, key: str, where: str) -> State:
    value = _value(d, key, where)
    if not isinstance(value, str):
        raise bad(f"{where}.{key}", f"not a state: {_show(value)}")
    try:
        return parse_state(value)
    except BadState:
        raise bad(f"{where}.{key}", f"not UP, RECOVER or FAIL: {_show(value)}") from None


def wire_number(d: Wire, key: str, where: str, low: float, high: float) -> float:
    value = _value(d, key, where)
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise bad(f"{where}.{key}", f"not a number in [{low:g}, {high:g}]: {_show(value)}")
    return float(value)


def wire_time(d: Wire, key: str, where: str) -> float:
    """Seconds since 1970, up to the year 2100."""
    return wire_number(d, key, where, 0, LATEST_TIME)


def wire_int(d: Wire, key: str, where: str, low: int = 0, high: int = MAX_COUNTER) -> int:
    value = _value(d, key, where)
    if type(value) is not int or not low <= value <= high:  # type(): no bool
        raise bad(f"{where}.{key}", f"not a whole number in [{low}, {high}]: {_show(value)}")
    return value


def wire_text(d: Wire, key: str, where: str, limit: int = MAX_REASON) -> str:
    """An optional text member (absent: ""), at most ``limit`` characters, returned without
    control characters (protocol.clean_text)."""
    value = d.get(key, "")
    if not isinstance(value, str) or len(value) > limit:
        raise bad(f"{where}.{key}", f"not a string of at most {limit} characters: {_show(value)}")
    return protocol.clean_text(value)


def wire_list(d: Wire, key: str, where: str, limit: int) -> list[Any]:
    value = _value(d, key, where)
    if not isinstance(value, list) or len(value) > limit:
        raise bad(f"{where}.{key}", f"not a list of at most {limit} items: {_show(value)}")
    return value


@attrs.frozen
class ServiceRecord:
    """One service's state on one host, as faild stores and serves it."""

    name: str
    state: State = attrs.field(converter=parse_state)
    last_change: float
    counter: int
    reason: str = ""  # of the last change (optional on the wire: "" is left out)
    by: str = ""      # who made the last change: "failctl from 10.0.0.9" (faild builds it)

    def to_wire(self) -> Wire:
        wire: Wire = {"name": self.name, "state": self.state.value,
                      "last_change": self.last_change, "counter": self.counter}
        if self.reason:
            wire["reason"] = self.reason
        if self.by:
            wire["by"] = self.by
        return wire

    @classmethod
    def from_wire(cls, d: object, where: str = "service") -> ServiceRecord:
        """A record from a reply or the state file; ProtocolError (BADREPLY) naming the field."""
        d = _object(d, where)
        return cls(name=wire_name(d, "name", where), state=wire_state(d, "state", where),
                   last_change=wire_time(d, "last_change", where), counter=wire_int(d, "counter", where),
                   reason=wire_text(d, "reason", where), by=wire_text(d, "by", where, MAX_BY))


@attrs.frozen
class Transition:
    """A state change kept in faild's bounded history."""

    service: str
    old: State | None
    new: State
    time: float
    counter: int
    reason: str = ""
    by: str = ""  # who made it (optional on the wire: "" is left out)

    def to_wire(self) -> Wire:
        wire: Wire = {"service": self.service, "old": self.old.value if self.old else None,
                      "new": self.new.value, "time": self.time, "counter": self.counter,
                      "reason": self.reason}
        if self.by:
            wire["by"] = self.by
        return wire

    @classmethod
    def from_wire(cls, d: object, where: str = "transition") -> Transition:
        """A transition from a reply or the state file; ``reason`` (optional, at most 256
        characters) and ``by`` (optional, at most 80) come without control characters."""
        d = _object(d, where)
        old = d.get("old")
        return cls(service=wire_name(d, "service", where), old=None if old is None else wire_state(d, "old", where),
                   new=wire_state(d, "new", where), time=wire_time(d, "time", where),
                   counter=wire_int(d, "counter", where), reason=wire_text(d, "reason", where),
                   by=wire_text(d, "by", where, MAX_BY))


@attrs.frozen
class LeaseEnd:
    """Why and when failsh's last lease on a faild ended (``host.lease_end``): ``released``
    (failsh gave it up), ``exited`` (its process is gone) or ``expired`` (not renewed)."""

    why: str
    at: float

    def to_wire(self) -> Wire:
        return {"why": self.why, "at": self.at}

    @classmethod
    def from_wire(cls, d: object, where: str = "lease_end") -> LeaseEnd:
        d = _object(d, where)
        why = _value(d, "why", where)
        if why not in LEASE_END_WHY:
            raise bad(f"{where}.why", f"not one of {', '.join(LEASE_END_WHY)}: {_show(why)}")
        return cls(why=why, at=wire_time(d, "at", where))


@attrs.frozen
class MaintEntry:
    """One entry of a faild's ``maintenance``: since when, why, by whom."""

    since: float
    reason: str = ""
    by: str = ""

    def to_wire(self) -> Wire:
        return {"since": self.since, "reason": self.reason, "by": self.by}

    @classmethod
    def from_wire(cls, d: object, where: str = "maintenance") -> MaintEntry:
        d = _object(d, where)
        return cls(since=wire_time(d, "since", where), reason=wire_text(d, "reason", where),
                   by=wire_text(d, "by", where, MAX_BY))


@attrs.frozen
class PreferEntry:
    """One entry of a faild's ``prefer``: the switchover target of a service."""

    host: str
    since: float
    reason: str = ""
    by: str = ""

    def to_wire(self) -> Wire:
        return {"host": self.host, "since": self.since, "reason": self.reason, "by": self.by}

    @classmethod
    def from_wire(cls, d: object, where: str = "prefer") -> PreferEntry:
        d = _object(d, where)
        return cls(host=wire_name(d, "host", where), since=wire_time(d, "since", where),
                   reason=wire_text(d, "reason", where), by=wire_text(d, "by", where, MAX_BY))


def maintenance_from_wire(d: object, where: str = "maintenance") -> dict[str, MaintEntry]:
    """A ``maintenance`` object: ``"*"`` (the whole host) and service names -> MaintEntry."""
    d = _object(d, where)
    if len(d) > MAX_MAINT:
        raise bad(where, f"more than {MAX_MAINT} entries")
    for key in d:
        if key != protocol.HOST_WIDE and not protocol.valid_name(key):
            raise bad(where, f"not '*' or a service name: {_show(key)}")
    return {key: MaintEntry.from_wire(value, f"{where}[{key}]") for key, value in d.items()}


def prefer_from_wire(d: object, where: str = "prefer") -> dict[str, PreferEntry]:
    """A ``prefer`` object: service names -> PreferEntry."""
    d = _object(d, where)
    if len(d) > MAX_PREFER:
        raise bad(where, f"more than {MAX_PREFER} entries")
    for key in d:
        if not protocol.valid_name(key):
            raise bad(where, f"not a service name: {_show(key)}")
    return {key: PreferEntry.from_wire(value, f"{where}[{key}]") for key, value in d.items()}


@attrs.frozen
class HostInfo:
    """Who answered: the node name faild was given, when it started, its pid, and (in
    replies only) the seconds left of its failsh's lease (None: no live failsh) and, once
    a lease ended and no new one exists, why and when it ended (``lease_end``).
    ``leases``: whether the server holds failsh leases at all: faild does; hc's monitor and
    failsh's control port do not, and their replies have no ``lease`` member."""

    name: str
    started: float
    pid: int
    lease: float | None = None
    lease_end: LeaseEnd | None = None
    leases: bool = True
    arbiter: str | None = None  # while the lease lives: its failsh reaches its etcd arbiter ("ok") or not

    def to_wire(self) -> Wire:
        wire: Wire = {"name": self.name, "started": self.started, "pid": self.pid}
        if self.leases:
            wire["lease"] = self.lease
        if self.arbiter is not None:
            wire["arbiter"] = self.arbiter
        if self.lease_end is not None:
            wire["lease_end"] = self.lease_end.to_wire()
        return wire

    @classmethod
    def from_wire(cls, d: object, where: str = "host") -> HostInfo:
        """The ``host`` member of a reply; ProtocolError (BADREPLY) naming the field."""
        d = _object(d, where)
        lease = None if d.get("lease") is None else wire_number(d, "lease", where, 0, MAX_LEASE)
        end = None if d.get("lease_end") is None else LeaseEnd.from_wire(d["lease_end"], f"{where}.lease_end")
        arbiter = d.get("arbiter")
        if arbiter is not None and (arbiter not in protocol.ARBITER_REACH or lease is None):
            raise bad(f"{where}.arbiter", f"not one of {', '.join(protocol.ARBITER_REACH)} with a live lease: "
                      f"{_show(arbiter)}")
        return cls(name=wire_name(d, "name", where), started=wire_time(d, "started", where),
                   pid=wire_int(d, "pid", where, 1, MAX_PID), lease=lease, lease_end=end, leases="lease" in d,
                   arbiter=arbiter)


def records_from_wire(items: object, where: str = "services") -> list[ServiceRecord]:
    """A ``services`` list: at most protocol.MAX_PAGE records (what a message holds), each name once."""
    if not isinstance(items, list) or len(items) > protocol.MAX_PAGE:
        raise bad(where, f"not a list of at most {protocol.MAX_PAGE} records: {_show(items)}")
    records = [ServiceRecord.from_wire(d, f"{where}[{i}]") for i, d in enumerate(items)]
    seen: set[str] = set()
    for i, rec in enumerate(records):
        if rec.name in seen:
            raise bad(f"{where}[{i}].name", f"service {rec.name!r} twice")
        seen.add(rec.name)
    return records


def history_from_wire(items: object, where: str = "history") -> list[Transition]:
    if not isinstance(items, list) or len(items) > MAX_HISTORY:
        raise bad(where, f"not a list of at most {MAX_HISTORY} transitions: {_show(items)}")
    return [Transition.from_wire(d, f"{where}[{i}]") for i, d in enumerate(items)]


@attrs.frozen
class Reply:
    """An ok reply with every member a client reads validated; None for what it lacks."""

    host: HostInfo | None = None
    services: list[ServiceRecord] | None = None
    history: list[Transition] | None = None
    changed: bool | None = None
    truncated: bool = False
    # what is in maintenance on this faild ("*": the whole host) and its switchover targets;
    # empty when the reply has none (an older faild, or nothing set)
    maintenance: dict[str, MaintEntry] = attrs.field(factory=dict)
    prefer: dict[str, PreferEntry] = attrs.field(factory=dict)
    # a page of a paged 'list' (docs/protocol.md, "Paged and incremental list"): faild's change
    # counter, how many records the community may read there, whether more pages follow
    counter: int | None = None
    count: int | None = None
    more: bool | None = None
    flags: bool = False  # the reply has a "maintenance" or a "prefer" member


def reply_from_wire(reply: object) -> Reply:
    """Validate the members of an ok reply (as protocol.decode_reply returns it) that any
    op may carry: ``host``, ``services``, ``history``, ``changed``, ``truncated``,
    ``maintenance``, ``prefer``, ``counter``, ``count``, ``more``; a member that is there is
    checked whether or not the op needs it (``null`` counts as absent).  ProtocolError (BADREPLY)."""
    d = _object(reply, "reply")
    for key in ("changed", "truncated", "more"):
        if d.get(key) is not None and not isinstance(d[key], bool):
            raise bad(f"reply.{key}", f"not true or false: {_show(d[key])}")
    return Reply(host=None if d.get("host") is None else HostInfo.from_wire(d["host"]),
                 services=None if "services" not in d else records_from_wire(d["services"]),
                 history=None if "history" not in d else history_from_wire(d["history"]),
                 changed=d.get("changed"), truncated=bool(d.get("truncated")),
                 maintenance={} if d.get("maintenance") is None else maintenance_from_wire(d["maintenance"]),
                 prefer={} if d.get("prefer") is None else prefer_from_wire(d["prefer"]),
                 counter=None if d.get("counter") is None else wire_int(d, "counter", "reply"),
                 count=None if d.get("count") is None else wire_int(d, "count", "reply", 0, protocol.MAX_SERVICES),
                 more=d.get("more"), flags=d.get("maintenance") is not None or d.get("prefer") is not None)


def list_from_wire(reply: object) -> tuple[HostInfo, list[ServiceRecord]]:
    """A whole ``list`` (or ``get``) reply: ``host`` must be an object and ``services`` a
    list of valid records, each name once; ProtocolError (BADREPLY) naming the bad field
    otherwise.  For failsh's polling of its peers (peers.py) and failstat."""
    d = _object(reply, "reply")
    if not isinstance(d.get("host"), dict):
        raise bad("reply.host", f"not an object: {_show(d.get('host'))}")
    if not isinstance(d.get("services"), list):
        raise bad("reply.services", f"not a list: {_show(d.get('services'))}")
    parsed = reply_from_wire(d)
    assert parsed.host is not None and parsed.services is not None
    return parsed.host, parsed.services


@attrs.frozen
class Page:
    """A reply to a ``list``: one page of a paged read (``counter`` set), or a whole
    un-paged list (``counter`` None: the reply of a faild older than paging)."""

    host: HostInfo
    services: list[ServiceRecord]
    counter: int | None = None
    count: int | None = None
    more: bool = False
    # the host's whole maintenance and prefer; None (paged reply only): not in this page,
    # what the reader has is still right
    maintenance: dict[str, MaintEntry] | None = None
    prefer: dict[str, PreferEntry] | None = None


def page_from_wire(reply: object) -> Page:
    """A reply to a ``list``, paged or not (see :class:`Page`).  Besides what
    :func:`list_from_wire` checks: a paged reply has ``counter``, ``count`` and ``more``
    together, its records in ascending name order, and ``maintenance`` and ``prefer``
    both or neither.  ProtocolError (BADREPLY)."""
    host, _ = list_from_wire(reply)
    parsed = reply_from_wire(reply)
    assert parsed.services is not None
    paged = [parsed.counter is not None, parsed.count is not None, parsed.more is not None]
    if any(paged) and not all(paged):
        raise bad("reply", "a page needs all of 'counter', 'count' and 'more'")
    if parsed.counter is None:  # an un-paged list: absent flags mean none
        return Page(host, parsed.services, maintenance=parsed.maintenance, prefer=parsed.prefer)
    names = [r.name for r in parsed.services]
    for i in range(1, len(names)):
        if not names[i - 1] < names[i]:
            raise bad(f"reply.services[{i}].name", f"{_show(names[i])} not after {_show(names[i - 1])}")
    d = _object(reply, "reply")
    if (d.get("maintenance") is None) != (d.get("prefer") is None):
        raise bad("reply", "a page has both 'maintenance' and 'prefer' or neither")
    return Page(host, parsed.services, parsed.counter, parsed.count, bool(parsed.more),
                parsed.maintenance if parsed.flags else None, parsed.prefer if parsed.flags else None)
