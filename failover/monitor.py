"""The monitor feed failsh publishes for failmon (docs/monitor.md), and its text form."""

from __future__ import annotations

import json

from failover.timefmt import age, local_time

FEED_VERSION = 1
MONITOR_PORT = 1848  # 0.5's failmon port

# The feed carries two kinds of message; a subscriber picks one by its prefix (the JSON
# object starts with "v" then "type", as encode() and encode_change() write it):
# snapshots for failmon, and change hints for peer failsh (docs/failsh.md, "hints").
SNAPSHOT_TOPIC = b'{"v":%d,"type":"snapshot"' % FEED_VERSION
CHANGE_TOPIC = b'{"v":%d,"type":"change"' % FEED_VERSION


def encode(snapshot: dict) -> bytes:
    return json.dumps(snapshot, separators=(",", ":")).encode()


def encode_change(node: str) -> bytes:
    """A hint that ``node`` changed a local state: its peers poll its faild now."""
    return encode({"v": FEED_VERSION, "type": "change", "node": node})


def decode_change(frame: bytes) -> str:
    """The node a change hint names; ValueError if the frame is not one."""
    try:
        msg = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a change hint: {exc}") from None
    if not isinstance(msg, dict) or msg.get("v") != FEED_VERSION or msg.get("type") != "change" \
            or not isinstance(msg.get("node"), str):
        raise ValueError("not a version-1 change hint")
    return msg["node"]


def decode(frame: bytes) -> dict:
    """Parse one feed message; raise ValueError if it is not a version-1 snapshot."""
    try:
        snap = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a monitor message: {exc}") from None
    if not isinstance(snap, dict) or snap.get("v") != FEED_VERSION or snap.get("type") != "snapshot":
        raise ValueError("not a version-1 failsh snapshot")
    return snap


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
        for host, p in s["peers"].items():
            lines.append(f"  {'':<16}   {p['role']:<6} {host:<14} {p['state']:<8} ({p['status']})")
    lines += ["", "hosts:"]
    for h in snap["hosts"]:
        rtt = f"{h['rtt'] * 1000:.1f} ms" if h["rtt"] is not None else "-"
        lines.append(f"  {h['name']:<16} {h['status']:<8} last connect {_when(h['last_seen'])}; "
                     f"last call {_when(h['last_call'])}; rtt {rtt}; failsh {'yes' if h['failsh'] else 'no'}")
    if snap.get("history"):
        lines += ["", "recent transitions:"]
        for t in snap["history"][-20:]:
            lines.append(f"  {local_time(t['time'])} {t['service']} {t['old'] or '-'} -> {t['new']}: {t['reason']}")
    return "\n".join(lines) + "\n"


