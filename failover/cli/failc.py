"""failc: query or change a service's state in a local or remote faild."""

from __future__ import annotations

import argparse
import sys

from failover import client
from failover.cli import common
from failover.protocol import valid_name
from failover.states import BadState, parse_state
from failover.timefmt import age, local_time

EPILOG = """examples:
  failc web                 print the state of 'web' on the local faild
  failc -h www2 web         the same on host www2
  failc -c secret web UP    set 'web' to UP (needs an RW community)
  failc -h www2:1900 -q web exit status only: 0 if UP"""


def build_parser() -> argparse.ArgumentParser:
    p = common.parser("failc", "Query or set the state (UP, RECOVER, FAIL) of a service in faild. "
                      "Use it whenever a service was started or stopped outside failsh.", EPILOG)
    p.add_argument("-h", "--host", default="localhost", help="faild host[:port] (default: localhost)")
    common.add_client_options(p)
    common.add_curve_options(p)
    p.add_argument("-m", "--reason", default="", help="reason recorded in faild's history")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing; when querying, exit 0 if UP and 1 otherwise")
    p.add_argument("service", help="service name")
    p.add_argument("state", nargs="?", help="new state: UP, RECOVER or FAIL (omit to query)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    common.check_curve_options(p, args)
    if not valid_name(args.service):
        p.error(f"invalid service name {args.service!r}: use 1-64 letters, digits and _.:@+-")
    if args.state is not None:
        try:
            parse_state(args.state)
        except BadState as exc:
            p.error(str(exc))

    def body() -> int:
        curve = common.curve_for(args, common.load_identity(args), args.host)
        endpoint = client.endpoint_for(args.host, args.port)
        with client.Client(endpoint, args.community, args.timeout, args.retries, curve=curve, agent="failc") as c:
            if args.state is None:
                rec = c.get(args.service)
                if args.quiet:
                    return common.EXIT_OK if rec.state.value == "UP" else common.EXIT_REFUSED
            else:
                rec = c.set(args.service, args.state, args.reason or "set with failc")
        if not args.quiet:
            print(f"{rec.name} {rec.state} since {local_time(rec.last_change)} ({age(rec.last_change)})")
        return common.EXIT_OK

    return common.run("failc", body)


if __name__ == "__main__":
    sys.exit(main())
