"""failstat: dump the states held by one or several hosts' faild."""

from __future__ import annotations

import argparse
import json
import sys

from failover import client, keys
from failover.cli import common
from failover.timefmt import age, local_time

EPILOG = """examples:
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
            info, records = c.list()
            result = {"host": host, "name": info.name, "started": info.started, "lease": info.lease,
                      "services": [r.to_wire() for r in records]}
            if args.history:
                result["history"] = [t.to_wire() for t in c.history(limit=args.count)]
            return result
    except client.ClientError as exc:
        return {"host": host, "error": str(exc), "exit": common.exit_code(exc)}
    except keys.KeyFileError as exc:
        return {"host": host, "error": str(exc), "exit": common.EXIT_CONFIG}


def print_table(results: list[dict]) -> None:
    rows = [("HOST", "SERVICE", "STATE", "LAST CHANGE", "AGE")]
    for r in results:
        if "error" in r:
            rows.append((r["host"], "-", "?", r["error"], ""))
            continue
        if not r["services"]:
            rows.append((r["host"], "-", "-", "(no services)", ""))
        for s in r["services"]:
            rows.append((r["host"], s["name"], s["state"], local_time(s["last_change"]), age(s["last_change"])))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[4])
    for r in results:
        for t in r.get("history", []):
            print(f"{r['host']}: {local_time(t['time'])} {t['service']} {t['old'] or '-'} -> {t['new']}"
                  f"  {t['reason']}")


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
    return max(errors) if errors else common.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
