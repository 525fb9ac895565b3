"""faildebug: change the log level of one facility in a running failsh or faild.

It sends the protocol op ``loglevel`` (docs/protocol.md) to failsh's control port
(failsh ``-D``, default 127.0.0.1:1849) or, with ``--faild`` or ``-p 1847``, to faild.
The community must be failsh's ``-c`` string (default ``public``) or, for faild, one
with RW access in its community file.
"""

from __future__ import annotations

import sys

from failover import client, daemon, ports, protocol
from failover.cli import common

EPILOG = f"""facilities: all, {', '.join(daemon.FACILITIES)}
levels:     {', '.join(daemon.LEVELS)}

examples:
  faildebug scheduler debug              failsh on this host: log every decision
  faildebug -c secret all info           back to normal (failsh -c secret)
  faildebug --faild server debug         the local faild
  faildebug --faild --curve-secret /etc/failover/keys/admin.key_secret \
            --server-key /etc/failover/keys/www1.key -h www1 server debug
                                         a faild that requires CURVE
  faildebug -h www2:{ports.FAILSH_CONTROL} peers debug     failsh on www2 (its control port is bound to
                                         127.0.0.1 by default: run faildebug there)"""


def build_parser():
    p = common.parser("faildebug", "Change a facility's log level in a running failsh (or faild).", EPILOG)
    p.add_argument("-h", "--host", default="127.0.0.1", metavar="HOST[:PORT]",
                   help="where failsh (or faild) runs (default: %(default)s)")
    p.add_argument("-c", "--community", default=protocol.DEFAULT_COMMUNITY,
                   help="community string: failsh's -c, or an RW one of faild (default: %(default)s)")
    p.add_argument("-p", "--port", type=common.port_number, default=None,
                   help=f"port when HOST has none (default: {ports.FAILSH_CONTROL}, "
                        f"with --faild {ports.FAILD})")
    p.add_argument("--faild", action="store_true", help="talk to faild instead of failsh")
    p.add_argument("-t", "--timeout", type=float, default=2.0, help="seconds to wait (default: %(default)s)")
    common.add_curve_options(p)  # a faild that requires CURVE; failsh's control port is local, plaintext
    p.add_argument("facility", help="a facility (see below) or 'all'")
    p.add_argument("level", help="debug, info, warning or error")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    level = args.level.lower()
    if level not in daemon.LEVELS:
        p.error(f"unknown level {args.level!r}; use one of {', '.join(daemon.LEVELS)}")
    if args.facility != "all" and args.facility not in daemon.FACILITIES:
        p.error(f"unknown facility {args.facility!r}; use 'all' or one of {', '.join(daemon.FACILITIES)}")
    if not 0 < args.timeout <= 3600:
        p.error("--timeout must be in (0, 3600] seconds")
    common.check_curve_options(p, args)
    port = args.port or (ports.FAILD if args.faild else ports.FAILSH_CONTROL)
    if args.curve_secret is not None and port != ports.FAILD and not args.faild:
        p.error("--curve-secret is for a faild (--faild); failsh's control port speaks plaintext")

    def body() -> int:
        endpoint = client.endpoint_for(args.host, port)
        curve = common.curve_for(args, common.load_identity(args), args.host)
        with client.Client(endpoint, args.community, timeout=args.timeout, retries=0, curve=curve) as c:
            reply = c.call("loglevel", facility=args.facility, level=level)
        who = (reply.get("host") or {}).get("name") or args.host
        print(f"{who}: log level of {args.facility} set to {level}")
        return common.EXIT_OK

    return common.run("faildebug", body)


if __name__ == "__main__":
    sys.exit(main())
