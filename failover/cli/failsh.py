"""failsh: the failover shell.  Runs a Tcl policy, or an interactive prompt."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import attrs

from failover import daemon, heartbeat, keys, ports, protocol
from failover.cli import common
from failover.client import endpoint_for
from failover.observe import metrics
from failover.shell import repl, verify
from failover.shell.commands import ADDRESS
from failover.shell.engine import Engine, Options
from failover.shell.policy import DEAD_FACTOR
from failover.shell.signals import Signals
from failover.shell.tclhost import PolicyError

log = logging.getLogger("failover.scheduler")

EXIT_FAILED = 1       # failsh had to stop on an internal failure (its network thread died)

EPILOG = """The policy is a Tcl script using failsvc, failhost and failtrap (failover 0.5
scripts run unchanged) and the newer commands of docs/tcl-extension.md.

signals: SIGTERM  cancel a running procedure, stop every UP service, release the lease,
                  exit (peers take over)
         SIGHUP   re-read the policy; UP services stay UP; a broken file is ignored
         SIGINT   write the state dump to -l (a FIFO stays open for the next dump)

exit status of a running failsh: 0 after SIGTERM, 1 if it stopped on an internal failure
(the peers would otherwise be judged on stale data), 5 for a policy or port it cannot use

examples:
  failsh -F -f /etc/failover/web.tcl
  failsh -F -N www2 -P www1=10.0.0.1 -f web.tcl      host names that DNS does not know
  failsh                                            interactive prompt for trying rules"""


def build_parser():
    p = common.parser("failsh", "The failover shell: runs a Tcl failover policy on this host.", EPILOG)
    p.add_argument("-f", "--file", type=Path, metavar="TCLFILE", help="the policy to run (omit for a prompt)")
    p.add_argument("-F", "--foreground", action="store_true", help="stay in the foreground, log to stderr")
    p.add_argument("-d", "--debug", action="append", default=[], metavar="FACILITY",
                   help=f"debug output for FACILITY (implies -F): all, {', '.join(daemon.FACILITIES)}")
    p.add_argument("-l", "--dumpfile", type=Path, default=Path("/run/failover/failsh.dump"),
                   help="state dump written on SIGINT (default: %(default)s)")
    p.add_argument("-i", "--pidfile", type=Path, default=Path("/run/failsh.pid"),
                   help="pid file (default: %(default)s)")
    p.add_argument("-m", "--monitor-port", type=int, default=None,
                   help=f"port of the failmon feed, 0 to disable (default: {ports.FAILSH_FEED}; "
                        "none at the prompt without -f)")
    p.add_argument("--monitor-listen", default="*", help="address of the failmon feed (default: all)")
    p.add_argument("-c", "--community", default=protocol.DEFAULT_COMMUNITY,
                   help="community faildebug must present (default: %(default)s)")
    p.add_argument("-D", "--debug-port", type=int, default=None,
                   help=f"control port for faildebug on 127.0.0.1, 0 to disable (default: {ports.FAILSH_CONTROL}; "
                        "none at the prompt without -f)")
    p.add_argument("-N", "--node", default=os.environ.get("FO_NODE") or socket.gethostname(),
                   help="this host's name in the policy (default: $FO_NODE or the host name)")
    p.add_argument("--faild", default=f"127.0.0.1:{ports.FAILD}",
                   help="the local faild as HOST[:PORT] (default: %(default)s)")
    p.add_argument("--faild-community", default=protocol.DEFAULT_COMMUNITY,
                   help="RW community for the local faild (default: %(default)s)")
    p.add_argument("-P", "--peer", action="append", default=[], metavar="NAME=ADDR[:PORT]",
                   help="where to reach host NAME's faild (overrides DNS and failhost)")
    p.add_argument("--dead-factor", type=float, default=DEAD_FACTOR,
                   help="a peer silent for this many intervals counts as FAIL (default: %(default)s; 1.5 "
                        "with --heartbeat-key at short intervals, docs/tuning.md)")
    p.add_argument("--interactive", action="store_true", help="open the prompt after loading -f")
    p.add_argument("--check", action="store_true",
                   help="check the policy -f as every host it names would run it (undefined procedures, lists "
                        "that form no order, host names without an address, dead times), print its services "
                        "and exit: 0 (warnings only) or 5 (errors, as FILE:LINE: error: ...)")
    p.add_argument("--json", action="store_true", help="with --check: the services and findings as JSON")
    p.add_argument("--load-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="a policy (re)load still running after this is cancelled and refused "
                        "(default: %(default)s)")
    p.add_argument("--syslog", action="store_true", help="log to syslog even in the foreground")
    p.add_argument("--http", metavar="[ADDR:]PORT",
                   help="serve the live web page, /snapshot.json and /metrics (default ADDR 127.0.0.1)")
    p.add_argument("--curve-secret", type=Path, metavar="FILE",
                   help="this failsh's key pair (.key_secret from failkey): CURVE to every faild, "
                        "local and peers (docs/security.md); needs --curve-keys")
    p.add_argument("--curve-keys", type=Path, metavar="DIR",
                   help="DIR/NAME.key is the public key of host NAME's faild, this host's included")
    p.add_argument("--heartbeat-key", type=Path, metavar="FILE",
                   help="the cluster's heartbeat key (failkey --heartbeat-key, mode 0600, the same on every "
                        "host): signed UDP heartbeats to and from the hosts of the policy, so that a lost poll "
                        "does not count a live peer FAIL (docs/failsh.md, \"Liveness\"); without it, liveness "
                        "comes from the polls alone")
    p.add_argument("--heartbeat-port", type=int, default=None, metavar="PORT",
                   help=f"UDP port of the heartbeats, the same on every host, 0 for none (default: "
                        f"{ports.HEARTBEAT}; none at the prompt without -f)")
    return p


def options(args) -> Options:
    addresses = {}
    for item in args.peer:
        name, sep, addr = item.partition("=")
        if not sep or not name or not ADDRESS.fullmatch(addr):
            raise ValueError(f"-P expects NAME=ADDRESS[:PORT], not {item!r}")
        addresses[name] = addr
    # a prompt without a policy must not take the ports of the failsh that runs the host
    trial = args.file is None
    monitor_port = args.monitor_port if args.monitor_port is not None else (0 if trial else ports.FAILSH_FEED)
    debug_port = args.debug_port if args.debug_port is not None else (0 if trial else ports.FAILSH_CONTROL)
    heartbeat_port = args.heartbeat_port if args.heartbeat_port is not None else (0 if trial else ports.HEARTBEAT)
    for what, port in (("monitor", monitor_port), ("debug", debug_port), ("heartbeat", heartbeat_port)):
        if not 0 <= port < 65536:
            raise ValueError(f"invalid {what} port {port}: expected 1..65535, or 0 for none")
    if not protocol.valid_name(args.node):
        raise ValueError(f"invalid node name {args.node[:70]!r}: use 1-64 letters, digits and _.:@+- (a host name)")
    if not 0.1 <= args.load_timeout <= 3600:
        raise ValueError(f"--load-timeout {args.load_timeout:g}: expected 0.1 to 3600 seconds")
    if not 1 <= args.dead_factor <= 100:
        raise ValueError(f"--dead-factor {args.dead_factor:g}: expected 1 to 100 intervals")
    monitor = f"tcp://{args.monitor_listen}:{monitor_port}" if monitor_port else None
    control = f"tcp://127.0.0.1:{debug_port}" if debug_port else None
    if args.http:
        metrics.parse_listen(args.http)  # ValueError: a usage error
    if (args.curve_secret is None) != (args.curve_keys is None):
        raise ValueError("--curve-secret and --curve-keys go together")
    return Options(curve_keys=args.curve_keys, load_timeout=args.load_timeout,
                   node=args.node, policy=args.file, faild=endpoint_for(args.faild, resolve=False),
                   faild_community=args.faild_community, addresses=addresses, monitor=monitor,
                   control=control, control_community=args.community, dumpfile=args.dumpfile,
                   dead_factor=args.dead_factor, scheduling=args.file is not None, http=args.http,
                   heartbeat_port=heartbeat_port)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.check or args.json) and args.file is None or args.json and not args.check:
        print("failsh: --check needs a policy (-f FILE); --json goes with --check", file=sys.stderr)
        return common.EXIT_USAGE
    interactive = args.file is None or args.interactive
    foreground = interactive or args.foreground or bool(args.debug) or args.check
    try:
        opts = options(args)
        for facility in args.debug:
            daemon.set_level(facility, "debug")
    except ValueError as exc:
        print(f"failsh: {exc}", file=sys.stderr)
        return common.EXIT_USAGE
    try:
        opts.curve = keys.load_identity(args.curve_secret) if args.curve_secret else None
        opts.heartbeat_key = heartbeat.load_key(args.heartbeat_key) if args.heartbeat_key else None
    except keys.KeyFileError as exc:  # the CURVE and the heartbeat key: one class (files.py)
        print(f"failsh: {exc}", file=sys.stderr)
        return common.EXIT_CONFIG
    daemon.setup_logging("failsh", to_syslog=args.syslog or not foreground, debug=args.debug)
    if interactive:
        logging.getLogger().setLevel(logging.WARNING)
    engine = Engine(opts)
    if args.file is not None:
        try:
            engine.load(args.file)
        except PolicyError as exc:
            if args.json:
                print(json.dumps({"file": str(args.file), "node": opts.node, "ok": False, "services": [],
                                  "errors": [_finding(str(exc)).to_json()], "warnings": []}))
            else:
                print(f"failsh: {exc}", file=sys.stderr)
            return common.EXIT_CONFIG
        if args.check:
            return check(engine, args)
        if not engine.policy.services and not interactive:
            print(f"failsh: {args.file}: the policy defines no service (use failsvc)", file=sys.stderr)
            return common.EXIT_CONFIG
    missing = engine.hosts.key_errors()  # --curve-keys: every faild polled needs its key
    if missing:
        print(f"failsh: {missing[0]}", file=sys.stderr)
        return common.EXIT_CONFIG
    if not foreground:
        daemon.daemonize()
    return run(engine, args, interactive)


def check(engine: Engine, args) -> int:
    """failsh --check: the file as every host it names runs it (shell/verify.py)."""
    path: Path = args.file
    opts = engine.opts

    def load(host: str) -> verify.Loaded | str:
        saved = os.environ.get("FO_NODE")
        os.environ["FO_NODE"] = host  # policies that read $env(FO_NODE), as the sample tests run them
        try:
            other = Engine(attrs.evolve(opts, node=host))
            other.load(path)
            return verify.Loaded(host, other.policy, other.tcl)
        except PolicyError as exc:
            return str(exc)
        finally:
            if saved is None:
                os.environ.pop("FO_NODE", None)
            else:
                os.environ["FO_NODE"] = saved
    first = verify.Loaded(opts.node, engine.policy, engine.tcl)
    if os.environ.get("FO_NODE", opts.node) != opts.node:  # as the host runs it: $FO_NODE is its -N
        loaded = load(opts.node)
        if isinstance(loaded, str):
            print(f"failsh: {loaded}", file=sys.stderr)
            return common.EXIT_CONFIG
        first = loaded
    findings = verify.verify(first, load, opts.addresses, opts.dead_factor, path,
                             heartbeats=opts.heartbeat_key is not None and bool(opts.heartbeat_port))
    errors = [f for f in findings if f.level == verify.ERROR]
    services = sorted(engine.policy.services.items())
    if args.json:
        print(json.dumps({"file": str(path), "node": opts.node, "ok": not errors,
                          "services": [{"name": n, "interval": s.interval, "masters": s.masters, "slaves": s.slaves,
                                        "failback": s.failback_text(), "flap": s.flap_text()} for n, s in services],
                          "errors": [f.to_json() for f in errors],
                          "warnings": [f.to_json() for f in findings if f.level != verify.ERROR]}))
    else:
        for name, svc in services:
            print(f"{name}: interval {svc.interval:g} masters {svc.masters} slaves {svc.slaves}")
        for finding in findings:
            print(f"failsh: {finding}", file=sys.stderr)
    return common.EXIT_CONFIG if errors else common.EXIT_OK


def _finding(error: str) -> verify.Finding:
    """A PolicyError's 'FILE:LINE: message' as a finding."""
    where, sep, message = error.partition(": ")
    return verify.Finding(verify.ERROR, where, message) if sep and ":" in where else \
        verify.Finding(verify.ERROR, "", error)


def run(engine: Engine, args, interactive: bool) -> int:
    interp = engine.tcl.interp
    failed: list[str] = []

    def leave() -> None:
        engine.tcl.clear_cancel()  # after an unwound stuck script (shell/signals.py) Tcl refuses the next call
        interp.quit()
        interp.call("after", 0, "")  # wake the blocking event loop so it sees quit

    def on_fatal(why: str) -> None:
        failed.append(why)
        if not interactive:
            leave()

    def terminate() -> None:
        """SIGTERM at the prompt: input() cannot be interrupted cleanly, so finish here."""
        try:
            engine.shutdown()
            daemon.remove_pidfile(args.pidfile)
            repl.save_history()
        finally:
            sys.stdout.flush()
            os._exit(common.EXIT_OK)

    engine.on_fatal = on_fatal
    if not interactive:  # the prompt checks engine.exit_status after each command
        engine.on_exit = lambda _status: leave()
    engine.install_loop_hooks()
    try:
        engine.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return common.EXIT_CONFIG
    if not interactive:
        if os.access(args.pidfile.parent, os.W_OK):
            daemon.write_pidfile(args.pidfile)
        _signals(engine, {signal.SIGTERM: leave, signal.SIGQUIT: leave,
                          signal.SIGHUP: lambda: reload(engine), signal.SIGINT: engine.dump})
        daemon.sd_notify("READY=1")
        log.info("failsh %s running %s: %d services", engine.opts.node, args.file, len(engine.policy.services))
        _say_heartbeats(engine.opts)
    else:
        prompt = repl.Prompt(engine)
        _signals(engine, {signal.SIGTERM: terminate, signal.SIGINT: prompt.discard_line}, prompt.interrupt)
    try:
        if interactive:
            status = prompt.interact()
        else:
            interp.mainloop(-1)
            status = EXIT_FAILED if failed else engine.exit_status or common.EXIT_OK
    finally:
        daemon.sd_notify("STOPPING=1")
        engine.shutdown()
        daemon.remove_pidfile(args.pidfile)
    return status


def _say_heartbeats(opts: Options) -> None:
    """Once at start-up: whether peers' liveness also comes from heartbeats."""
    if opts.heartbeat_key is None:
        logging.getLogger("failover.peers").info(
            "no --heartbeat-key: a peer's liveness comes from its polls alone, so a lost poll can cost a dead "
            "time (docs/failsh.md, \"Liveness\")")
    elif not opts.heartbeat_port:
        logging.getLogger("failover.peers").info("--heartbeat-port 0: no heartbeats; liveness from the polls alone")
    else:
        logging.getLogger("failover.peers").info("heartbeats to and from the peers on udp port %d",
                                                 opts.heartbeat_port)


def _signals(engine: Engine, actions: dict[int, Callable[[], None]],
             interrupt: Callable[[int], None] | None = None) -> Signals:
    return Signals(engine.tcl, actions, engine.scheduler.halt, lambda: engine.stopping, interrupt)


def reload(engine: Engine) -> None:
    """SIGHUP: re-read the policy, telling systemd (Type=notify) while it happens."""
    daemon.sd_notify("RELOADING=1")
    try:
        engine.reload()
    finally:
        daemon.sd_notify("READY=1")


if __name__ == "__main__":
    sys.exit(main())
