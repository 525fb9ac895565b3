"""Prometheus metrics of failsh and faild (docs/operations.md, "Metrics").

failsh serves ``FAILSH`` at ``/metrics`` of its dashboard (``failsh --http``); faild
serves ``FAILD`` on ``faild --metrics ADDR:PORT``.  Nothing here does I/O except
:func:`serve`; the counters cost a few microseconds and are updated whether or not
anybody scrapes them.

Gauges that describe the cluster (service states, peer reachability) are set from
failsh's monitor snapshot (:func:`update`), so ``/metrics``, failmon and the
dashboard always agree.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

from failover.states import State

STATES = tuple(s.value for s in State)
try:  # prometheus_client 0.17+; Debian 12's 0.16 keeps the *_created series
    from prometheus_client import disable_created_metrics
except ImportError:  # pragma: no cover - depends on the installed prometheus_client
    pass
else:
    disable_created_metrics()  # no *_created series: they double the output and nobody here uses them

FAILSH = CollectorRegistry()
FAILD = CollectorRegistry()
for _registry in (FAILSH, FAILD):
    ProcessCollector(registry=_registry)
    PlatformCollector(registry=_registry)

# failsh ---------------------------------------------------------------------------
SERVICE_STATE = Gauge("failover_service_state", "1 for the state this host provides the service in, else 0",
                      ["service", "state"], registry=FAILSH)
PEER_SERVICE_STATE = Gauge("failover_peer_service_state",
                           "1 for the state failsh sees a peer in for a service (FAIL if unreachable)",
                           ["service", "host", "state"], registry=FAILSH)
PEER_UP = Gauge("failover_peer_up", "1 if the host's faild answers failsh's polls", ["host"], registry=FAILSH)
PEER_FAILSH = Gauge("failover_peer_failsh", "1 if the host's faild answers and a failsh holds its lease", ["host"],
                    registry=FAILSH)
TRANSITIONS = Counter("failover_transitions", "Local state transitions of a service", ["service", "from", "to"],
                      registry=FAILSH)
QUERY_SECONDS = Histogram("failover_peer_query_seconds", "Round trip of failsh's polls of a faild", ["host"],
                          buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5),
                          registry=FAILSH)
FAILOVER_SECONDS = Histogram(
    "failover_failover_seconds",
    "From the loss of the host that provided the service to the service UP on this host",
    ["service"], buckets=(.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300), registry=FAILSH)
POLICY_ERRORS = Counter("failover_policy_errors",
                        "Policy procedures or traps that failed (Tcl error, timeout, result not UP/RECOVER/FAIL)",
                        ["service", "kind"], registry=FAILSH)
PROCEDURE_RUNS = Counter("failover_procedure_runs", "Procedure runs by outcome (ok, failed, timeout, cancelled, "
                         "bad-result, bool-check)", ["service", "procedure", "outcome"], registry=FAILSH)
TAKEOVERS = Counter("failover_takeovers", "Services this host started, by the detection that fired: lease-exited, "
                    "lease-released, lease-expired, no-lease, faild-silent, set-fail, hc, unknown-service, "
                    "switchover, no-master", ["service", "cause"], registry=FAILSH)
SERVICE_PAUSED = Gauge("failover_service_paused", "1 while the service is in maintenance on this host (itself or "
                       "the whole host): failsh takes no action for it", ["service"], registry=FAILSH)
SERVICE_RUNS = Counter("failover_service_runs", "Service runs: evaluated (the gates decided) or skipped (nothing "
                       "they read had changed and no clock-driven gate was due)", ["result"], registry=FAILSH)
_RUNS = {skipped: SERVICE_RUNS.labels("skipped" if skipped else "evaluated") for skipped in (False, True)}
SNAPSHOT_SEQ = Gauge("failover_snapshot_seq", "Sequence number of failsh's last monitor snapshot", registry=FAILSH)
HEARTBEATS_SENT = Counter("failover_heartbeats_sent", "Heartbeat datagrams sent to peers (failsh --heartbeat-key)",
                          registry=FAILSH)
HEARTBEATS_RECEIVED = Counter("failover_heartbeats_received", "Good heartbeats received, by the peer that sent them",
                              ["host"], registry=FAILSH)
HEARTBEATS_DROPPED = Counter("failover_heartbeats_dropped", "Heartbeat datagrams dropped: malformed, signature "
                             "(another key: forged or misconfigured), replay, late (reordered by the network), clock "
                             "(over 300 s off), unknown-host, error", ["reason"], registry=FAILSH)
HEARTBEAT_POLLS = Counter("failover_heartbeat_polls", "Polls made at once because a peer's heartbeat announced a "
                          "change (or came from a peer counted down)", ["host"], registry=FAILSH)

# faild ----------------------------------------------------------------------------
FAILD_REQUESTS = Counter("failover_faild_requests", "Requests faild answered", ["op", "result"], registry=FAILD)
FAILD_SECONDS = Histogram("failover_faild_request_seconds", "Time faild took to answer one request", ["op"],
                          buckets=(.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, 1),
                          registry=FAILD)
FAILD_TRANSITIONS = Counter("failover_faild_transitions", "State changes stored by faild", ["service", "to"],
                            registry=FAILD)

_lock = threading.Lock()
_known: dict[str, set[tuple[str, ...]]] = {"service": set(), "peer": set(), "host": set()}
# service -> (host that provided it, last time a snapshot showed it UP there)
_provider: dict[str, tuple[str, float]] = {}


# failsh hooks ---------------------------------------------------------------------
def update(snap: dict) -> None:
    """Set the cluster gauges from one monitor snapshot (failsh's Tcl thread)."""
    with _lock:
        services: set[tuple[str, ...]] = set()
        peers: set[tuple[str, ...]] = set()
        for svc in snap.get("services", []):
            name = svc["name"]
            for state in STATES:
                SERVICE_STATE.labels(name, state).set(1 if svc["state"] == state else 0)
            SERVICE_PAUSED.labels(name).set(1 if svc.get("paused") else 0)
            services.add((name,))
            for host, p in svc.get("peers", {}).items():
                for state in STATES:
                    PEER_SERVICE_STATE.labels(name, host, state).set(1 if p["state"] == state else 0)
                peers.add((name, host))
                if p["state"] == State.UP.value:
                    _provider[name] = (host, snap.get("time") or time.time())
        hosts: set[tuple[str, ...]] = set()
        for h in snap.get("hosts", []):
            PEER_UP.labels(h["name"]).set(1 if h["status"] == "up" else 0)
            PEER_FAILSH.labels(h["name"]).set(1 if h.get("failsh") and h["status"] == "up" else 0)
            hosts.add((h["name"],))
        for (name,) in _known["service"] - services:
            for state in STATES:
                SERVICE_STATE.remove(name, state)
            SERVICE_PAUSED.remove(name)
        for name, host in _known["peer"] - peers:
            for state in STATES:
                PEER_SERVICE_STATE.remove(name, host, state)
        for (host,) in _known["host"] - hosts:
            PEER_UP.remove(host)
            PEER_FAILSH.remove(host)
        _known.update(service=services, peer=peers, host=hosts)
        SNAPSHOT_SEQ.set(snap.get("seq", 0))


def transition(service: str, old: State | None, new: State, views: Mapping[str, Any] | None = None,
               node: str = "") -> None:
    """Count a local transition; on a takeover observe the failover duration.

    ``views`` is the network thread's snapshot (host -> PeerView).  The service was lost
    at the last reply of a host that still had it UP when its faild went silent; else at
    the change of the host that a snapshot last showed UP (its own clock, trusted when it
    is close to ours), or at that snapshot's time (its failsh went away without a word).
    """
    TRANSITIONS.labels(service, old.value if old else "-", new.value).inc()
    if new is not State.UP:
        return
    with _lock:
        provider = _provider.pop(service, None)
    views = views or {}
    lost: float | None = None
    for host, view in views.items():
        rec = view.services.get(service)
        if host != node and rec is not None and rec.state is State.UP and view.status == "down" \
                and view.last_seen:
            lost = max(lost or 0.0, view.last_seen)
    if lost is None and provider is not None:
        host, lost = provider
        view = views.get(host)
        rec = view.services.get(service) if view is not None else None
        if rec is not None and rec.state is not State.UP and abs(rec.last_change - lost) < 300:
            lost = rec.last_change
    if lost is not None and 0 <= time.time() - lost < 86400:
        FAILOVER_SECONDS.labels(service).observe(time.time() - lost)


def takeover(service: str, cause: str) -> None:
    """Count a start of ``service`` here by the detection that fired (gates.py's cause)."""
    TAKEOVERS.labels(service, cause or "none").inc()


def procedure(service: str, kind: str, outcome: str, error: bool) -> None:
    """Count a start/stop/reclaim/check/tiebreaker run by its outcome (procedures.py:
    ok, failed, timeout, cancelled, bad-result, bool-check); ``error``: the policy's fault."""
    PROCEDURE_RUNS.labels(service, kind, outcome).inc()
    if error:
        POLICY_ERRORS.labels(service, kind).inc()


def service_run(skipped: bool) -> None:
    """Count one run of a service (runner.py): ten thousand a second at scale, so no labels lookup."""
    _RUNS[skipped].inc()


def policy_error(service: str, kind: str) -> None:
    POLICY_ERRORS.labels(service or "-", kind).inc()


def observe_query(host: str, seconds: float) -> None:
    QUERY_SECONDS.labels(host).observe(seconds)


# faild hooks ----------------------------------------------------------------------
_OP = re.compile(rb'"op"\s*:\s*"([a-z]{1,16})"')
_SERVICE = re.compile(rb'"service"\s*:\s*"([^"\\]{1,64})"')
_STATE = re.compile(rb'"state"\s*:\s*"([A-Z]{2,8})"')


def instrument(handle: Callable[[bytes, Any], bytes]) -> Callable[[bytes, Any], bytes]:
    """Wrap faild's ``handle(frame, meta) -> reply``: count and time every request.

    Only the bytes are looked at (no second JSON parse), so the cost stays a few
    microseconds per request; faild without ``--metrics`` is not wrapped at all.
    """
    def counted(frame: bytes, meta: Any = None) -> bytes:
        start = time.perf_counter()
        reply = handle(frame, meta)
        elapsed = time.perf_counter() - start
        m = _OP.search(frame)
        op = m.group(1).decode() if m else "invalid"
        ok = b'"ok":true' in reply
        FAILD_REQUESTS.labels(op, "ok" if ok else "error").inc()
        FAILD_SECONDS.labels(op).observe(elapsed)
        if ok and op == "set" and b'"changed":true' in reply:
            svc, state = _SERVICE.search(frame), _STATE.search(reply)
            if svc and state:
                FAILD_TRANSITIONS.labels(svc.group(1).decode(), state.group(1).decode()).inc()
        return reply
    return counted


class StoreCollector:
    """faild's current states, read from the store at scrape time."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("failover_faild_service_state", "1 for the state faild holds for the service",
                              labels=["service", "state"])
        for rec in self.store.all():
            for state in STATES:
                g.add_metric([rec.name, state], 1 if rec.state.value == state else 0)
        yield g


def instrument_faild(server: Any) -> None:
    """Make a server.Faild count its requests and expose its store's states."""
    server.handle = instrument(server.handle)
    FAILD.register(StoreCollector(server.store))


# Serving --------------------------------------------------------------------------
def parse_listen(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``PORT``, ``:PORT``, ``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); ValueError if bad."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected [ADDRESS:]PORT, not {text!r}")
    return host, int(port)


def serve(listen: str, registry: CollectorRegistry = FAILD) -> str:
    """Serve ``registry`` at /metrics on ``listen`` in a daemon thread; return its URL.

    OSError if the address cannot be bound.
    """
    host, port = parse_listen(listen)
    started = start_http_server(port, host, registry=registry)  # (server, thread) since 0.19, None before
    if started is not None:
        port = started[0].server_address[1]
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"
