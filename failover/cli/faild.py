"""faild: the failover state daemon, one per host."""

from __future__ import annotations

import argparse
import ctypes
import errno
import logging
import os
import pwd
import socket
import sys
from pathlib import Path

from failover import daemon, keys, ports, protocol
from failover.cli import common
from failover.faild import community
from failover.faild.server import Faild, host_info
from failover.faild.store import StateFileError, Store
from failover.files import make_dir, write_target

log = logging.getLogger("failover.server")

EPILOG = """faild keeps the states of the services on its host and answers failsh, failc
and failstat over ZeroMQ.  It never acts on its own.  Signals: SIGTERM stops it,
SIGHUP re-reads the community file.  The state file is rewritten atomically on
every change, so a restart (even after kill -9) loses nothing."""


def build_parser():
    p = common.parser("faild", "The failover state daemon.", EPILOG)
    p.add_argument("-F", "--foreground", action="store_true", help="stay in the foreground, log to stderr")
    p.add_argument("-d", "--debug", action="append", default=[], metavar="FACILITY",
                   help=f"debug output for FACILITY (implies -F); one of all, {', '.join(daemon.FACILITIES)}")
    p.add_argument("-c", "--communities", type=Path, metavar="FILE",
                   help="community file: lines 'SERVICE|* COMMUNITY RO|RW' (default: '* public RW')")
    p.add_argument("-s", "--statefile", type=Path, default=Path("/var/lib/failover/faild.state"),
                   help="state file (default: %(default)s)")
    p.add_argument("-r", "--pidfile", type=Path, default=Path("/run/faild.pid"),
                   help="pid file (default: %(default)s)")
    p.add_argument("-l", "--listen", default="*", help="address to listen on (default: all)")
    p.add_argument("-p", "--port", type=common.port_number, default=ports.FAILD,
                   help="TCP port (default: %(default)s)")
    p.add_argument("-N", "--node", help="node name reported to peers (default: the host name)")
    p.add_argument("-m", "--mlock", action="store_true", help="lock memory so faild is never paged out")
    p.add_argument("-n", "--nonice", type=common.bounded("nice decrement", int, 0, 39, "0..39"), default=0,
                   help="lower the nice value by N, 0..39 (root only)")
    p.add_argument("-u", "--user", help="switch to this user (name or uid) after binding")
    p.add_argument("--syslog", action="store_true", help="log to syslog even in the foreground")
    p.add_argument("--metrics", type=listen_address, metavar="[ADDR:]PORT",
                   help="serve Prometheus metrics at http://ADDR:PORT/metrics (default ADDR 127.0.0.1)")
    p.add_argument("--curve-secret", type=Path, metavar="FILE",
                   help="this faild's key pair (NAME.key_secret from failkey): CURVE authentication "
                        "and encryption are required on its socket (docs/security.md)")
    p.add_argument("--curve-allow", type=Path, metavar="DIR",
                   help="directory of the public keys (*.key) of the clients let in; needed with "
                        "--curve-secret; re-read on SIGHUP")
    p.add_argument("--genkey", nargs=2, metavar=("DIR", "NAME"),
                   help="write a new key pair DIR/NAME.key and DIR/NAME.key_secret and exit (as failkey)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.genkey:
        return genkey(*args.genkey)
    if (args.curve_secret is None) != (args.curve_allow is None):
        p.error("--curve-secret and --curve-allow go together")
    if args.node is not None and not protocol.valid_name(args.node):
        p.error(f"invalid node name {args.node[:70]!r}: use 1-64 letters, digits and _.:@+- (a host name)")
    if args.node is None and not protocol.valid_name(socket.gethostname()):  # clients would refuse its replies
        p.error(f"the host name {socket.gethostname()[:70]!r} is not a valid node name: give one with -N")
    foreground = args.foreground or bool(args.debug)
    if not common.debug_levels("faild", args.debug):
        return common.EXIT_USAGE
    # before the state file is read: what the loader logs (a counter raised, stale temporary
    # files removed) must reach the log; its errors are one line on stderr (exit 5)
    daemon.setup_logging("faild", to_syslog=args.syslog or not foreground, debug=args.debug)
    try:
        if args.user is not None:
            user_entry(args.user)  # fail now, not after binding ('' too: no silent "stay root")
        rules = community.load(args.communities) if args.communities else community.DEFAULT_RULES
        curve = keys.load_server(args.curve_secret, args.curve_allow) if args.curve_secret else None
        store = Store(args.statefile)
        store_dir = write_target(args.statefile).parent
        make_dir(store_dir)
        store.clean_temp()
    except (community.CommunityFileError, StateFileError, OSError, keys.KeyFileError) as exc:
        print(f"faild: {exc}", file=sys.stderr)
        return common.EXIT_CONFIG
    except KeyError:
        print(f"faild: unknown user {args.user!r}", file=sys.stderr)
        return common.EXIT_CONFIG
    if not foreground:
        daemon.daemonize()
    if args.communities is None:
        log.warning("no community file: community 'public' may read and write every service")
    if curve is not None and not curve.allowed:
        keys.log.warning("allow-list %s holds no *.key file: every client will be refused", curve.allow_dir)
    try:
        tune_process(args)
    except OSError as exc:
        log.error("%s", exc)
        return common.EXIT_CONFIG
    try:
        daemon.write_pidfile(args.pidfile)
    except OSError as exc:
        why = "it is a symlink, which faild does not follow" if exc.errno == errno.ELOOP else exc.strerror
        log.error("cannot write pid file %s: %s", args.pidfile, why)
        return common.EXIT_CONFIG
    server = Faild(store, rules, host_info(args.node), args.communities, curve=curve, leases=True)
    if args.metrics and not start_metrics(server, args.metrics):
        daemon.remove_pidfile(args.pidfile)
        return common.EXIT_CONFIG
    listen = f"[{args.listen}]" if ":" in args.listen else args.listen
    try:
        server.serve(f"tcp://{listen}:{args.port}", ready=lambda: drop_privileges(args.user))
    except Exception as exc:  # bind errors and the like: one line, not a traceback
        log.error("cannot serve on %s port %s: %s", args.listen, args.port, exc)
        return common.EXIT_CONFIG
    finally:
        daemon.remove_pidfile(args.pidfile)
    return common.EXIT_OK


def genkey(directory: str, name: str) -> int:
    """faild --genkey DIR NAME: what failkey -d DIR NAME does."""
    from failover.cli import failkey
    return failkey.main(["-d", directory, name])


def listen_address(text: str) -> str:
    """argparse type for --metrics; prometheus_client is imported only when it is used."""
    from failover.observe.metrics import parse_listen
    try:
        parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def start_metrics(server: Faild, listen: str) -> bool:
    """--metrics: count faild's requests and serve /metrics in a thread (metrics.py)."""
    from failover.observe import metrics
    try:
        metrics.instrument_faild(server)
        url = metrics.serve(listen)
    except OSError as exc:
        log.error("cannot serve metrics on %s: %s", listen, exc)
        return False
    log.info("Prometheus metrics on %s", url)
    return True


def tune_process(args) -> None:
    if args.nonice:
        os.nice(-args.nonice)
    if args.mlock:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(3) != 0:  # MCL_CURRENT | MCL_FUTURE
            raise OSError(ctypes.get_errno(), f"mlockall failed: {os.strerror(ctypes.get_errno())}")


def user_entry(user: str) -> pwd.struct_passwd:
    """-u takes a user name or, as 0.5's '-u uid', a numeric uid; KeyError if unknown."""
    try:
        return pwd.getpwuid(int(user)) if user.isascii() and user.isdigit() else pwd.getpwnam(user)
    except (OverflowError, ValueError):  # a uid beyond uid_t, a name with a NUL
        raise KeyError(user) from None


def drop_privileges(user: str | None) -> None:
    daemon.sd_notify("READY=1")
    if user:
        entry = user_entry(user)
        os.initgroups(entry.pw_name, entry.pw_gid)  # else root's supplementary groups stay
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)


if __name__ == "__main__":
    sys.exit(main())
