"""failsh's live web page (``failsh --http ADDR:PORT``, docs/operations.md).

A small stdlib HTTP server in daemon threads.  It serves

* ``/``               the page: inline HTML, CSS and JavaScript, no external files;
* ``/snapshot.json``  the last monitor snapshot (the failmon feed, docs/monitor.md);
* ``/events``         the same snapshots as Server-Sent Events, one per update;
* ``/metrics``        Prometheus metrics (metrics.FAILSH);
* ``/health``         200 while this failsh is deciding (a fresh snapshot and its lease in
                      the local faild), 503 otherwise;
* ``/health/SERVICE`` 200 when this host holds SERVICE (UP) with a live lease, 503
                      otherwise: a load balancer's health check (HAProxy, nginx, F5) then
                      sends clients to the holder only.

The page opens ``/events`` and redraws on every snapshot; if the event stream fails it
falls back to polling ``/snapshot.json`` every second.  With no new snapshot for
``STALE`` seconds (failsh gone or stuck) it greys its tables and says since when.  A service
in maintenance and a switchover target are badges next to the service's name (and words
under the state cells); the hosts table has a maintenance column.  The Tcl thread hands snapshots
over with :meth:`Dashboard.update`; the HTTP threads only read the last one.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from failover.observe import feed, metrics

log = logging.getLogger("failover.monitor")

MAX_STREAMS = 32          # concurrent /events clients; more get 503
KEEPALIVE = 15.0          # seconds between SSE comments when nothing changes
STALE = 3.5               # s without a snapshot: failsh is not deciding (it publishes every second)


class Dashboard:
    def __init__(self, listen: str, node: str) -> None:
        self.host, self.port = metrics.parse_listen(listen)
        self.node = node
        self._snap: dict | None = None
        self._frame = b""
        self._updated = 0.0  # monotonic time of the last snapshot
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._streams = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Tcl thread ---------------------------------------------------------------
    def start(self) -> None:
        """Bind and serve in a daemon thread; OSError if the address cannot be used."""
        handler = type("Handler", (_Handler,), {"dashboard": self})
        server_class = _V6Server if ":" in self.host else ThreadingHTTPServer
        self._httpd = server_class((self.host, self.port), handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="failsh-http", daemon=True)
        self._thread.start()
        log.info("dashboard on http://%s:%d/", self.host, self.port)

    def update(self, snap: dict) -> None:
        """Take a new snapshot: wake every event stream, refresh the metrics gauges."""
        frame = feed.encode(snap)  # the snapshot carries its JSON: not encoded twice
        with self._cond:
            self._snap, self._frame, self._updated = snap, frame, time.monotonic()
            self._cond.notify_all()
        metrics.update(snap)

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # HTTP threads ---------------------------------------------------------------
    def health(self, service: str | None) -> tuple[bool, str]:
        """(healthy, why): failsh deciding (fresh snapshot, a lease) and, with ``service``,
        this host holding it."""
        with self._cond:
            snap, age = self._snap, time.monotonic() - self._updated
        if snap is None:
            return False, "no snapshot yet"
        if age > STALE:
            return False, f"failsh not deciding: last snapshot {age:.1f} s ago"
        if not snap.get("lease"):
            return False, "failsh holds no lease in its local faild"
        if service is None:
            return True, "failsh deciding"
        svc = next((v for v in snap.get("services", []) if v.get("name") == service), None)
        if svc is None:
            return False, f"no service {service!r} here"
        if svc.get("state") != "UP":
            return False, f"{service} is {svc.get('state')} here"
        return True, f"{service} is UP here"

    def frame(self) -> bytes:
        with self._cond:
            return self._frame

    def stream(self, write: Any) -> None:
        """Write every new snapshot as an SSE event until the client or failsh goes."""
        with self._cond:
            if self._streams >= MAX_STREAMS:
                raise OverflowError
            self._streams += 1
        try:
            sent = None
            while not self._stopping.is_set():
                with self._cond:
                    if self._frame is sent:
                        self._cond.wait(KEEPALIVE)
                    frame = self._frame
                if frame is sent or not frame:
                    write(b": keepalive\n\n")
                    continue
                write(b"event: snapshot\ndata: " + frame + b"\n\n")
                sent = frame
        finally:
            with self._cond:
                self._streams -= 1


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "failsh-dashboard"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("http %s: " + format, self.client_address[0], *args)

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            page = PAGE.replace("@NODE@", _html(self.dashboard.node)).replace("@STALE@", str(STALE))
            self._send(200, "text/html; charset=utf-8", page.encode())
        elif path == "/snapshot.json":
            frame = self.dashboard.frame()
            if frame:
                self._send(200, "application/json", frame)
            else:
                self._send(503, "application/json", b'{"error":"no snapshot yet"}')
        elif path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.FAILSH))
        elif path == "/events":
            self._events()
        elif path == "/health" or path.startswith("/health/"):
            ok, why = self.dashboard.health(urllib.parse.unquote(path[8:]) or None)
            self._send(200 if ok else 503, "text/plain; charset=utf-8", (why + "\n").encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _events(self) -> None:
        def write(chunk: bytes) -> None:
            self.wfile.write(chunk)
            self.wfile.flush()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command == "HEAD":
                return
            write(b"retry: 1000\n\n")
            self.dashboard.stream(write)
        except OverflowError:
            write(b"event: busy\ndata: too many event streams\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>failover: @NODE@</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }
header { background: #1d2330; color: #fff; padding: 10px 18px; display: flex; gap: 18px; align-items: baseline; }
header h1 { font-size: 18px; margin: 0; }
#conn { margin-left: auto; font-size: 12px; }
#conn.live::before { content: "\\25CF "; color: #4cd964; }
#conn.lost::before { content: "\\25CF "; color: #ff3b30; }
main { padding: 12px 18px; display: grid; gap: 16px; }
section { background: #fff; border-radius: 6px; padding: 10px 14px; box-shadow: 0 1px 2px rgba(0,0,0,.12); }
h2 { font-size: 15px; margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e3e5e9; vertical-align: top; }
th { font-size: 12px; color: #5a6272; font-weight: 600; }
td.st { font-weight: 700; text-align: center; min-width: 90px; border: 2px solid #fff; }
.UP { background: #2e9e44; color: #fff; }
.RECOVER { background: #f0a500; color: #1d2330; }
.FAIL { background: #d93025; color: #fff; }
.unknown { background: #9ea3ad; color: #fff; }
.t-UP { color: #1f7a32; font-weight: 600; } .t-RECOVER { color: #a06e00; font-weight: 600; }
.t-FAIL { color: #b3261e; font-weight: 600; }
.up { color: #2e9e44; font-weight: 600; } .down { color: #d93025; font-weight: 600; } .dim { color: #8a909c; }
small { display: block; font-weight: 400; font-size: 11px; }
#history td { font-size: 13px; }
body.stale main { filter: grayscale(1); opacity: .55; }
#gone { display: none; background: #d93025; color: #fff; padding: 6px 18px; font-weight: 600; }
body.stale #gone { display: block; }
.badge { display: inline-block; margin-left: 6px; padding: 0 6px; border-radius: 8px; font-size: 11px;
         font-weight: 600; vertical-align: 1px; }
.badge.paused { background: #5b5fc7; color: #fff; } .badge.prefer { background: #1d2330; color: #fff; }
</style></head>
<body>
<header><h1>failover cluster</h1><span>failsh on <b id="node">@NODE@</b></span>
<span id="stamp" class="dim">waiting for the first snapshot</span>
<span id="conn" class="lost">connecting</span></header>
<div id="gone"></div>
<main>
<section><h2>Services</h2><table id="services"><thead></thead><tbody></tbody></table></section>
<section><h2>Hosts</h2><table id="hosts"><thead><tr><th>host</th><th>faild</th><th>failsh</th>
<th>last connect</th><th>last call</th><th>rtt</th><th>endpoint</th><th>maintenance</th></tr></thead>
<tbody></tbody></table></section>
<section><h2>Recent transitions</h2><table id="history"><thead><tr><th>time</th><th>service</th>
<th>change</th><th>reason</th></tr></thead><tbody></tbody></table></section>
</main>
<script>
"use strict";
let updates = 0, lastSeq = -1, pollTimer = null, lastSeen = 0, lastStamp = 0;
const STALE = @STALE@;  // s without a snapshot: failsh gone or stuck, the tables are history
setInterval(() => {
  const stale = lastSeen > 0 && (Date.now() - lastSeen) / 1000 > STALE;
  document.body.classList.toggle("stale", stale);
  document.body.dataset.stale = stale ? "1" : "0";
  if (stale) document.getElementById("gone").textContent =
    "failsh on " + document.getElementById("node").textContent + " has not reported since " + clock(lastStamp) +
    ": these states are not current";
}, 500);
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function row(cells) { const tr = el("tr"); cells.forEach(c => tr.appendChild(c)); return tr; }
function clock(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString([], {hour12: false}) : "never"; }
function ago(ts, now) {
  if (!ts) return "never";
  const s = Math.max(0, Math.round(now - ts));
  return s < 120 ? s + "s ago" : s < 7200 ? Math.floor(s / 60) + "m ago" : Math.floor(s / 3600) + "h ago";
}
function stateCell(state, role, extra) {
  const td = el("td", state || "?", "st " + (state || "unknown"));
  td.dataset.state = state || "unknown";
  td.appendChild(el("small", role + (extra ? " \\u00b7 " + extra : "")));
  return td;
}
function failshCell(h) {  // the lease is only known while the host's faild answers
  if (h.status !== "up") return el("td", "?", "dim");
  return el("td", h.failsh ? "running" : "none", h.failsh ? "up" : "down");
}
function since(p) {
  return (p.reason || "no reason given") + " (by " + (p.by || "?") + " since " + clock(p.since) + ")";
}
function nameCell(v) {  // a paused service and a switchover target show as badges next to the name
  const td = el("td", v.name);
  if (v.paused) {
    const b = el("span", v.paused.scope === "host" ? "paused (host)" : "paused", "badge paused");
    b.title = "maintenance: " + since(v.paused) + ": failsh takes no action for it";
    td.appendChild(b);
  }
  if (v.prefer) {
    const b = el("span", "\\u2192 " + v.prefer, "badge prefer");
    b.title = "switchover to " + v.prefer + ": it heads the order until the switchover is cleared";
    td.appendChild(b);
  }
  return td;
}
function render(s) {
  updates += 1; lastSeq = s.seq; lastSeen = Date.now(); lastStamp = s.time;
  document.body.dataset.updates = updates;
  document.body.dataset.seq = s.seq;
  document.getElementById("node").textContent = s.node;
  document.getElementById("stamp").textContent = "snapshot " + s.seq + " at " + clock(s.time);
  const hosts = [s.node];
  s.services.forEach(v => Object.keys(v.peers).forEach(h => { if (!hosts.includes(h)) hosts.push(h); }));
  s.hosts.forEach(h => { if (!hosts.includes(h.name)) hosts.push(h.name); });
  const head = document.querySelector("#services thead"), body = document.querySelector("#services tbody");
  head.replaceChildren(row([el("th", "service")].concat(hosts.map(h => el("th", h + (h === s.node ? " (here)" : ""))))
    .concat([el("th", "last change"), el("th", "last check"), el("th", "decision")])));
  const paused = new Set(s.hosts.filter(h => h.paused).map(h => h.name));
  const notes = (...words) => words.filter(w => w).join(" \\u00b7 ");
  body.replaceChildren(...s.services.map(v => {
    const cells = [nameCell(v)];
    hosts.forEach(h => {
      const target = v.prefer === h ? "switchover target" : "";
      if (h === s.node) cells.push(stateCell(v.state, v.role, notes(v.paused ? "paused" : "", target)));
      else if (v.peers[h]) cells.push(stateCell(v.peers[h].state, v.peers[h].role,
                                                notes(v.peers[h].status, paused.has(h) ? "paused" : "", target)));
      else cells.push(el("td", "\\u2013", "dim"));
    });
    cells.push(el("td", ago(v.last_change, s.time)), el("td", ago(v.last_check, s.time)),
               el("td", v.decision, "dim"));
    const tr = row(cells); tr.dataset.service = v.name;
    tr.dataset.paused = v.paused ? v.paused.scope : ""; tr.dataset.prefer = v.prefer || "";
    return tr;
  }));
  document.querySelector("#hosts tbody").replaceChildren(...s.hosts.map(h => row([
    el("td", h.name), el("td", h.status, h.status), failshCell(h),
    el("td", ago(h.last_seen, s.time)), el("td", ago(h.last_call, s.time)),
    el("td", h.rtt === null || h.rtt === undefined ? "-" : (h.rtt * 1000).toFixed(1) + " ms"),
    el("td", h.endpoint, "dim"), el("td", h.paused ? "paused" : "\\u2013", h.paused ? "down" : "dim")])));
  document.querySelector("#history tbody").replaceChildren(...s.history.slice().reverse().slice(0, 30).map(t => row([
    el("td", clock(t.time)), el("td", t.service), el("td", (t.old || "-") + " \\u2192 " + t.new, "t-" + t.new),
    el("td", t.reason)])));
}
function status(ok, text) {
  const c = document.getElementById("conn"); c.className = ok ? "live" : "lost"; c.textContent = text;
}
function poll() {
  fetch("snapshot.json", {cache: "no-store"}).then(r => r.ok ? r.json() : Promise.reject(r.status))
    .then(s => { if (s.seq !== lastSeq) render(s); status(true, "live (polling)"); })
    .catch(() => status(false, "no connection to failsh"))
    .finally(() => { pollTimer = setTimeout(poll, 1000); });
}
function start() {
  if (!window.EventSource || location.search.indexOf("poll") >= 0) { poll(); return; }
  const es = new EventSource("events");
  let failures = 0;
  es.addEventListener("snapshot", e => { failures = 0; status(true, "live"); render(JSON.parse(e.data)); });
  es.addEventListener("busy", () => { es.close(); poll(); });
  es.onerror = () => { status(false, "reconnecting"); if (++failures > 3) { es.close(); poll(); } };
}
start();
</script>
</body></html>
"""
