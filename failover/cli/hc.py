"""hc: the health checker.  Runs the checks of an Hcfile and fails broken services over."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zmq

from failover import daemon, keys, ports
from failover.cli import common
from failover.faild import community
from failover.faild.server import host_info
from failover.hc import hcfile
from failover.hc.kinds import names, run_check
from failover.hc.monitor import READ_ONLY, Monitor
from failover.hc.runner import MAX_WORKERS, Notifier, Runner

log = logging.getLogger("failover.hc")

HC_FACILITIES = ("hc", "checks", "runner", "monitor")

EPILOG = f"""hc reads an Hcfile (a Makefile-like list of nodes, see docs/hc.md), runs every
node's check at its interval, damps flapping (a node fails after 'fall' failures in
a row and recovers after 'rise' successes) and, when a node's state changes, sets
the service FAIL in faild (or back to RECOVER, never UP: failsh decides that) and
runs the node's actions.  A node also fails when a node it depends on fails.

  Hcfile example:
    db:
        check tcp 127.0.0.1:5432
    web: db
        check http http://127.0.0.1:8080/health status 200 body ok
        interval 5
        fall 3
        rise 2
        faild localhost:{ports.FAILD} service web community secret
        action /usr/local/sbin/page-operator

Check kinds: {names()}; every check has a
timeout and runs concurrently with the others.  Without -F or -d hc detaches and
logs to syslog.

With -m, hc answers faild's protocol on port {ports.HC_MONITOR}: every node is a read-only
service (UP, FAIL, or RECOVER while not known yet), so 'failstat localhost:{ports.HC_MONITOR}'
and hcmon show the checks.  Signals: SIGTERM/SIGINT stop hc, SIGHUP re-reads the
Hcfile (a bad file is reported and the old one kept).

examples:
  hc -n -f /etc/failover/Hcfile     check the file's syntax and exit
  hc -1                             run every check of ./Hcfile once, print the results
  hc -F -m                          run in the foreground with the monitor on port {ports.HC_MONITOR}
  hc -d runner -f web.hc            debug output of the scheduler (implies -F)"""


def build_parser() -> argparse.ArgumentParser:
    p = common.parser("hc", "The failover health checker: service-level checks that trigger failover.",
                      EPILOG)
    p.add_argument("-f", "--hcfile", type=Path, default=Path("Hcfile"),
                   help="check file (default: ./Hcfile)")
    p.add_argument("-d", "--debug", action="append", default=[], metavar="FACILITY",
                   help=f"debug output for FACILITY (implies -F): all, {', '.join(HC_FACILITIES)}, "
                        "or a faild facility such as protocol")
    p.add_argument("-m", "--monitor", action="store_true",
                   help=f"serve the check states over faild's protocol (port -p, default {ports.HC_MONITOR})")
    p.add_argument("-p", "--port", type=int, default=ports.HC_MONITOR, help="monitor port (default: %(default)s)")
    p.add_argument("-l", "--listen", default="*", help="monitor address to listen on (default: all)")
    p.add_argument("-c", "--communities", type=Path, metavar="FILE",
                   help="community file for the monitor, as faild's (default: '* public RO')")
    p.add_argument("-N", "--node", help="name the monitor reports (default: the host name)")
    p.add_argument("-j", "--jobs", type=int, default=0, metavar="N",
                   help=f"checks running at once (default: one per check, at most {MAX_WORKERS})")
    p.add_argument("-F", "--foreground", action="store_true", help="stay in the foreground, log to stderr")
    p.add_argument("-r", "--pidfile", type=Path, help="write the process id to this file")
    p.add_argument("--syslog", action="store_true", help="log to syslog even in the foreground")
    common.add_curve_options(p)  # for the faild updates: a faild that requires CURVE
    p.add_argument("-n", "--check-only", action="store_true", help="only check the Hcfile's syntax")
    p.add_argument("-1", "--once", action="store_true",
                   help="run every check once (no damping), print the results; exit 0 if all passed, 1 if not")
    return p


def set_debug(facility: str) -> None:
    if facility in HC_FACILITIES:
        name = "failover.hc" if facility == "hc" else f"failover.hc.{facility}"
        logging.getLogger(name).setLevel(logging.DEBUG)
    else:
        daemon.set_level(facility, "debug")


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    common.check_curve_options(p, args)
    try:
        for facility in args.debug:
            set_debug(facility)
    except ValueError:
        others = [f for f in daemon.FACILITIES if f not in HC_FACILITIES]
        print(f"hc: unknown debug facility {facility!r}: use all, {', '.join(HC_FACILITIES)}, "
              f"or one of {', '.join(others)}", file=sys.stderr)
        return common.EXIT_USAGE
    if args.jobs < 0:
        print("hc: -j needs a positive number", file=sys.stderr)
        return common.EXIT_USAGE
    try:
        config = hcfile.load(args.hcfile)
        rules = community.load(args.communities) if args.communities else READ_ONLY
        curves = faild_curves(config, args)
    except (hcfile.HcfileError, community.CommunityFileError, keys.KeyFileError) as exc:
        print(f"hc: {exc}", file=sys.stderr)
        return common.EXIT_CONFIG
    if args.check_only:
        print(f"{args.hcfile}: {len(config.nodes)} node{'s' if len(config.nodes) != 1 else ''} "
              f"({', '.join(config.order)})")
        return common.EXIT_OK
    if args.once:
        return run_once(config, args.jobs)
    foreground = args.foreground or bool(args.debug)
    if not foreground:
        daemon.daemonize()
    daemon.setup_logging("hc", to_syslog=args.syslog or not foreground, debug=None)
    return serve(config, args, rules, curves)


def faild_curves(config: hcfile.Config, args: argparse.Namespace) -> dict[str, keys.Curve]:
    """With --curve-secret: the CURVE settings for every faild the Hcfile updates (each
    key file read now, so a missing one stops hc at start, not at the first failure)."""
    identity = common.load_identity(args)
    hosts = {t.host for node in config.nodes.values() for t in node.faild}
    return {h: c for h in hosts if (c := common.curve_for(args, identity, h)) is not None}


def serve(config: hcfile.Config, args: argparse.Namespace, rules: community.Rules,
          curves: dict[str, keys.Curve]) -> int:
    runner = Runner(config, workers=args.jobs or None, notifier=Notifier(curves))
    monitor = None
    if args.monitor:
        monitor = Monitor(runner, host_info(args.node), rules)
        listen = f"[{args.listen}]" if ":" in args.listen else args.listen
        try:
            monitor.start(f"tcp://{listen}:{args.port}")
        except zmq.ZMQError as exc:
            log.error("cannot serve the monitor on %s port %s: %s", args.listen, args.port, exc)
            runner.notifier.close()
            return common.EXIT_CONFIG
    stop = threading.Event()
    hup = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        (hup if signum == signal.SIGHUP else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        if args.pidfile:
            daemon.write_pidfile(args.pidfile)
    except OSError as exc:
        log.error("cannot write pid file: %s", exc)
        return common.EXIT_CONFIG
    runner.start()
    log.info("hc started: %d nodes from %s%s", len(config.nodes), args.hcfile,
             f", monitor on port {args.port}" if monitor else "")
    daemon.sd_notify("READY=1")
    try:
        while not stop.wait(0.5):
            if hup.is_set():
                hup.clear()
                reload(runner, args)
    finally:
        daemon.sd_notify("STOPPING=1")
        log.info("hc stopping")
        runner.stop()
        if monitor:
            monitor.stop()
        daemon.remove_pidfile(args.pidfile)
    return common.EXIT_OK


def reload(runner: Runner, args: argparse.Namespace) -> None:
    """SIGHUP: the Hcfile again, and the key of every faild it updates (with CURVE)."""
    daemon.sd_notify("RELOADING=1")
    try:
        config = hcfile.load(args.hcfile)
        curves = faild_curves(config, args)
    except (hcfile.HcfileError, keys.KeyFileError) as exc:
        log.error("%s; keeping the previous configuration", exc)
    else:
        runner.notifier.curves = curves
        runner.reload(config)
    daemon.sd_notify("READY=1")


def run_once(config: hcfile.Config, jobs: int) -> int:
    """Every check once, concurrently; dependencies applied; a table on stdout."""
    checks = {n.name: (n.check, n.timeout) for n in config.nodes.values() if n.check is not None}
    results: dict[str, tuple[bool, str]] = {}
    with ThreadPoolExecutor(max(1, jobs or min(MAX_WORKERS, len(checks) or 1))) as pool:
        futures = {name: pool.submit(run_check, check, timeout) for name, (check, timeout) in checks.items()}
        for name, fut in futures.items():
            results[name] = fut.result()
    for name in config.order:
        node = config.nodes[name]
        failed = [d for d in node.deps if not results[d][0]]
        if failed:
            results[name] = (False, f"dependency {', '.join(failed)} failed"
                             + (f"; own check: {results[name][1]}" if name in results else ""))
        elif name not in results:
            results[name] = (True, f"dependencies {', '.join(node.deps)} passed")
    width = max(len(n) for n in config.order)
    for name in config.order:
        ok, detail = results[name]
        print(f"{name.ljust(width)}  {'ok  ' if ok else 'FAIL'}  {detail}")
    return common.EXIT_OK if all(ok for ok, _ in results.values()) else common.EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
