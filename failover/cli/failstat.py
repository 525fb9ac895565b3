"""failstat: dump the states held by one or several hosts' faild."""

from __future__ import annotations

import json
import sys

from failover import client
from failover.cli import common
from failover.timefmt import age, local_time

EPILOG = """examples:
  failstat                        states on the local faild
  failstat www1 www2:1900         several hosts in one table
  failstat --json www1            machine-readable
  failstat --history www1         recent transitions with their reasons"""


def fetch(host: str, args) -> dict:
    """One host's answer as a plain dict; errors become an 'error' entry, not an exception."""
    try:
        endpoint = client.endpoint_for(host, args.port)
        with client.Client(endpoint, args.community, args.timeout, args.retries) as c:
            info, records = c.list()
            result = {"host": host, "name": info.name, "started": info.started,
                      "services": [r.to_wire() for r in records]}
            if args.history:
                result["history"] = [t.to_wire() for t in c.history(limit=args.history)]
            return result
    except client.ClientError as exc:
        return {"host": host, "error": str(exc), "exit": common.exit_code(exc)}


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


def main(argv: list[str] | None = None) -> int:
    p = common.parser("failstat", "Dump all service states of one or several hosts' faild "
                      "(name, state, last change as local time, age).", EPILOG)
    common.add_client_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--history", type=int, nargs="?", const=20, default=0, metavar="N",
                   help="also show the last N transitions (default N: 20)")
    p.add_argument("hosts", nargs="*", default=["localhost"], metavar="HOST[:PORT]")
    args = p.parse_args(argv)
    results = [fetch(h, args) for h in args.hosts]
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
