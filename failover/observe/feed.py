"""The monitor feed failsh publishes for failmon (docs/monitor.md), and its text form."""

from __future__ import annotations

import json
from typing import Any

from failover import ports
from failover.model import LATEST_TIME
from failover.protocol import clean_text, valid_name
from failover.timefmt import age, local_time

FEED_VERSION = 1
MONITOR_PORT = ports.FAILSH_FEED  # the table is failover/ports.py; this name is for failover/shell/

# The feed carries two kinds of message; a subscriber picks one by its prefix (the JSON
# object starts with "v" then "type", as encode() and encode_change() write it):
# snapshots for failmon, and change hints for peer failsh (docs/failsh.md, "hints").
SNAPSHOT_TOPIC = b'{"v":%d,"type":"snapshot"' % FEED_VERSION
CHANGE_TOPIC = b'{"v":%d,"type":"change"' % FEED_VERSION
MAX_SNAPSHOT = 16 * 1024 * 1024  # ZMQ_MAXMSGSIZE of failmon's SUB: far above 256 services


class Snapshot(dict):
    """A snapshot that carries its encoding, made along from the rows' cached JSON
    (failover/shell/snapshot.py): the same bytes as json.dumps of the dict.  Not to be
    changed once made."""

    frame: bytes = b""


def encode(snapshot: dict) -> bytes:
    if isinstance(snapshot, Snapshot) and snapshot.frame:
        return snapshot.frame
    return json.dumps(snapshot, separators=(",", ":")).encode()


def encode_change(node: str) -> bytes:
    """A hint that ``node`` changed a local state: its peers poll its faild now."""
    return encode({"v": FEED_VERSION, "type": "change", "node": node})


def decode_change(frame: bytes) -> str:
    """The node a change hint names; ValueError if the frame is not one."""
    try:
        msg = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ValueError(f"not a change hint: {exc}") from None
    if not isinstance(msg, dict) or type(msg.get("v")) is not int or msg["v"] != FEED_VERSION \
            or msg.get("type") != "change":
        raise ValueError("not a version-1 change hint")
    if not valid_name(msg.get("node")):
        raise ValueError("a change hint without a valid node name")
    return msg["node"]


class BadSnapshot(ValueError):
    """A feed message that is not a well-formed version-1 snapshot."""


MAX_TIME = LATEST_TIME  # seconds since the epoch (2100-01-01), as in faild's replies
_LIMIT = 10000   # items in any list of a snapshot
_TEXT = 4096     # characters in any text of a snapshot


def _check(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise BadSnapshot(f"{where}: {what}")


def _text(d: dict, key: str, where: str) -> str:
    """A text member, made safe for a terminal: stored back without control characters."""
    value: Any = d.get(key)
    _check(isinstance(value, str) and len(value) <= _TEXT, f"{where}.{key}",
           f"not a string of at most {_TEXT} characters")
    d[key] = clean_text(value)
    return d[key]


def _number(d: dict, key: str, where: str, optional: bool = False, low: float = 0,
            high: float = MAX_TIME) -> None:
    """A finite number in [low, high]; an optional one may be missing or null (stored as null)."""
    value: Any = d.get(key)
    if value is None and optional:
        d[key] = None
        return
    _check(type(value) in (int, float) and low <= value <= high,  # NaN is in no range
           f"{where}.{key}", f"not a number in [{low:g}, {high:g}]")


def _items(d: dict, key: str, kind: type[list] | type[dict], where: str, optional: bool = False) -> Any:
    """A list or object member (of type ``kind``); an optional one that is missing or null
    is stored empty."""
    value: Any = d.get(key)
    if value is None and optional:
        value = d[key] = kind()
    _check(isinstance(value, kind) and len(value) <= _LIMIT, f"{where}.{key}",
           f"not a {kind.__name__} of at most {_LIMIT} items")
    return value


def _record(item: object, where: str) -> dict:
    if not isinstance(item, dict):
        raise BadSnapshot(f"{where}: not an object")
    return item


def _names(s: dict, key: str, where: str) -> None:
    names = _items(s, key, list, where)
    _check(all(isinstance(h, str) and len(h) <= _TEXT for h in names), f"{where}.{key}", "not a list of names")
    s[key] = [clean_text(h) for h in names]


PAUSE_SCOPES = ("service", "host")


def _paused(s: dict, where: str) -> None:
    """Optional ``paused``: null, or {"scope": "service"|"host", "since", "reason", "by"}
    (the maintenance that covers the service; "reason" and "by" may be missing: "")."""
    p: Any = s.get("paused")
    if p is None:
        s["paused"] = None
        return
    p = _record(p, f"{where}.paused")
    _check(p.get("scope") in PAUSE_SCOPES, f"{where}.paused.scope", "not 'service' or 'host'")
    _number(p, "since", f"{where}.paused")
    for key in ("reason", "by"):
        p.setdefault(key, "")
        _text(p, key, f"{where}.paused")


def _prefer(s: dict, where: str) -> None:
    """Optional ``prefer``: null, or the host name of the service's switchover target."""
    value: Any = s.get("prefer")
    _check(value is None or valid_name(value), f"{where}.prefer", "not a host name or null")
    s["prefer"] = value


def _service(s: dict, where: str) -> None:
    for key in ("name", "state", "role", "decision"):
        _text(s, key, where)
    _paused(s, where)
    _prefer(s, where)
    for key in ("masters", "slaves"):
        _names(s, key, where)
    _number(s, "interval", where, high=1e9)
    _number(s, "last_change", where, optional=True)
    _number(s, "last_check", where, optional=True)
    peers = {}
    for host, p in _items(s, "peers", dict, where).items():
        p = _record(p, f"{where}.peers.{clean_text(host)}")
        for key in ("role", "state", "status"):
            _text(p, key, f"{where}.peers.{clean_text(host)}")
        peers[clean_text(host)] = p
    s["peers"] = peers


def _host(h: dict, where: str) -> None:
    for key in ("name", "endpoint", "status"):
        _text(h, key, where)
    _number(h, "last_seen", where, optional=True)
    _number(h, "last_call", where, optional=True)
    _number(h, "rtt", where, optional=True, high=1e6)
    _check(isinstance(h.get("failsh"), bool), f"{where}.failsh", "not true or false")
    h.setdefault("paused", False)  # optional: the whole host in maintenance
    _check(isinstance(h["paused"], bool), f"{where}.paused", "not true or false")


def _transition(t: dict, where: str) -> None:
    for key in ("service", "new", "reason"):
        _text(t, key, where)
    old = t.get("old")
    _check(old is None or isinstance(old, str) and len(old) <= _TEXT, f"{where}.old", "not a string or null")
    t["old"] = None if old is None else clean_text(old)
    _number(t, "time", where)


def validate(snap: object) -> dict:
    """``snap`` if every field failmon shows has its type and range; BadSnapshot otherwise.
    On the way, text is stripped of control characters (protocol.clean_text) and missing
    optional members are filled in (null, false, or an empty list), so every view can show
    it.  Optional: ``lease``, ``history``, a service's ``last_change``, ``last_check``,
    ``paused`` and ``prefer``, a host's ``last_seen``, ``last_call``, ``rtt``, ``paused``."""
    _check(isinstance(snap, dict) and type(snap.get("v")) is int and snap["v"] == FEED_VERSION
           and snap.get("type") == "snapshot",
           "message", "not a version-1 failsh snapshot")
    assert isinstance(snap, dict)
    _text(snap, "node", "snapshot")
    _number(snap, "time", "snapshot")
    _number(snap, "seq", "snapshot", high=2**63)
    _number(snap, "lease", "snapshot", optional=True, high=3600)
    for kind, check in (("services", _service), ("hosts", _host), ("history", _transition)):
        for i, item in enumerate(_items(snap, kind, list, "snapshot", optional=kind == "history")):
            check(_record(item, f"{kind}[{i}]"), f"{kind}[{i}]")
    return snap


def decode(frame: bytes) -> dict:
    """Parse and validate one feed message; BadSnapshot (a ValueError) if it is not a
    well-formed version-1 snapshot."""
    try:
        snap = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadSnapshot(f"not a monitor message: {exc}") from None
    return validate(snap)


def _when(ts: float | None) -> str:
    return f"{local_time(ts)} ({age(ts)} ago)" if ts else "never"


def text(snap: dict) -> str:
    """Human-readable dump (failsh SIGINT dump, failmon -l/-1)."""
    lines = [f"failsh on {snap['node']} at {local_time(snap['time'])} (snapshot {snap['seq']})", "",
             "services:"]
    for s in snap["services"]:
        lines.append(f"  {s['name']:<16} {s['state']:<8} since {_when(s['last_change'])}; "
                     f"last check {_when(s['last_check'])}")
        lines.append(f"  {'':<16} masters {' '.join(s['masters']) or '-'}; slaves {' '.join(s['slaves']) or '-'}")
        lines.append(f"  {'':<16} {s['decision']}")
        if s.get("paused"):
            p = s["paused"]
            lines.append(f"  {'':<16} paused ({p['scope']}) since {_when(p['since'])}"
                         + (f" by {p['by']}" if p["by"] else "") + (f": {p['reason']}" if p["reason"] else ""))
        if s.get("prefer"):
            lines.append(f"  {'':<16} switchover target {s['prefer']}")
        for host, p in s["peers"].items():
            lines.append(f"  {'':<16}   {p['role']:<6} {host:<14} {p['state']:<8} ({p['status']})")
    lines += ["", "hosts:"]
    for h in snap["hosts"]:
        rtt = f"{h['rtt'] * 1000:.1f} ms" if h["rtt"] is not None else "-"
        lines.append(f"  {h['name']:<16} {h['status']:<8} last connect {_when(h['last_seen'])}; "
                     f"last call {_when(h['last_call'])}; rtt {rtt}; failsh {'yes' if h['failsh'] else 'no'}"
                     + ("; paused" if h.get("paused") else ""))
    if snap.get("history"):
        lines += ["", "recent transitions:"]
        for t in snap["history"][-20:]:
            lines.append(f"  {local_time(t['time'])} {t['service']} {t['old'] or '-'} -> {t['new']}: {t['reason']}")
    return "\n".join(lines) + "\n"


