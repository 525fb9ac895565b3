"""failstat: dump the states held by one or several hosts' faild.

A service UP on a host whose faild reports no failsh lease is *stale*: nothing decides for it
there any more (its failsh was killed, hangs, or never ran), and the peers count the host
FAIL.  failstat says so (``UP (stale: no failsh)``, ``"stale": true``) and exits 6.
"""

from __future__ import annotations

import argparse
import json
import sys

from failover import client, keys
from failover.cli import common
from failover.model import HostInfo
from failover.timefmt import age, local_time

EPILOG = """A service UP on a host whose faild reports no live failsh (no lease) is shown as
'UP (stale: no failsh)', and failstat exits 6 (unless a host error says more); while it
is paused there (failctl pause) it is 'UP (paused, no failsh)' instead, not an error.
FLAGS shows maintenance (failctl pause) and switchover targets (failctl switchover).

examples:
  failstat                        states on the local faild
  failstat www1 www2:1900         several hosts in one table
  failstat --json www1            machine-readable
  failstat --history www1         recent transitions with their reasons
  failstat --history -n 100 www1  the last 100 of them"""


def fetch(host: str, args, identity: keys.Identity | None = None) -> dict:
    """One host's answer as a plain dict; errors become an 'error' entry, not an exception."""
    try:
        curve = common.curve_for(args, identity, host)
        endpoint = client.endpoint_for(host, args.port)
        with client.Client(endpoint, args.community, args.timeout, args.retries, curve=curve) as c:
            listed = c.list_all()  # in pages: a faild may hold far more than one reply carries
            info, records = listed.host, listed.sorted()
            if info is None:
                raise client.RequestFailed("BADREPLY", f"bad reply from {endpoint}: no host")
            maintenance = {k: v.to_wire() for k, v in listed.maintenance.items()}
            prefer = {k: v.to_wire() for k, v in listed.prefer.items()}
            services = []
            for r in records:
                entry = maintenance.get(r.name) or maintenance.get("*")
                services.append({**r.to_wire(), "stale": stale(info, r.state.value) and entry is None,
                                 "kept": stale(info, r.state.value) and entry is not None,
                                 "paused": {"scope": "service" if r.name in maintenance else "host", **entry}
                                 if entry else None,
                                 "switchover": prefer[r.name]["host"] if r.name in prefer else None})
            result = {"host": host, "name": info.name, "started": info.started, "lease": info.lease,
                      "lease_end": info.lease_end.to_wire() if info.lease_end else None,
                      "maintenance": maintenance, "prefer": prefer, "services": services}
            if args.history:
                result["history"] = [t.to_wire() for t in c.history(limit=args.count)]
            return result
    except client.ClientError as exc:
        return {"host": host, "error": str(exc), "exit": common.exit_code(exc)}
    except keys.KeyFileError as exc:
        return {"host": host, "error": str(exc), "exit": common.EXIT_CONFIG}


def stale(info: HostInfo, state: str) -> bool:
    """UP on a faild that holds failsh leases but reports none live (not hc's monitor)."""
    return state == "UP" and info.leases and info.lease is None


def _flags(s: dict) -> str:
    flags = []
    if s["paused"]:
        flags.append("paused" if s["paused"]["scope"] == "service" else "paused (host)")
    if s["switchover"]:
        flags.append(f"switchover to {s['switchover']}")
    return ", ".join(flags)


def print_table(results: list[dict]) -> None:
    rows = [("HOST", "SERVICE", "STATE", "LAST CHANGE", "AGE", "FLAGS")]
    for r in results:
        if "error" in r:
            rows.append((r["host"], "-", "?", r["error"], "", ""))
            continue
        if not r["services"]:
            rows.append((r["host"], "-", "-", "(no services)", "", "paused (host)" if "*" in r["maintenance"] else ""))
        for s in r["services"]:
            state = ("UP (stale: no failsh)" if s["stale"] else "UP (paused, no failsh)" if s["kept"]
                     else s["state"])
            rows.append((r["host"], s["name"], state, local_time(s["last_change"]), age(s["last_change"]),
                         _flags(s)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print(("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[5]).rstrip())
    for r in results:
        for t in r.get("history", []):
            by = f" (by {t['by']})" if t.get("by") else ""
            print(f"{r['host']}: {local_time(t['time'])} {t['service']} {t['old'] or '-'} -> {t['new']}"
                  f"  {t['reason']}{by}")


def build_parser() -> argparse.ArgumentParser:
    p = common.parser("failstat", "Dump all service states of one or several hosts' faild "
                      "(name, state, last change as local time, age).", EPILOG)
    common.add_client_options(p)
    common.add_curve_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    # a flag, not --history [N]: an optional value would swallow the first HOST
    p.add_argument("--history", action="store_true", help="also show the last transitions (see -n)")
    p.add_argument("-n", "--count", type=common.bounded("count", int, 1, 1000, "1..1000"), default=20, metavar="N",
                   help="transitions shown by --history, 1..1000 (default: %(default)s)")
    p.add_argument("hosts", nargs="*", default=["localhost"], metavar="HOST[:PORT]")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    common.check_curve_options(p, args)
    try:
        identity = common.load_identity(args)
    except keys.KeyFileError as exc:
        print(f"failstat: {exc}", file=sys.stderr)
        return common.EXIT_CONFIG
    results = [fetch(h, args, identity) for h in args.hosts]
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print_table(results)
    errors = [r["exit"] for r in results if "error" in r]
    for r in results:
        if "error" in r:
            print(f"failstat: {r['error']}", file=sys.stderr)
    if errors:
        return max(errors)
    stale_on = [f"{s['name']} on {r['name']}" for r in results for s in r["services"] if s["stale"]]
    if stale_on:
        print(f"failstat: UP without a live failsh (stale): {', '.join(stale_on)}", file=sys.stderr)
        return common.EXIT_STALE
    return common.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
