"""failmon: the real-time monitor of one or several running failsh (failover 0.5 §8).

It subscribes to each target's monitor feed (failsh ``-m``, default port 1848;
docs/feed.md) and shows the snapshots failsh publishes after every change and
every second: in curses (the default), as text (``-1`` once, ``-l`` on every Return),
or as an HTML page (``-h``, and when called as ``failmon.cgi``).
"""

from __future__ import annotations

import html
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import zmq

from failover import client, daemon, ports, transport
from failover.cli import common
from failover.observe import feed
from failover.timefmt import age, local_time

log = logging.getLogger("failover.monitor")
GONE_AFTER = 3.5  # seconds without a snapshot: that failsh is gone (it publishes every second)

EPILOG = """modes (one of):
  -c   curses screen (the default on a terminal); keys:
         h            list of hosts
         c            hosts list: toggle "last connect" / "last call" (shows the hosts list)
         l, left      services on the selected host
         s, right     details of the selected service
         tab          switch between the hosts and the service list/detail
         up, down     select;  q  quit
  -l   text: the state on stdout at start and each time Return is pressed (--every N: every N s)
  -h   HTML page on stdout; called as failmon.cgi it does this with a CGI header
  -1   wait for one snapshot from every target, print it as text, exit

examples:
  failmon www1 www2            curses view of two failsh
  failmon -1 -p 18511 127.0.0.1
  failmon -h www1 > /var/www/failover.html

failmon.cgi takes its targets from its arguments or $FAILMON_TARGETS (space separated),
the port from $FAILMON_PORT; the page reloads every 10 s.  exit 3 also means that a
target sent no snapshot within --timeout (is failsh running with -m PORT?)."""


# The feed -----------------------------------------------------------------------------
class Feed:
    """One SUB socket per target; keeps each target's newest snapshot."""

    def __init__(self, targets: list[str], port: int, context: zmq.Context | None = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.targets = targets
        self.sockets: dict[str, zmq.Socket] = {}
        self.endpoints: dict[str, str] = {}
        self.snaps: dict[str, dict] = {}
        self.received: dict[str, float] = {}  # target -> monotonic time of its last snapshot
        self.received_at: dict[str, float] = {}  # target -> wall-clock time of its last snapshot
        self.bad: dict[str, str] = {}  # target -> why its last rejected message was rejected
        self.poller = zmq.Poller()
        for target in targets:
            endpoint = client.endpoint_for(target, port)  # UnknownHost: exit 4
            sock = self.ctx.socket(zmq.SUB)
            transport.configure(sock, max_message=feed.MAX_SNAPSHOT)  # a hostile feed: connection dropped
            sock.setsockopt(zmq.CONFLATE, 1)  # only the newest snapshot matters
            sock.setsockopt(zmq.SUBSCRIBE, feed.SNAPSHOT_TOPIC)  # not the peers' change hints
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:  # 'tcp://', an unknown transport
                sock.close(linger=0)
                self.close()
                raise client.UnknownHost(f"cannot use address {endpoint!r}: {exc.strerror}") from None
            self.sockets[target] = sock
            self.endpoints[target] = endpoint
            self.poller.register(sock, zmq.POLLIN)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close(linger=0)

    def poll(self, timeout: float, extra_fd: int | None = None) -> tuple[bool, bool]:
        """Wait up to ``timeout`` s; take what arrived.  Returns (new snapshot, extra_fd readable)."""
        if extra_fd is not None:
            self.poller.register(extra_fd, zmq.POLLIN)
        try:
            events = dict(self.poller.poll(int(max(0, timeout) * 1000)))
        finally:
            if extra_fd is not None:
                self.poller.unregister(extra_fd)
        new = False
        for target, sock in self.sockets.items():
            if sock not in events:
                continue
            while True:
                try:
                    frame = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    snap = feed.decode(frame)
                except feed.BadSnapshot as exc:
                    # shown by every mode (the error line, the curses status lines); the log
                    # only with -d monitor, else a feed of bad snapshots floods stderr
                    self.bad[target] = f"bad snapshot from {target}: {exc}"
                    log.debug("%s", self.bad[target])
                    continue
                log.debug("%s: snapshot %s from %s", target, snap.get("seq"), snap.get("node"))
                self.snaps[target] = snap
                self.received[target] = time.monotonic()
                self.received_at[target] = time.time()
                new = True
        return new, extra_fd is not None and extra_fd in events

    def wait_all(self, timeout: float) -> list[str]:
        """Wait until every target sent a snapshot; return the targets that did not."""
        deadline = time.monotonic() + timeout
        while (missing := [t for t in self.targets if t not in self.snaps]) and time.monotonic() < deadline:
            self.poll(min(0.2, deadline - time.monotonic()))
        return missing

    def ordered(self) -> list[dict]:
        return [self.snaps[t] for t in self.targets if t in self.snaps]

    def gone(self) -> dict[str, float]:
        """node -> wall-clock time of its last snapshot, for every failsh that sent none for
        GONE_AFTER seconds (killed, hung, its host gone): what failmon shows of it is old."""
        now = time.monotonic()
        return {self.snaps[t]["node"]: self.received_at[t] for t in self.targets
                if t in self.snaps and now - self.received[t] > GONE_AFTER}

    def problems(self) -> list[str]:
        """One line per target whose feed sent a malformed snapshot (the newest reason)."""
        return [self.bad[t] for t in self.targets if t in self.bad]

    def missing_error(self, target: str, timeout: float) -> str:
        if target in self.bad:
            return f"{self.bad[target]}; no good snapshot within {timeout:g} s"
        return (f"no snapshot from {target} ({self.endpoints[target]}) within {timeout:g} s: "
                f"is failsh running there with its monitor port (-m) on that port?")


# Rows shared by every mode ----------------------------------------------------------------
def _when(ts: float | None, now: float | None = None) -> str:
    return f"{local_time(ts)} ({age(ts, now)})" if ts else "never"


def _ago(ts: float | None, now: float | None = None) -> str:
    return f"{age(ts, now)} ago" if ts else "never"


def _failsh(host: dict) -> str:
    """Whether a failsh holds the host's lease; unknown while its faild does not answer."""
    if host.get("status") not in ("up", "local"):
        return "?"
    return "yes" if host.get("failsh") else "no"


def flags(svc: dict) -> str:
    """A service's maintenance and switchover target, one word: "paused", "paused(host)",
    "switchover:www2", or "-"."""
    out = []
    p = svc.get("paused")
    if p:
        out.append("paused" if p.get("scope") == "service" else f"paused({p.get('scope')})")
    if svc.get("prefer"):
        out.append(f"switchover:{svc['prefer']}")
    return ",".join(out) or "-"


def gone_lines(gone: dict[str, float], now: float | None = None) -> list[str]:
    """One line per failsh whose snapshots stopped."""
    now = now or time.time()
    return [f"failsh {node} gone since {time.strftime('%H:%M:%S', time.localtime(since))} "
            f"(no snapshot for {age(since, now)}): its rows are its last snapshot"
            for node, since in sorted(gone.items())]


def peers_seen(svc: dict) -> str:
    return " ".join(f"{h}={p['state']}({p['status']})" for h, p in sorted(svc.get("peers", {}).items())) or "-"


def service_rows(snaps: Iterable[dict]) -> list[dict]:
    """One row per service per failsh: host, service, state, role, last change/check, peers seen."""
    rows = []
    for snap in snaps:
        for s in snap["services"]:
            rows.append({"host": snap["node"], "service": s["name"], "state": s["state"], "role": s["role"],
                         "last_change": s.get("last_change"), "last_check": s.get("last_check"),
                         "peers": peers_seen(s), "decision": s.get("decision", ""), "now": snap["time"],
                         "flags": flags(s)})
    return rows


def host_rows(snaps: Iterable[dict]) -> list[dict]:
    """Each failsh itself, then the hosts it polls (as it sees them)."""
    rows = []
    for snap in snaps:
        host_paused = any((s.get("paused") or {}).get("scope") == "host" for s in snap["services"])
        rows.append({"name": snap["node"], "via": snap["node"], "status": "local", "failsh": True,
                     "last_seen": snap["time"], "last_call": snap["time"], "rtt": None, "endpoint": "",
                     "local": True, "paused": host_paused})
        for h in snap["hosts"]:
            rows.append({**h, "via": snap["node"], "local": False})
    return rows


def history_rows(snaps: Iterable[dict], limit: int = 20) -> list[dict]:
    items = [{**t, "host": snap["node"]} for snap in snaps for t in snap.get("history", [])]
    return sorted(items, key=lambda t: t["time"])[-limit:]


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _host_cell(host: str, gone: dict[str, float]) -> str:
    return f"{host}[gone]" if host in gone else host


def text(snaps: list[dict], errors: Iterable[str] = (), gone: dict[str, float] | None = None) -> str:
    """The -1 / -l dump: services, hosts and recent transitions as aligned columns; the rows
    of a failsh in ``gone`` (Feed.gone) are marked HOST[gone], with a line saying since when."""
    gone = gone or {}
    lines = [f"failmon at {local_time(time.time())}: {len(snaps)} failsh", *gone_lines(gone), ""]
    rows = [("HOST", "SERVICE", "STATE", "ROLE", "FLAGS", "LAST CHANGE", "LAST CHECK", "PEERS SEEN")]
    for r in service_rows(snaps):
        rows.append((_host_cell(r["host"], gone), r["service"], r["state"], r["role"], r["flags"],
                     _when(r["last_change"], r["now"]), _ago(r["last_check"], r["now"]), r["peers"]))
    lines += _table(rows) if len(rows) > 1 else ["(no services)"]
    hrows = [("HOST", "SEEN BY", "FAILD", "FAILSH", "PAUSED", "LAST CONNECT", "LAST CALL", "RTT")]
    for h in host_rows(snaps):
        if h["local"]:
            continue
        hrows.append((h["name"], _host_cell(h["via"], gone), h["status"], _failsh(h),
                      "yes" if h.get("paused") else "-", _ago(h["last_seen"]),
                      _ago(h["last_call"]), f"{h['rtt'] * 1000:.1f} ms" if h.get("rtt") is not None else "-"))
    if len(hrows) > 1:
        lines += [""] + _table(hrows)
    hist = history_rows(snaps)
    if hist:
        lines += ["", "RECENT TRANSITIONS"]
        for t in hist:
            lines.append(f"{local_time(t['time'])}  {t['host']}  {t['service']}  {t['old'] or '-'} -> {t['new']}"
                         f"  {t['reason']}")
    for e in errors:
        lines += ["", f"error: {e}"]
    return "\n".join(lines) + "\n"


HTML_STYLE = """body{font:14px sans-serif;margin:1em 2em;color:#1d2330}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
th{font-size:12px;color:#555}.UP{background:#2e9e44;color:#fff}.RECOVER{background:#f0a500}
.FAIL{background:#d93025;color:#fff}.up{color:#2e9e44}.down{color:#d93025}.error{color:#d93025;font-weight:bold}
tr.gone td{color:#888;background:#eee}p.gone{color:#555;background:#eee;padding:4px 10px}"""


GONE_CLASS = ' class="gone"'


def html_page(snaps: list[dict], errors: Iterable[str] = (), refresh: int = 0,
              gone: dict[str, float] | None = None) -> str:
    """A complete HTML page of the state (-h, failmon.cgi); the rows of a failsh in ``gone``
    greyed, with a line saying since when."""
    e = html.escape
    gone = gone or {}
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh > 0 else ""
    out = ["<!DOCTYPE html>", f'<html><head><meta charset="utf-8">{meta}<title>failmon</title>',
           f"<style>{HTML_STYLE}</style></head><body>",
           f"<h1>failover: {e(', '.join(s['node'] for s in snaps) or 'no failsh')}</h1>",
           f"<p>state at {e(local_time(time.time()))}</p>"]
    for msg in errors:
        out.append(f'<p class="error">{e(msg)}</p>')
    for line in gone_lines(gone):
        out.append(f'<p class="gone">{e(line)}</p>')
    out.append("<h2>Services</h2><table><tr><th>host</th><th>service</th><th>state</th><th>role</th><th>flags</th>"
               "<th>last change</th><th>last check</th><th>peers seen</th><th>decision</th></tr>")
    for r in service_rows(snaps):
        old = r["host"] in gone
        out.append(f"<tr{GONE_CLASS if old else ''}><td>{e(_host_cell(r['host'], gone))}</td>"
                   f"<td>{e(r['service'])}</td>"
                   f'<td class="{"" if old else e(r["state"])}">{e(r["state"])}</td><td>{e(r["role"])}</td>'
                   f"<td>{e(r['flags'])}</td>"
                   f"<td>{e(_when(r['last_change'], r['now']))}</td><td>{e(_ago(r['last_check'], r['now']))}</td>"
                   f"<td>{e(r['peers'])}</td><td>{e(r['decision'])}</td></tr>")
    out.append("</table><h2>Hosts</h2><table><tr><th>host</th><th>seen by</th><th>faild</th><th>failsh</th>"
               "<th>paused</th><th>last connect</th><th>last call</th><th>rtt</th></tr>")
    for h in host_rows(snaps):
        if h["local"]:
            continue
        old = h["via"] in gone
        rtt = f"{h['rtt'] * 1000:.1f} ms" if h.get("rtt") is not None else "-"
        out.append(f"<tr{GONE_CLASS if old else ''}><td>{e(h['name'])}</td>"
                   f"<td>{e(_host_cell(h['via'], gone))}</td>"
                   f'<td class="{"" if old else e(h["status"])}">{e(h["status"])}</td><td>{_failsh(h)}</td>'
                   f"<td>{'yes' if h.get('paused') else '-'}</td>"
                   f"<td>{e(_ago(h['last_seen']))}</td><td>{e(_ago(h['last_call']))}</td><td>{e(rtt)}</td></tr>")
    out.append("</table>")
    hist = history_rows(snaps)
    if hist:
        out.append("<h2>Recent transitions</h2><table><tr><th>time</th><th>host</th><th>service</th>"
                   "<th>change</th><th>reason</th></tr>")
        for t in reversed(hist):
            out.append(f"<tr><td>{e(local_time(t['time']))}</td><td>{e(t['host'])}</td><td>{e(t['service'])}</td>"
                       f"<td>{e(t['old'] or '-')} &rarr; {e(t['new'])}</td><td>{e(t['reason'])}</td></tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# Curses -------------------------------------------------------------------------------------
HOSTS, SERVICES, DETAIL = "hosts", "services", "detail"
HELP = "h hosts  c connect/call  l/\u2190 services  s/\u2192 detail  tab switch  \u2191\u2193 select  q quit"


class View:
    """What the curses screen shows; key handling without curses, so it can be reasoned about."""

    def __init__(self) -> None:
        self.screen = SERVICES
        self.last_service_screen = SERVICES
        self.host_index = 0
        self.service_index = 0
        self.show_call = False  # hosts list: "last call" instead of "last connect"

    def key(self, key: str, n_hosts: int, n_services: int) -> bool:
        """Apply one key; False means quit."""
        if key == "q":
            return False
        if key == "h":
            self.screen = HOSTS
        elif key == "c":
            self.show_call = not self.show_call
            self.screen = HOSTS
        elif key in ("l", "KEY_LEFT"):
            if self.screen == HOSTS:
                self.service_index = 0
            self.screen = self.last_service_screen = SERVICES
        elif key in ("s", "KEY_RIGHT"):
            self.screen = self.last_service_screen = DETAIL
        elif key == "\t":
            self.screen = self.last_service_screen if self.screen == HOSTS else HOSTS
        elif key in ("KEY_UP", "k", "KEY_DOWN", "j"):
            step = -1 if key in ("KEY_UP", "k") else 1
            if self.screen == HOSTS:
                self.host_index = max(0, min(n_hosts - 1, self.host_index + step))
            else:
                self.service_index = max(0, min(n_services - 1, self.service_index + step))
        return True


def services_of(host: dict, snaps: list[dict]) -> list[dict]:
    """Service rows of one host of the hosts list: its own failsh's, or as its observer sees it."""
    own = [s for s in snaps if s["node"] == host["name"]]
    if own:
        return service_rows(own)
    rows = []
    for snap in snaps:
        if snap["node"] != host["via"]:
            continue
        for s in snap["services"]:
            p = s["peers"].get(host["name"])
            if p:
                rows.append({"host": host["name"], "service": s["name"], "state": p["state"], "role": p["role"],
                             "last_change": None, "last_check": s.get("last_check"),
                             "peers": f"seen by {snap['node']} ({p['status']})", "decision": "", "now": snap["time"],
                             "flags": "-", "via": snap["node"]})
    return rows


def detail_lines(row: dict, snaps: list[dict]) -> list[tuple[str, str]]:
    """(text, state-for-colour) lines of the service detail screen."""
    lines = [(f"service {row['service']} on {row['host']}", ""), ("", ""),
             (f"state        {row['state']}", row["state"]), (f"role         {row['role']}", "")]
    snap = next((s for s in snaps if s["node"] == row["host"]), None)
    svc = next((s for s in snap["services"] if s["name"] == row["service"]), None) if snap else None
    if snap is None or svc is None:
        return lines + [(f"peers seen   {row['peers']}", ""), ("", ""),
                        ("(this host runs no failsh that failmon watches: only what its peers see)", "")]
    lines += [(f"interval     {svc['interval']:g} s", ""),
              (f"masters      {' '.join(svc['masters']) or '-'}", ""),
              (f"slaves       {' '.join(svc['slaves']) or '-'}", ""),
              (f"last change  {_when(svc.get('last_change'), snap['time'])}", ""),
              (f"last check   {_when(svc.get('last_check'), snap['time'])}", ""),
              (f"decision     {svc.get('decision') or '-'}", "")]
    p = svc.get("paused")
    if p:
        lines.append((f"maintenance  paused ({p['scope']}) since {_when(p['since'], snap['time'])}"
                      + (f" by {p['by']}" if p["by"] else "") + (f": {p['reason']}" if p["reason"] else ""), ""))
    else:
        lines.append(("maintenance  -", ""))
    lines += [(f"switchover   {svc.get('prefer') or '-'}", ""), ("", ""), ("peers:", "")]
    for h, p in sorted(svc["peers"].items()):
        lines.append((f"  {h:<16} {p['role']:<7} {p['state']:<8} faild {p['status']}", p["state"]))
    hist = [t for t in snap.get("history", []) if t["service"] == row["service"]][-10:]
    if hist:
        lines += [("", ""), ("recent transitions:", "")]
        for t in reversed(hist):
            lines.append((f"  {local_time(t['time'])} {t['old'] or '-'} -> {t['new']}: {t['reason']}", t["new"]))
    return lines


def run_curses(feed: Feed, timeout: float) -> int:
    import curses

    def body(stdscr: curses.window) -> int:
        curses.curs_set(0)
        stdscr.keypad(True)
        stdscr.timeout(0)
        colours: dict[str, int] = {}
        if curses.has_colors():
            curses.start_color()
            curses.use_default_colors()
            for i, (state, fg) in enumerate((("UP", curses.COLOR_GREEN), ("RECOVER", curses.COLOR_YELLOW),
                                             ("FAIL", curses.COLOR_RED), ("down", curses.COLOR_RED),
                                             ("up", curses.COLOR_GREEN)), 1):
                curses.init_pair(i, fg, -1)
                colours[state] = curses.color_pair(i) | curses.A_BOLD
        view = View()
        dirty = True
        while True:
            new, _ = feed.poll(0.2)
            dirty |= new
            keys = []
            while (ch := stdscr.getch()) != -1:
                keys.append(ch)
            snaps = feed.ordered()
            hosts = host_rows(snaps)
            view.host_index = min(view.host_index, max(0, len(hosts) - 1))
            services = services_of(hosts[view.host_index], snaps) if hosts else []
            for ch in keys:
                name = curses.keyname(ch).decode() if ch >= 0 else ""
                key = "\t" if ch == 9 else (chr(ch) if 32 <= ch < 127 else name)
                if not view.key(key, len(hosts), len(services)):
                    return common.EXIT_OK
                services = services_of(hosts[view.host_index], snaps) if hosts else []
                dirty = True
            if dirty:
                view.service_index = min(view.service_index, max(0, len(services) - 1))
                draw(stdscr, feed, view, hosts, services, snaps, colours)
                dirty = False
            elif any(time.monotonic() - t > 1 for t in feed.received.values()):
                dirty = True  # keep the ages moving while a target is silent

    return curses.wrapper(body)


def draw(stdscr, feed: Feed, view: View, hosts: list[dict], services: list[dict], snaps: list[dict],
         colours: dict[str, int]) -> None:
    import curses
    height, width = stdscr.getmaxyx()
    stdscr.erase()

    def put(y: int, x: int, s: str, attr: int = 0) -> None:
        if 0 <= y < height and x < width:
            try:
                stdscr.addnstr(y, x, s, width - x - (1 if y == height - 1 else 0), attr)
            except curses.error:
                pass

    now = time.monotonic()
    status = []
    for t in feed.targets:
        got = feed.received.get(t)
        state = ("waiting" if got is None else "live" if now - got <= GONE_AFTER
                 else f"gone since {time.strftime('%H:%M:%S', time.localtime(feed.received_at[t]))}")
        status.append(f"{t}: {state}")
    title = {HOSTS: "hosts", SERVICES: "services", DETAIL: "service detail"}[view.screen]
    put(0, 0, f" failmon  {local_time(time.time())}  [{title}]  {'  '.join(status)}".ljust(width), curses.A_REVERSE)
    gone = feed.gone()
    old = curses.A_DIM  # the rows of a failsh that is gone: its last snapshot, greyed
    y = 1
    for line in gone_lines(gone):
        put(y, 0, line, curses.A_BOLD)
        y += 1
    y += 1
    if view.screen == HOSTS:
        when = "LAST CALL" if view.show_call else "LAST CONNECT"
        put(y, 0, f"  {'HOST':<16} {'SEEN BY':<12} {'FAILD':<7} {'FAILSH':<7} {'PAUSED':<7} {when:<14} RTT",
            curses.A_BOLD)
        for i, h in enumerate(hosts):
            y += 1
            ts = h["last_call"] if view.show_call else h["last_seen"]
            rtt = f"{h['rtt'] * 1000:.1f} ms" if h.get("rtt") is not None else "-"
            dim = old if h["via"] in gone else 0
            attr = (curses.A_REVERSE if i == view.host_index else 0) | dim
            put(y, 0, f"{'>' if i == view.host_index else ' '} {h['name']:<16} {h['via']:<12} ", attr)
            put(y, 32, f"{h['status']:<7}", dim or colours.get(h["status"], 0))
            put(y, 40, f"{_failsh(h):<7} {'yes' if h.get('paused') else '-':<7} {_ago(ts):<14} {rtt}", dim)
    elif view.screen == SERVICES:
        host = hosts[view.host_index]["name"] if hosts else "-"
        put(y, 0, f"services on {host}", curses.A_BOLD)
        y += 1
        put(y, 0, f"  {'HOST':<10} {'SERVICE':<14} {'STATE':<8} {'ROLE':<7} {'FLAGS':<14} {'LAST CHANGE':<14} "
                  f"{'LAST CHECK':<11} PEERS SEEN", curses.A_BOLD)
        for i, r in enumerate(services):
            y += 1
            dim = old if r.get("via", r["host"]) in gone else 0
            attr = (curses.A_REVERSE if i == view.service_index else 0) | dim
            put(y, 0, f"{'>' if i == view.service_index else ' '} {r['host']:<10} {r['service']:<14} ", attr)
            put(y, 28, f"{r['state']:<8}", dim or colours.get(r["state"], 0))
            put(y, 37, f"{r['role']:<7} {r['flags']:<14} {_ago(r['last_change'], r['now']):<14} "
                       f"{_ago(r['last_check'], r['now']):<11} {r['peers']}", dim)
        if not services:
            put(y + 1, 2, "(no services)" if snaps else "waiting for failsh...")
    else:
        if services:
            row = services[min(view.service_index, len(services) - 1)]
            dim = old if row.get("via", row["host"]) in gone else 0
            for text_line, state in detail_lines(row, snaps):
                put(y, 0, text_line, dim or colours.get(state, 0))
                y += 1
        else:
            put(y, 0, "no service selected")
    for i, problem in enumerate(reversed(feed.problems()[-3:])):
        put(height - 2 - i, 0, problem, colours.get("FAIL", 0))
    put(height - 1, 0, HELP.ljust(width), curses.A_REVERSE)
    stdscr.refresh()


# Text loop (-l) --------------------------------------------------------------------------------
def run_lines(feed: Feed, write: Callable[[str], None], every: float | None, count: int | None) -> int:
    """Print the state now and on every Return (or every ``every`` s); EOF or ``count`` dumps end it."""
    stdin = None if every else sys.stdin.fileno()
    done = returns = 0
    while True:
        write(text(feed.ordered(), feed.problems(), feed.gone()))
        done += 1
        if count is not None and done >= count:
            return common.EXIT_OK
        if returns:  # several Returns typed at once: one dump each
            returns -= 1
            continue
        deadline = time.monotonic() + every if every else None
        while True:
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if deadline is not None and wait <= 0:
                break
            _new, typed = feed.poll(wait, stdin)
            if typed and stdin is not None:
                chunk = os.read(stdin, 4096)
                if not chunk:
                    return common.EXIT_OK
                returns = chunk.count(b"\n")
                if returns:
                    returns -= 1
                    break


# main ---------------------------------------------------------------------------------------------
SECONDS = common.bounded("seconds", float, 0, 3600, "(0, 3600]", low_open=True)


def build_parser():
    p = common.parser("failmon", "Watch one or several running failsh: services, hosts and transitions.", EPILOG)
    p.add_argument("-d", "--debug", action="append", default=[], metavar="FACILITY",
                   help="debug output for FACILITY on stderr (e.g. monitor)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-c", dest="mode", action="store_const", const="curses", help="curses screen (default)")
    mode.add_argument("-l", dest="mode", action="store_const", const="lines", help="text on every Return")
    mode.add_argument("-h", dest="mode", action="store_const", const="html", help="HTML page on stdout")
    mode.add_argument("-1", dest="mode", action="store_const", const="once", help="one snapshot as text, then exit")
    p.add_argument("-p", "--port", type=common.port_number, default=ports.FAILSH_FEED,
                   help="failsh monitor port when a target has none (default: %(default)s)")
    p.add_argument("-t", "--timeout", type=SECONDS, default=5.0,
                   help="seconds to wait for the first snapshot of each target (default: %(default)s)")
    p.add_argument("--every", type=SECONDS, metavar="SECONDS", help="-l: print every SECONDS instead of on Return")
    p.add_argument("--count", type=common.bounded("count", int, 1, 10**9, "1..1000000000"), metavar="N",
                   help="-l: stop after N dumps")
    p.add_argument("--refresh", type=common.bounded("refresh", int, 0, 86400, "0..86400 seconds"), default=None,
                   metavar="SECONDS", help="-h: let the page reload itself (failmon.cgi: 10)")
    p.add_argument("targets", nargs="*", metavar="TARGET[:PORT]",
                   help="hosts running failsh (default: this host's name)")
    return p


def main(argv: list[str] | None = None) -> int:
    cgi = Path(sys.argv[0]).name.endswith("failmon.cgi")
    args = build_parser().parse_args(argv)
    if cgi:
        args.mode = "html"
        args.targets = args.targets or os.environ.get("FAILMON_TARGETS", "").split()
        if re.fullmatch(r"[0-9]{1,5}", os.environ.get("FAILMON_PORT", "")):
            args.port = int(os.environ["FAILMON_PORT"])
        if args.refresh is None:
            args.refresh = 10
    mode = args.mode or "curses"
    if args.debug:
        daemon.setup_logging("failmon", to_syslog=False)
        if not common.debug_levels("failmon", args.debug):
            return common.EXIT_USAGE
    if mode == "curses" and not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("failmon: the curses screen needs a terminal; use -1, -l or -h", file=sys.stderr)
        return common.EXIT_USAGE
    targets = args.targets or [os.environ.get("FAILMON_TARGET") or _default_target()]
    try:
        feed = Feed(targets, args.port)
    except client.ClientError as exc:
        return _fail(cgi, str(exc), common.exit_code(exc))
    try:
        return _run(feed, mode, args, cgi)
    except KeyboardInterrupt:
        return 130
    finally:
        feed.close()


def _run(feed: Feed, mode: str, args, cgi: bool) -> int:
    if mode == "curses":
        missing = feed.wait_all(args.timeout)
        if len(missing) == len(feed.targets):
            return _fail(False, feed.missing_error(missing[0], args.timeout), common.EXIT_UNREACHABLE)
        return run_curses(feed, args.timeout)
    missing = feed.wait_all(args.timeout)
    errors = [feed.missing_error(t, args.timeout) for t in missing]
    errors += [feed.bad[t] for t in feed.targets if t in feed.bad and t not in missing]
    status = common.EXIT_UNREACHABLE if missing else common.EXIT_OK
    if len(missing) == len(feed.targets):
        return _fail(cgi, "; ".join(errors), status)
    for e in errors:
        print(f"failmon: {e}", file=sys.stderr)
    if mode == "once":
        sys.stdout.write(text(feed.ordered(), errors, feed.gone()))
    elif mode == "html":
        if cgi:
            sys.stdout.write("Content-Type: text/html; charset=utf-8\r\n\r\n")
        sys.stdout.write(html_page(feed.ordered(), errors, args.refresh or 0, feed.gone()))
        return common.EXIT_OK if cgi else status
    else:
        def write(s: str) -> None:
            sys.stdout.write(s + "\n")
            sys.stdout.flush()
        return run_lines(feed, write, args.every, args.count) or status
    return status


def _fail(cgi: bool, message: str, status: int) -> int:
    if cgi:  # a CGI must answer the browser: 503 with the reason
        sys.stdout.write("Status: 503 Service Unavailable\r\nContent-Type: text/html; charset=utf-8\r\n\r\n")
        sys.stdout.write(html_page([], [message]))
        return common.EXIT_OK
    print(f"failmon: {message}", file=sys.stderr)
    return status


def _default_target() -> str:
    """0.5: the address the local node name resolves to."""
    import socket
    return socket.gethostname()


if __name__ == "__main__":
    sys.exit(main())
