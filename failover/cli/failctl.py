"""failctl: cluster-wide operations, in the spirit of patronictl and crm.

It asks every host's faild (``-H``, or the hosts one failsh polls: ``--from``) and shows
one table of the cluster (``status``), or writes the administrators' flags of
docs/protocol.md ("Operations for administrators") to the failds concerned: maintenance
(``pause``, ``resume``: the ``maint`` op) and the switchover target (``switchover``: the
``prefer`` op).  failsh acts on those flags (docs/failsh.md); faild only keeps them.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from failover import client, keys, ports, protocol
from failover.cli import common
from failover.model import HostInfo, MaintEntry, PreferEntry, ServiceRecord
from failover.timefmt import age, local_time

AGENT = "failctl"  # faild records "failctl from ADDRESS" as who made a change
DEFAULT_WATCH = 2.0

EXIT_NO_HOLDER = common.EXIT_NO_HOLDER
EXIT_SPLIT = common.EXIT_SPLIT

DESCRIPTION = ("Cluster-wide operations: show who holds each service (status), put services or hosts in "
               "maintenance (pause, resume), move a service for good (switchover).  It asks every host's "
               "faild: the hosts named with -H, or those that one host's failsh polls (--from).")

EPILOG = """commands:
  status [SERVICE]               one table of the cluster; exit 0 iff every service has
                                 exactly one live holder (--json, --watch [SECONDS])
  pause [--host H] [SERVICE]     maintenance: failsh takes no action for it (no start,
                                 stop, reclaim, takeover, handback); SERVICE alone: on
                                 every host; --host H alone: all of host H
  resume [--host H] [SERVICE]    the same, out of maintenance
  switchover SERVICE --to HOST   HOST should hold SERVICE from now on (written to every
                                 host's faild; it sticks until --clear or another one)
  switchover SERVICE --clear     back to the policy's order
  `failctl COMMAND --help` shows a command's options.

the cluster:
  -H HOST[:PORT] (repeatable) names the failds to ask.  --from HOST[:PORT] takes one
  snapshot from the failsh monitor feed of HOST (port 1848 unless given): its hosts,
  their faild addresses, and each service's masters and slaves (the ROLE column).  That
  failsh's own faild is HOST at -p (1847).  A loopback faild address in the snapshot is
  taken as HOST's.  Without either, --from localhost.

examples:
  failctl status                           the cluster of the local failsh
  failctl --from www1 status web --watch   redraw every 2 s until Ctrl-C
  failctl -H www1 -H www2 status --json
  failctl -c secret pause web -m 'db migration'    web on every host
  failctl -c secret pause --host www1 -m 'kernel update'
  failctl -c secret resume --host www1
  failctl -c secret switchover web --to www2 -m 'www1 hardware swap'
  failctl -c secret switchover web --clear"""

WRITE_EXIT = ("exit status: 0 when every faild concerned did it (or had it done already); else the\n"
              "worst of 1 (refused: no RW community, an older faild), 3 (no answer), 4, 5 (failctl --help).")

EXTRA_CODES = {
    EXIT_NO_HOLDER: "(failctl status) a service has no live holder (no host holds it with a live failsh)",
    EXIT_SPLIT: "(failctl status) a service has more than one live holder",
}


# The cluster -------------------------------------------------------------------------------
@attrs.define
class Host:
    """One faild asked: where (``address`` as given or learned), and what it answered."""

    address: str
    endpoint: str
    name: str | None = None  # the node name: from the snapshot, then from faild's reply
    key_name: str = ""       # the HOST of HOST.key in --server-keys
    info: HostInfo | None = None
    records: dict[str, ServiceRecord] = attrs.field(factory=dict)
    maintenance: dict[str, MaintEntry] = attrs.field(factory=dict)
    prefer: dict[str, PreferEntry] = attrs.field(factory=dict)
    error: str | None = None
    exit: int = common.EXIT_OK

    @property
    def label(self) -> str:
        return self.name or self.address

    @property
    def up(self) -> bool:
        return self.info is not None

    @property
    def lease(self) -> float | None:
        return self.info.lease if self.info is not None else None


@attrs.define
class Cluster:
    hosts: list[Host]
    order: dict[str, list[str]] = attrs.field(factory=dict)  # service -> host names, masters first
    source: str = ""  # "failsh on www2 (127.0.0.1:1848)" when learned from a snapshot
    errors: list[tuple[str, int]] = attrs.field(factory=list)  # (message, exit status) not of one host

    def host(self, name: str) -> Host | None:
        """The host named ``name`` (node name, or the address it was given as)."""
        for h in self.hosts:
            if name in (h.name, h.address):
                return h
        return None

    def names(self) -> list[str]:
        return [h.label for h in self.hosts]


class Refused(Exception):
    """What failctl itself refuses (an unknown service, a switchover target that is not
    ready); ``code`` is the exit status."""

    def __init__(self, message: str, code: int = common.EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _endpoint_host(endpoint: str) -> tuple[str, int | None]:
    """(host, port) of tcp://HOST:PORT."""
    rest = endpoint.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def learn(target: str, faild_port: int, timeout: float) -> Cluster:
    """The cluster as the failsh at ``target`` (HOST[:PORT], feed port 1848) sees it: one
    snapshot.  ClientError (Unreachable, UnknownHost) if none comes within ``timeout``."""
    # imported here: failmon's module is only needed for this
    from failover.cli.failmon import Feed

    source = Feed([target], ports.FAILSH_FEED)
    try:
        if source.wait_all(timeout):
            raise client.Unreachable(source.missing_error(target, timeout))
        snap = source.snaps[target]
        endpoint = source.endpoints[target]
    finally:
        source.close()
    there = _endpoint_host(endpoint)[0]
    node = snap["node"]
    hosts = [Host(_address(there, faild_port), client.endpoint_for(_address(there, faild_port), resolve=False),
                  name=node, key_name=node)]
    for h in snap["hosts"]:
        name = h["name"]
        if name == node or not protocol.valid_name(name):
            continue
        host, port = _endpoint_host(h["endpoint"])
        if _is_loopback(host):  # the address of HOST as that failsh reaches it: HOST's, for us
            host = there
        address = _address(host, port or faild_port)
        hosts.append(Host(address, client.endpoint_for(address, resolve=False), name=name, key_name=name))
    order = {s["name"]: [*s["masters"], node, *s["slaves"]] for s in snap["services"]}
    return Cluster(hosts, order, f"failsh on {node} ({_endpoint_host(endpoint)[0]}:"
                                 f"{_endpoint_host(endpoint)[1]})")


def given_hosts(addresses: Iterable[str], port: int) -> list[Host]:
    """Hosts named on the command line; UnknownHost for a name that does not resolve."""
    return [Host(a, client.endpoint_for(a, port), key_name=common.host_name(a)) for a in addresses]


def connect(args: argparse.Namespace, identity: keys.Identity | None, host: Host) -> client.Client:
    curve = common.curve_for(args, identity, host.key_name or host.address) if identity is not None else None
    return client.Client(host.endpoint, args.community, args.timeout, args.retries, curve=curve, agent=AGENT)


def ask_all(args: argparse.Namespace, identity: keys.Identity | None, hosts: list[Host]) -> None:
    """``list`` every host's faild at once; each Host gets its answer or its error."""
    def one(h: Host) -> None:
        try:
            with connect(args, identity, h) as c:
                listed = c.list_all()  # in pages: a faild may hold far more than one reply carries
        except client.ClientError as exc:
            h.error, h.exit = str(exc), common.exit_code(exc)
            return
        except keys.KeyFileError as exc:
            h.error, h.exit = str(exc), common.EXIT_CONFIG
            return
        h.info = listed.host
        if h.info is not None:
            h.name = h.info.name
        h.records = dict(listed.records)
        h.maintenance, h.prefer = listed.maintenance, listed.prefer
        h.error, h.exit = None, common.EXIT_OK

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(hosts)))) as pool:
        list(pool.map(one, hosts))


def gather(args: argparse.Namespace, identity: keys.Identity | None) -> Cluster:
    """Learn the cluster (--from, -H) and ask every faild in it.  Without a snapshot from
    --from, the -H hosts alone (the error counts as a host's); without -H either, the error."""
    cluster = Cluster([])
    extra = given_hosts(args.hosts or [], args.port)
    if args.source is not None:
        try:
            cluster = learn(args.source, args.port, args.timeout * (args.retries + 1) + 1.0)
        except client.ClientError as exc:
            if not extra:
                raise
            cluster.errors.append((f"{exc}; only the -H hosts asked", common.exit_code(exc)))
    ask_all(args, identity, cluster.hosts + extra)
    for h in extra:  # -H beats what the snapshot says of the same node
        known = cluster.host(h.name) if h.name else None
        if known is not None:
            cluster.hosts[cluster.hosts.index(known)] = h
        else:
            cluster.hosts.append(h)
    return cluster


# status ------------------------------------------------------------------------------------
def _lease_text(h: Host, now: float) -> str:
    if not h.up:
        return "?"
    assert h.info is not None
    if h.info.lease is not None:
        return f"{h.info.lease:.1f}s left"
    end = h.info.lease_end
    return f"no failsh ({end.why} {age(end.at, now)} ago)" if end is not None else "no failsh"


def _pause_wire(h: Host, service: str | None) -> dict[str, Any] | None:
    """The maintenance that covers ``service`` (None: the host) on ``h``: scope, since, reason, by."""
    entry, scope = None, ""
    if service is not None and service in h.maintenance:
        entry, scope = h.maintenance[service], "service"
    elif protocol.HOST_WIDE in h.maintenance:
        entry, scope = h.maintenance[protocol.HOST_WIDE], "host"
    if entry is None:
        return None
    return {"scope": scope, **entry.to_wire()}


def services_of(cluster: Cluster) -> list[str]:
    names = set(cluster.order)
    for h in cluster.hosts:
        names.update(h.records)
    return sorted(names)


def service_status(cluster: Cluster, service: str) -> dict[str, Any]:
    """Who holds ``service`` and how every host of it stands, as failctl status --json shows it."""
    order = cluster.order.get(service)
    hosts: list[Host] = []
    if order is not None:
        hosts = [h for name in order if (h := cluster.host(name)) is not None]
    for h in cluster.hosts:  # hosts that hold a record but are not in the order; unknown ones
        if h not in hosts and (service in h.records or (not h.up and order is None)):
            hosts.append(h)
    rows: list[dict[str, Any]] = []
    for h in hosts:
        rec = h.records.get(service)
        live = h.up and h.lease is not None
        up = rec is not None and rec.state.value == "UP"
        paused = _pause_wire(h, service)
        # UP without a live failsh: stale, unless paused there (a failsh upgrade in a
        # maintenance window: the service stays where it is, by the administrator's will)
        kept = up and h.up and not live and paused is not None
        position = order.index(h.label) + 1 if order is not None and h.label in order else None
        rows.append({
            "host": h.label, "order": position,
            "role": None if position is None else "master" if position == 1 else "slave",
            "reachable": h.up, "error": h.error,
            "state": rec.state.value if rec is not None else None,
            "holds": up and (live or kept), "stale": up and h.up and not live and not kept, "kept": kept,
            "lease": h.lease, "failsh": live,
            "paused": paused,
            "prefer": h.prefer[service].to_wire() if service in h.prefer else None,
            "last_change": rec.last_change if rec is not None else None,
            "reason": rec.reason if rec is not None else "", "by": rec.by if rec is not None else ""})
    holders = [r["host"] for r in rows if r["holds"]]
    targets = {r["host"]: r["prefer"]["host"] if r["prefer"] else None for r in rows if r["reachable"]}
    wanted = {t for t in targets.values() if t is not None}
    return {"name": service, "holders": holders, "stale": [r["host"] for r in rows if r["stale"]],
            "ok": len(holders) == 1, "switchover": wanted.pop() if len(wanted) == 1 else None,
            "switchover_hosts": sorted(h for h, t in targets.items() if t is not None),
            "switchover_conflict": len(wanted) > 1,
            "paused_on": [r["host"] for r in rows if r["paused"]], "hosts": rows}


def status_data(cluster: Cluster, only: str | None = None) -> dict[str, Any]:
    now = time.time()
    names = services_of(cluster)
    if only is not None:
        names = [only]
    services = [service_status(cluster, s) for s in names]
    hosts = [{"name": h.label, "address": h.address, "reachable": h.up, "error": h.error,
              "lease": h.lease, "lease_end": h.info.lease_end.to_wire() if h.info and h.info.lease_end else None,
              "paused": _pause_wire(h, None), "failsh": _lease_text(h, now)} for h in cluster.hosts]
    return {"time": now, "source": cluster.source or None, "hosts": hosts, "services": services,
            "errors": [message for message, _code in cluster.errors], "exit": status_exit(cluster, services)}


def status_exit(cluster: Cluster, services: list[dict[str, Any]]) -> int:
    """8 if a service has two live holders (certain, whatever else is wrong); else the worst
    host error (the picture is incomplete); else 7 if a service has no live holder; else 0."""
    if any(len(s["holders"]) > 1 for s in services):
        return EXIT_SPLIT
    errors = [h.exit for h in cluster.hosts if h.error is not None] + [code for _msg, code in cluster.errors]
    if errors:
        return max(errors)
    if any(not s["holders"] for s in services):
        return EXIT_NO_HOLDER
    return common.EXIT_OK


def _state_cell(row: dict[str, Any]) -> str:
    if not row["reachable"]:
        return "?"
    if row["state"] is None:
        return "-"
    if row["stale"]:
        return "UP (stale: no failsh)"
    return "UP (paused, no failsh)" if row.get("kept") else row["state"]


def _paused_cell(row: dict[str, Any]) -> str:
    p = row["paused"]
    return "-" if p is None else "paused" if p["scope"] == "service" else "paused (host)"


def _holder_cell(s: dict[str, Any]) -> str:
    if len(s["holders"]) > 1:
        return " ".join(s["holders"]) + " (SPLIT)"
    if s["holders"]:
        kept = any(r.get("kept") for r in s["hosts"])
        return s["holders"][0] + (" (paused)" if kept else "")
    return "NONE" + (f" (stale: {' '.join(s['stale'])})" if s["stale"] else "")


def _switchover_cell(s: dict[str, Any]) -> str:
    """The target all failds hold, "TARGET (partial)" if some answered without it, "MIXED"
    if they hold different ones (see the notes)."""
    if s["switchover_conflict"]:
        return "MIXED"
    if s["switchover"] is None:
        return "-"
    partial = any(r["reachable"] and r["prefer"] is None for r in s["hosts"])
    return s["switchover"] + (" (partial)" if partial else "")


def _changed_cell(row: dict[str, Any], now: float) -> str:
    if row["last_change"] is None:
        return ""
    text = f"{age(row['last_change'], now)} ago"
    if row["by"]:
        text += f" by {row['by']}"
    if row["reason"]:
        text += f": {row['reason']}"
    return text


def _entry_text(entry: dict[str, Any], now: float) -> str:
    text = f"since {local_time(entry['since'])} ({age(entry['since'], now)})"
    if entry.get("by"):
        text += f" by {entry['by']}"
    if entry.get("reason"):
        text += f": {entry['reason']}"
    return text


def table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def status_text(data: dict[str, Any]) -> str:
    """The status table (and the hosts above it, the flags' details below it)."""
    now = data["time"]
    lines = [f"failctl status at {local_time(now)}: {len(data['hosts'])} hosts"
             + (f", from {data['source']}" if data["source"] else ""), ""]
    hrows: list[tuple[str, ...]] = [("HOST", "FAILD", "FAILSH", "MAINTENANCE")]
    for h in sorted(data["hosts"], key=lambda h: h["name"]):
        faild = "up" if h["reachable"] else "DOWN"
        hrows.append((h["name"], faild, h["failsh"], "paused (host)" if h["paused"] else "-"))
    lines += table(hrows)
    lines.append("")
    srows: list[tuple[str, ...]] = [("SERVICE", "HOLDER", "SWITCHOVER", "HOST", "ROLE", "STATE", "FAILSH",
                                     "PAUSED", "LAST CHANGE")]
    for s in data["services"]:
        head = (s["name"], _holder_cell(s), _switchover_cell(s))
        if not s["hosts"]:
            srows.append((*head, "-", "-", "-", "-", "-", ""))
        for r in s["hosts"]:
            role = f"{r['order']} {r['role']}" if r["order"] is not None else "-"
            failsh = "?" if not r["reachable"] else "yes" if r["failsh"] else "no"
            srows.append((*head, r["host"], role, _state_cell(r), failsh, _paused_cell(r), _changed_cell(r, now)))
            head = ("", "", "")
    lines += table(srows) if len(srows) > 1 else ["(no services)"]
    notes = []
    for h in data["hosts"]:
        if h["paused"]:
            notes.append(f"  {h['name']}: whole host paused {_entry_text(h['paused'], now)}")
        if h["error"]:
            notes.append(f"  {h['name']}: {h['error']}")
    for message in data["errors"]:
        notes.append(f"  {message}")
    for s in data["services"]:
        # one line per pause and per target, however many hosts hold it (written in one go)
        for kind, entries in (("paused", [(r["host"], r["paused"]) for r in s["hosts"]
                                          if r["paused"] and r["paused"]["scope"] == "service"]),
                              ("switchover to", [(r["host"], r["prefer"]) for r in s["hosts"] if r["prefer"]])):
            groups: dict[tuple[str, str, str], list[tuple[str, dict[str, Any]]]] = {}
            for host, entry in entries:
                groups.setdefault((entry.get("host", ""), entry["reason"], entry["by"]), []).append((host, entry))
            for (target, _reason, _by), members in groups.items():
                first = min((e for _h, e in members), key=lambda e: e["since"])
                where = ", ".join(h for h, _e in members)
                what = f"{kind} {target}" if target else kind
                notes.append(f"  {s['name']} on {where}: {what} {_entry_text(first, now)}")
        missing = [r["host"] for r in s["hosts"] if r["reachable"] and r["prefer"] is None]
        if s["switchover_hosts"] and missing:
            notes.append(f"  {s['name']}: no switchover target on {', '.join(missing)} (run the switchover again)")
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines) + "\n"


def cmd_status(args: argparse.Namespace, identity: keys.Identity | None) -> int:
    cluster = gather(args, identity)
    if args.service is not None and args.service not in services_of(cluster):
        raise Refused(f"unknown service {args.service!r}: no host of {', '.join(cluster.names()) or 'the cluster'} "
                      "holds it and the policy does not name it")
    if args.watch is None:
        return show_status(args, cluster)
    code = common.EXIT_OK
    try:
        while True:
            if sys.stdout.isatty():
                sys.stdout.write("\033[H\033[2J")  # home, clear: redraw in place
            code = show_status(args, cluster)
            sys.stdout.flush()
            time.sleep(args.watch)
            ask_all(args, identity, cluster.hosts)
    except KeyboardInterrupt:  # the way out of --watch: no traceback, the last table's status
        print()
        return code


def show_status(args: argparse.Namespace, cluster: Cluster) -> int:
    data = status_data(cluster, args.service)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(status_text(data))
    if args.watch is None:
        for h in cluster.hosts:
            if h.error is not None:
                print(f"failctl: {h.label}: {h.error}", file=sys.stderr)
        for message, _code in cluster.errors:
            print(f"failctl: {message}", file=sys.stderr)
    return int(data["exit"])


# pause, resume, switchover -------------------------------------------------------------------
def _known_service(cluster: Cluster, service: str, force: bool) -> None:
    if force or service in services_of(cluster):
        return
    reached = [h for h in cluster.hosts if h.up]
    if not reached:  # nobody answered: the write will say so per host
        return
    raise Refused(f"unknown service {service!r}: no host of {', '.join(cluster.names())} holds it and "
                  "the policy does not name it (--force writes it anyway)")


def _write(args: argparse.Namespace, identity: keys.Identity | None, hosts: list[Host],
           call: Callable[[client.Client], Any], report: Callable[[Host, Any], str]) -> int:
    """Run ``call`` on every host's faild at once; print one line per host, in order; the
    worst exit status."""
    results: dict[int, tuple[str, int]] = {}

    def one(i: int, h: Host) -> None:
        try:
            with connect(args, identity, h) as c:
                reply = call(c)
        except client.ClientError as exc:
            results[i] = (f"{h.label}: {exc} (nothing changed there)", common.exit_code(exc))
        except keys.KeyFileError as exc:
            results[i] = (f"{h.label}: {exc} (nothing changed there)", common.EXIT_CONFIG)
        else:
            results[i] = (f"{h.label}: {report(h, reply)}", common.EXIT_OK)

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(hosts)))) as pool:
        list(pool.map(one, range(len(hosts)), hosts))
    worst = common.EXIT_OK
    for i in range(len(hosts)):
        line, code = results[i]
        print(line, file=sys.stdout if code == common.EXIT_OK else sys.stderr)
        worst = max(worst, code)
    return worst


def _targets(args: argparse.Namespace, cluster: Cluster) -> list[Host]:
    """The hosts a pause or resume writes to: --host H, or every host."""
    if args.host is None:
        return cluster.hosts
    h = cluster.host(args.host)
    silent = [x for x in cluster.hosts if not x.up and x.name is None]
    if h is None and silent:  # perhaps one of those: their names are not known
        raise Refused(f"unknown host {args.host!r}: " + "; ".join(f"{x.label}: {x.error}" for x in silent),
                      max(x.exit for x in silent))
    if h is None:
        raise Refused(f"unknown host {args.host!r}: the cluster is {', '.join(cluster.names())}",
                      common.EXIT_USAGE)
    return [h]


def cmd_maint(args: argparse.Namespace, identity: keys.Identity | None) -> int:
    on = args.command == "pause"
    if args.service is None and args.host is None:
        raise Refused(f"{args.command}: name a SERVICE (on every host), --host HOST (the whole host), or both",
                      common.EXIT_USAGE)
    if not args.hosts and args.source_given is False and args.host is not None:
        cluster = Cluster(given_hosts([args.host], args.port))  # failctl pause --host www1: ask www1 itself
        cluster.hosts[0].name = args.host
        ask_all(args, identity, cluster.hosts)
        cluster.hosts[0].name = cluster.hosts[0].name or args.host
    else:
        cluster = gather(args, identity)
    targets = _targets(args, cluster)
    if on and args.service is not None:
        _known_service(cluster, args.service, args.force)
    what = args.service or "the whole host"
    key = args.service or protocol.HOST_WIDE

    def report(h: Host, reply: Any) -> str:
        if reply.changed:
            return f"{what} {'paused' if on else 'resumed'}"
        if on:
            entry = reply.maintenance.get(key)
            detail = f" {_entry_text(entry.to_wire(), time.time())}" if entry is not None else ""
            return f"{what} already paused{detail}"
        still = reply.maintenance.get(protocol.HOST_WIDE) if args.service is not None else None
        return f"{what} was not paused" + (" (the whole host still is)" if still is not None else "")

    return _write(args, identity, targets, lambda c: c.maint(on, args.service, args.reason), report)


def cmd_switchover(args: argparse.Namespace, identity: keys.Identity | None) -> int:
    cluster = gather(args, identity)
    service = args.service
    target: str | None = None
    if args.to is not None:
        target = check_target(cluster, service, args.to, args.force)
    else:
        _known_service(cluster, service, True)

    def report(h: Host, reply: Any) -> str:
        if target is None:
            return f"{service}: switchover target cleared" if reply.changed else f"{service}: had no switchover target"
        return f"{service}: switchover to {target}" + ("" if reply.changed else " (already)")

    return _write(args, identity, cluster.hosts, lambda c: c.prefer(service, target, args.reason), report)


def check_target(cluster: Cluster, service: str, to: str, force: bool) -> str:
    """The node name of the switchover target ``to``; Refused if it is not a host of
    ``service`` or its faild does not answer, and (unless ``force``) if it has no live
    failsh or is paused."""
    h = cluster.host(to)
    order = cluster.order.get(service)
    if order is not None and (h is None or h.label not in order):
        raise Refused(f"{to} is not a host of {service} (its hosts: {', '.join(order)})")
    if h is None:
        raise Refused(f"{to} is not one of the hosts asked: {', '.join(cluster.names())}")
    if not h.up:
        raise Refused(f"{h.label} cannot take {service}: its faild does not answer ({h.error})",
                      h.exit or common.EXIT_UNREACHABLE)
    _known_service(cluster, service, False)
    if not force:
        if h.lease is None:
            raise Refused(f"{h.label} cannot take {service}: no failsh runs there ({_lease_text(h, time.time())}); "
                          "--force writes it anyway")
        paused = _pause_wire(h, service)
        if paused is not None:
            what = "the whole host" if paused["scope"] == "host" else service
            raise Refused(f"{h.label} cannot take {service}: {what} is paused there "
                          f"({_entry_text(paused, time.time())}); resume it first, or --force")
    assert h.name is not None
    return h.name


# The command line ---------------------------------------------------------------------------
def _connection_options(p: argparse.ArgumentParser, sub: bool) -> None:
    """-H, --from, -c, -p, -t, -r and the CURVE options: before the command, or after it
    (``sub``: then without defaults, so that they do not undo the ones given before)."""
    keep: dict[str, Any] = {"default": argparse.SUPPRESS} if sub else {}
    g = p.add_argument_group("cluster and connection (before or after the command)")
    g.add_argument("-H", "--host-address", dest="hosts", action="append", metavar="HOST[:PORT]",
                   **(keep or {"default": None}),
                   help="a faild to ask (repeatable; port -p unless given)")
    g.add_argument("--from", dest="source", metavar="HOST[:PORT]", **(keep or {"default": None}),
                   help="learn the cluster from the failsh monitor feed of HOST "
                        f"(port {ports.FAILSH_FEED} unless given); the default without -H: localhost")
    g.add_argument("-c", "--community", **(keep or {"default": protocol.DEFAULT_COMMUNITY}),
                   help="community presented to faild; pause, resume and switchover need RW "
                        "(default: %(default)s)" if not sub else "community presented to faild")
    g.add_argument("-p", "--port", type=common.port_number, **(keep or {"default": ports.FAILD}),
                   help="faild port where HOST has none (default: %(default)s)" if not sub else "faild port")
    g.add_argument("-t", "--timeout", type=common.bounded("timeout", float, 0, 3600, "(0, 3600] seconds",
                                                          low_open=True),
                   **(keep or {"default": 1.0}),
                   help="seconds to wait for each try (default: %(default)s)" if not sub else "seconds per try")
    g.add_argument("-r", "--retries", type=common.bounded("retry count", int, 0, 100, "0..100"),
                   **(keep or {"default": 1}),
                   help="extra tries after a timeout (default: %(default)s)" if not sub else "extra tries")
    g.add_argument("--curve-secret", type=Path, metavar="FILE", **(keep or {"default": None}),
                   help="talk CURVE with this key pair (see failkey); needs --server-key or --server-keys")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--server-key", type=Path, metavar="FILE", **(keep or {"default": None}),
                   help="public key of the faild asked (one host)")
    x.add_argument("--server-keys", type=Path, metavar="DIR", **(keep or {"default": None}),
                   help="directory holding NAME.key for each host (its node name, or the HOST given with -H)")


def _subparser(sub: Any, name: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    p = sub.add_parser(name, description=description, help=description.split(". ")[0].split(": ")[0],
                       add_help=False, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--help", action="help", help="show this help and exit")
    _connection_options(p, sub=True)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = common.parser("failctl", DESCRIPTION, EPILOG, extra_codes=EXTRA_CODES)
    _connection_options(p, sub=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True,
                           parser_class=argparse.ArgumentParser,
                           help="status, pause, resume or switchover (see commands below)")
    s = _subparser(sub, "status", "Show the cluster: per service who holds it, and per host its state, "
                   "role, failsh, maintenance and last change.",
                   "A service UP on a host whose failsh is gone (no lease in its faild) is shown as\n"
                   "'UP (stale: no failsh)' and never as its holder; while the service or the host is\n"
                   "paused there it is 'UP (paused, no failsh)' and stays the holder (a failsh upgrade in\n"
                   "a maintenance window).\n\n"
                   "exit status: 0 iff every service has exactly one live holder and every faild\n"
                   f"answered; {EXIT_SPLIT} two or more live holders; else 3, 4, 1 for a faild that did not\n"
                   f"answer, an unknown host, a refused request; else {EXIT_NO_HOLDER} a service without a "
                   "live holder.")
    s.add_argument("service", nargs="?", metavar="SERVICE", help="only this service")
    s.add_argument("--json", action="store_true", help="print JSON instead of the table")
    s.add_argument("--watch", nargs="?", type=common.bounded("interval", float, 0, 3600, "(0, 3600] seconds",
                                                              low_open=True),
                   const=DEFAULT_WATCH, metavar="SECONDS",
                   help=f"redraw every SECONDS (default {DEFAULT_WATCH:g}) until Ctrl-C")
    for name, verb in (("pause", "Put in maintenance"), ("resume", "Take out of maintenance")):
        m = _subparser(sub, name, f"{verb}: SERVICE on every host, --host HOST (the whole host), or "
                       "--host HOST SERVICE (one service on one host).  Idempotent; one line per host.",
                       WRITE_EXIT + ("\n\nfailctl pause --host HOST asks HOST itself when neither -H nor --from "
                                     "is given." if name == "pause" else ""))
        m.add_argument("--host", metavar="HOST", help="only this host (a node name, or a -H address)")
        m.add_argument("service", nargs="?", metavar="SERVICE", help="the service (none: the whole host)")
        m.add_argument("-m", "--reason", default="",
                       help="why: recorded in faild and shown by status" if name == "pause" else "why: in faild's log")
        if name == "pause":
            m.add_argument("--force", action="store_true", help="pause a service no host knows of")
    w = _subparser(sub, "switchover", "Move SERVICE to HOST for good: the target is written to every host's "
                   "faild, and failsh hands the service over (two-phase, never two hosts UP).  It sticks until "
                   "--clear or another switchover.",
                   "refused (exit 1, nothing written) when HOST is not a host of SERVICE (as the --from\n"
                   "snapshot says) or not one of the hosts asked, or when its faild does not answer (exit 3);\n"
                   "without --force also when no failsh runs there or HOST or SERVICE is paused there.\n\n"
                   + WRITE_EXIT)
    w.add_argument("service", metavar="SERVICE", help="the service")
    g = w.add_mutually_exclusive_group(required=True)
    g.add_argument("--to", metavar="HOST", help="the host that should hold SERVICE (its node name)")
    g.add_argument("--clear", action="store_true", help="no target: back to the policy's order")
    w.add_argument("-m", "--reason", default="", help="why, recorded in faild and shown by status")
    w.add_argument("--force", action="store_true", help="also to a host without a live failsh, or paused")
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace, keys.Identity | None], int]] = {
    "status": cmd_status, "pause": cmd_maint, "resume": cmd_maint, "switchover": cmd_switchover}


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    common.check_curve_options(p, args)
    for name in ([args.service] if getattr(args, "service", None) else []) + \
            ([args.to] if getattr(args, "to", None) else []):
        if not protocol.valid_name(name):
            p.error(f"invalid name {name!r}: use 1-64 letters, digits and _.:@+-")
    if len(args.reason if hasattr(args, "reason") else "") > 256:
        p.error("the reason (-m) is longer than 256 characters")
    args.source_given = args.source is not None
    if args.source is None and not args.hosts and not (args.command in ("pause", "resume") and args.host):
        args.source = "localhost"
    if not hasattr(args, "force"):
        args.force = False

    def body() -> int:
        identity = common.load_identity(args)
        try:
            return COMMANDS[args.command](args, identity)
        except Refused as exc:
            print(f"failctl: {exc}", file=sys.stderr)
            return exc.code

    return common.run("failctl", body)


if __name__ == "__main__":
    sys.exit(main())
