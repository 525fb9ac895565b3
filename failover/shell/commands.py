"""The failover Tcl commands (docs/tcl-extension.md).

Original 0.5 commands: ``failsvc``, ``failhost``, ``failtrap``.  New ones:
``getstate``, ``setstate``, ``peers``, ``startservice``, ``stopservice``,
``services``, ``hosts``, ``node``, ``whatif``, ``schedule``, ``fo::log``, the arbiter's
``failarbiter`` and ``fo::token`` (docs/arbiter.md), and for the
IP helpers of tcl/failover.tcl ``fo::ipaddrs`` and ``fo::ipcanon``.
Every command validates its arguments and fails with a Tcl error whose
errorcode starts with FAILOVER; nothing a policy does can raise a Python traceback.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import subprocess
import sys
import time
import tkinter
from pathlib import Path
from typing import Protocol

from failover.arbiter.etcd import EtcdError, parse_endpoint
from failover.client import ClientError, RequestFailed
from failover.hc.monitor import healthy as hc_healthy
from failover.protocol import valid_name
from failover.shell import announce, gates
from failover.shell.policy import (
    ARBITER_PREFIX,
    ARBITER_TTL,
    DEAD_FACTOR,
    MIN_INTERVAL,
    ArbiterConfig,
    Policy,
    ServiceConfig,
    Trap,
)
from failover.shell.tclhost import TclCommandError, TclHost
from failover.shell.view import PeerView
from failover.states import BadState, State, parse_state

log = logging.getLogger("failover.policy")

SVC_SUBCOMMANDS = ("interval", "masters", "slaves", "start", "stop", "reclaim", "check", "timeout",
                   "holddown", "witnesses", "quorum", "tiebreaker", "announce", "failback", "flap", "arbiter")
_HOST_LISTS = ("masters", "slaves", "witnesses")
HOST_SUBCOMMANDS = ("port", "protocol", "address", "community", "deadtime", "monitor")
TRAP_KINDS = ("state", "peer", "remote")
ARBITERS = ("etcd",)
ARBITER_OPTIONS = ("-prefix", "-ttl", "-failsafe", "-cacert", "-cert", "-key", "-user", "-password")
ARBITER_USAGE = "etcd ENDPOINT ?ENDPOINT ...? ?-prefix P? ?-ttl S? ?-failsafe 0|1? ?-cacert F? ?-cert F? ?-key F? " \
                "?-user U? ?-password P?"
ADDRESS = re.compile(r"[A-Za-z0-9._%-]+(:\d{1,5})?|\[[0-9A-Fa-f:.%a-z]+\](:\d{1,5})?|[0-9A-Fa-f:]+")


def _name(kind: str, name: str) -> str:
    if not valid_name(name):
        raise TclCommandError(f"invalid {kind} name \"{name}\": use letters, digits and _.:@+-",
                              "BADNAME", name)
    return name


def _seconds(what: str, text: str, minimum: float = 0.0) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TclCommandError(f"expected a number of seconds for {what} but got \"{text}\"",
                              "BADVALUE", text) from None
    if not value >= minimum or value > 86400:
        raise TclCommandError(f"{what} must be between {minimum:g} and 86400 seconds, not {text}",
                              "BADVALUE", text)
    return value


def _whole(text: str, low: int, high: int) -> int | None:
    """``text`` as a whole number in low..high, else None (plain ASCII digits only:
    Python's isdigit() also takes '²', which int() then refuses)."""
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        return None
    return int(text)


def _state(text: str) -> State:
    try:
        return parse_state(text)
    except BadState as exc:
        raise TclCommandError(str(exc), "BADSTATE", text) from None


def _offline(svc: ServiceConfig) -> gates.Inputs:
    """The inputs of a run with nothing live (no engine, or one not started yet)."""
    deadtime, hosts = DEAD_FACTOR * svc.interval, svc.polled()
    return gates.Inputs(service=svc, local=State.RECOVER, views={}, memory=gates.Memory(),
                        now=gates.Now(time.monotonic(), time.time()), deadtimes=dict.fromkeys(hosts, deadtime),
                        intervals=dict.fromkeys(hosts, svc.interval), lease_ttl=deadtime,
                        deciding_since=float("-inf"), last_change=float("-inf"))


def _failback(service: str, values: tuple[str, ...]) -> dict[str, object]:
    """failback auto | manual | delay SECONDS | SECONDS."""
    if values in (("auto",), ("manual",)):
        return {"failback": values[0], "failback_delay": 0.0}
    if len(values) == 2 and values[0] == "delay" or len(values) == 1 and values[0][:1].isdigit():
        return {"failback": "delay", "failback_delay": _seconds("failback delay", values[-1])}
    raise _usage("failsvc", f"{service} failback auto|manual|delay SECONDS")


def _flap(service: str, values: tuple[str, ...]) -> dict[str, object]:
    """flap N MINUTES | off: more than N changes of holder within MINUTES hold the service."""
    if values == ("off",):
        return {"flap_count": 0}
    if len(values) != 2:
        raise _usage("failsvc", f"{service} flap CHANGES MINUTES|off")
    count = _whole(values[0], 1, 1000)
    if count is None:
        raise TclCommandError(f"flap: expected a number of holder changes 1..1000, not \"{values[0]}\"",
                              "BADVALUE", values[0])
    try:
        minutes = float(values[1])
    except ValueError:
        minutes = -1.0
    if not 0.1 <= minutes <= 1440:
        raise TclCommandError(f"flap: expected 0.1 to 1440 minutes, not \"{values[1]}\"", "BADVALUE", values[1])
    return {"flap_count": count, "flap_minutes": minutes}


def _arbiter(args: tuple[str, ...]) -> ArbiterConfig:
    """failarbiter etcd ENDPOINT ... ?-option value ...?, validated."""
    if not args or args[0] not in ARBITERS:
        if args:
            raise TclCommandError(f"unknown arbiter \"{args[0]}\": must be {', '.join(ARBITERS)}", "BADVALUE", args[0])
        raise _usage("failarbiter", ARBITER_USAGE)
    endpoints: list[str] = []
    options: dict[str, str] = {}
    rest = list(args[1:])
    while rest:
        word = rest.pop(0)
        if not word.startswith("-"):
            if options:
                raise TclCommandError(f"failarbiter: endpoint \"{word}\" after the options", "USAGE")
            try:
                parse_endpoint(word)
            except EtcdError as exc:
                raise TclCommandError(str(exc), "BADVALUE", word) from None
            endpoints.append(word)
            continue
        if word not in ARBITER_OPTIONS:
            raise TclCommandError(f"failarbiter: unknown option \"{word}\": must be {', '.join(ARBITER_OPTIONS)}",
                                  "BADOPTION", word)
        if not rest:
            raise TclCommandError(f"failarbiter: {word} needs a value", "USAGE")
        options[word[1:]] = rest.pop(0)
    if not endpoints:
        raise TclCommandError("failarbiter etcd: no endpoint given (http://HOST:2379 or https://HOST:2379)", "USAGE")
    ttl = ARBITER_TTL
    if "ttl" in options:
        text = options.pop("ttl")
        try:
            ttl = float(text)
        except ValueError:
            ttl = -1.0
        if not 2 <= ttl <= 3600:  # etcd counts whole seconds; the stop gets a third of it
            raise TclCommandError(f"failarbiter -ttl: expected 2 to 3600 seconds, not \"{text}\"", "BADVALUE", text)
    failsafe = options.pop("failsafe", "1")
    if failsafe not in ("0", "1"):
        raise TclCommandError(f"failarbiter -failsafe: expected 0 or 1, not \"{failsafe}\"", "BADVALUE", failsafe)
    prefix = options.pop("prefix", ARBITER_PREFIX)
    if not prefix or any(c.isspace() for c in prefix):
        raise TclCommandError(f"failarbiter -prefix: \"{prefix}\" is empty or has blanks", "BADVALUE", prefix)
    for option in ("cacert", "cert", "key"):
        if option in options and not Path(options[option]).is_file():
            raise TclCommandError(f"failarbiter -{option}: no such file \"{options[option]}\"", "BADVALUE",
                                  options[option])
    if "key" in options and "cert" not in options:
        raise TclCommandError("failarbiter: -key without -cert", "USAGE")
    if ("user" in options) != ("password" in options):
        raise TclCommandError("failarbiter: -user and -password go together", "USAGE")
    if ("cert" in options or "cacert" in options) and not all(e.startswith("https://") for e in endpoints):
        raise TclCommandError("failarbiter: -cacert and -cert need https:// endpoints", "USAGE")
    return ArbiterConfig(args[0], tuple(endpoints), prefix, ttl, failsafe=failsafe == "1", **options)


def _usage(cmd: str, usage: str) -> TclCommandError:
    return TclCommandError(f"wrong # args: should be \"{cmd} {usage}\"", "USAGE")


class Runtime(Protocol):
    """What the commands use of a running failsh (engine.py's Engine)."""

    scheduling: bool

    def peer_view(self, name: str) -> PeerView | None: ...
    def local_state(self, name: str) -> State: ...
    def set_local(self, name: str, state: State, reason: str) -> None: ...
    def run_action(self, name: str, kind: str) -> State: ...
    def set_scheduling(self, on: bool) -> None: ...
    def request_exit(self, status: int) -> None: ...
    def policy_changed(self) -> None: ...
    def gate_inputs(self, name: str) -> gates.Inputs | None: ...
    def arbiter_token(self, name: str) -> int | None: ...


class Commands:
    """Binds the Tcl commands to a policy (while loading) and an engine (at run time)."""

    def __init__(self, tcl: TclHost, policy: Policy, engine: Runtime | None = None) -> None:
        self.tcl = tcl
        self.policy = policy
        self.engine = engine
        for name in ("failsvc", "failhost", "failtrap", "getstate", "setstate", "peers",
                     "startservice", "stopservice", "services", "hosts", "node", "whatif", "schedule", "exit",
                     "failarbiter"):
            tcl.expose(name, getattr(self, name))
        tcl.expose("fo::token", self.fo_token)
        for name, fn in (("healthy", healthy), ("fo::log", fo_log), ("fo::ipaddrs", fo_ipaddrs),
                         ("fo::ipcanon", fo_ipcanon), ("fo::announce", fo_announce)):
            tcl.expose(name, fn)
        # fo::garp runs this (+ IFACE ADDRESS --count N --delay S [--wait S]) in the background.
        tcl.interp.call("set", "::fo::announcer", (sys.executable, "-m", "failover.shell.announce"))

    def _engine(self, cmd: str) -> Runtime:
        if self.engine is None:
            raise TclCommandError(f"{cmd}: not available while the policy is loading", "NOTREADY")
        return self.engine

    def _changed(self) -> None:
        if self.engine is not None:
            self.engine.policy_changed()

    # 0.5 commands ------------------------------------------------------------
    def failsvc(self, *args: str) -> object:
        if not args:
            raise _usage("failsvc", "service ?subcommand value ...?")
        svc_name = _name("service", args[0])
        if len(args) == 1:
            return self._describe(svc_name)
        sub, values = args[1], args[2:]
        if sub not in SVC_SUBCOMMANDS:
            raise TclCommandError(f"unknown failsvc subcommand \"{sub}\": must be "
                                  f"{', '.join(SVC_SUBCOMMANDS)}", "BADSUBCOMMAND", sub)
        # validate first: a failing command leaves no half-made service behind
        value: object
        if sub == "failback":
            value = _failback(svc_name, values)
        elif sub == "flap":
            value = _flap(svc_name, values)
        elif sub == "arbiter":
            if values not in (("etcd",), ("none",)):
                raise _usage("failsvc", f"{svc_name} arbiter etcd|none")
            value = "" if values[0] == "none" else values[0]
        elif sub in _HOST_LISTS:  # one braced list or several words: flatten both
            try:
                value = [_name("host", h) for v in values for h in self.tcl.split(v)]
            except tkinter.TclError as exc:
                raise TclCommandError(f"invalid host list for {sub}: {exc}", "BADVALUE") from None
        elif len(values) != 1:
            raise _usage("failsvc", f"{svc_name} {sub} value")
        elif sub == "interval":
            value = _seconds("interval", values[0], MIN_INTERVAL)
        elif sub == "timeout":
            value = _seconds("timeout", values[0], 0.01)
        elif sub == "holddown":
            value = _seconds("holddown", values[0])
        elif sub == "quorum":
            value = _whole(values[0], 0, 100)
            if value is None:
                raise TclCommandError(f"quorum must be a number of witnesses 0..100, not \"{values[0]}\"",
                                      "BADVALUE", values[0])
        else:
            value = values[0]
        svc = self.policy.service(svc_name)
        if sub in _HOST_LISTS and isinstance(value, list):
            self.policy.set_hosts(svc, sub, value)
        elif isinstance(value, dict):  # failback, flap: several fields
            for key, field in value.items():
                setattr(svc, key, field)
        else:
            setattr(svc, sub, value)
        where = self.tcl.where()  # for failsh --check: FILE:LINE of what it finds
        svc.where[sub] = where
        svc.where.setdefault("", where)  # the service's first failsvc
        self._changed()
        return ""

    def _describe(self, name: str) -> tuple:
        svc = self.policy.services.get(name)
        if svc is None:
            raise TclCommandError(f"unknown service \"{name}\"", "NOSERVICE", name)
        return ("interval", svc.interval, "masters", tuple(svc.masters), "slaves", tuple(svc.slaves),
                "start", svc.start, "stop", svc.stop, "reclaim", svc.reclaim, "check", svc.check,
                "timeout", svc.timeout, "holddown", svc.holddown, "witnesses", tuple(svc.witnesses),
                "quorum", svc.quorum, "tiebreaker", svc.tiebreaker, "announce", svc.announce,
                "failback", svc.failback_text(), "flap", svc.flap_text(), "arbiter", svc.arbiter or "none")

    def failhost(self, *args: str) -> object:
        if len(args) != 3:
            raise _usage("failhost", "hostname port|protocol|address|community|deadtime|monitor value")
        name = _name("host", args[0])
        sub, value = args[1], args[2]
        parsed: object
        if sub in ("port", "monitor"):
            low = 0 if sub == "monitor" else 1  # monitor 0: that host's failsh sends no hints
            parsed = _whole(value, low, 65535)
            if parsed is None:
                raise TclCommandError(f"invalid port \"{value}\": expected {low}..65535", "BADVALUE", value)
        elif sub == "protocol":
            if value.lower() not in ("tcp", "udp"):
                raise TclCommandError(f"invalid protocol \"{value}\": must be tcp or udp", "BADVALUE", value)
            parsed = value.lower()  # kept for 0.5 scripts; ZeroMQ always uses TCP
        elif sub == "address":
            if not ADDRESS.fullmatch(value):
                raise TclCommandError(f"invalid address \"{value}\": expected a host name or an IP address, "
                                      "optionally with :PORT", "BADVALUE", value)
            parsed = value
        elif sub == "community":
            if not value or len(value) > 128:
                raise TclCommandError("a community is 1 to 128 characters", "BADVALUE", value)
            parsed = value
        elif sub == "deadtime":
            parsed = _seconds("deadtime", value, 0.05)
        else:
            raise TclCommandError(f"unknown failhost subcommand \"{sub}\": must be "
                                  f"{', '.join(HOST_SUBCOMMANDS)}", "BADSUBCOMMAND", sub)
        if name == self.policy.node:
            return ""  # checked, not kept: one file serves all hosts, and this one is not polled
        host = self.policy.host(name)
        setattr(host, sub, parsed)
        host.where[sub] = self.tcl.where()
        self._changed()
        return ""

    def failarbiter(self, *args: str) -> object:
        """failarbiter etcd ENDPOINT ... ?options?: the etcd cluster of the arbitrated services
        (failsvc NAME arbiter etcd); failarbiter alone: the setting, without the password."""
        if not args:
            a = self.policy.arbiter
            if a is None:
                return ""
            return (a.kind, *a.endpoints, "-prefix", a.prefix, "-ttl", a.ttl, "-failsafe", int(a.failsafe),
                    *(x for opt in ("cacert", "cert", "key", "user") if (v := getattr(a, opt)) for x in (f"-{opt}", v)))
        self.policy.arbiter = _arbiter(args)
        self._changed()
        return ""

    def fo_token(self, service: str) -> str:
        """fo::token SERVICE: the fencing token of the arbiter's key this host holds for the
        service (its etcd create_revision, larger for every new holder); "" if it holds none."""
        token = self._engine("fo::token").arbiter_token(self._known(service))
        return "" if token is None else str(token)

    def failtrap(self, *args: str) -> object:
        if args == ("list",):
            return tuple((t.kind, t.pattern, t.script) for t in self.policy.traps)
        if len(args) == 3 and args[0] == "delete":
            self.policy.traps = [t for t in self.policy.traps if (t.kind, t.pattern) != (args[1], args[2])]
            return ""
        if len(args) != 3:
            raise _usage("failtrap", "state|peer|remote NAME|* script  |  failtrap list  |  "
                         "failtrap delete KIND NAME")
        kind, pattern, script = args
        if kind not in TRAP_KINDS:
            raise TclCommandError(f"unknown failtrap event \"{kind}\": must be {', '.join(TRAP_KINDS)}",
                                  "BADSUBCOMMAND", kind)
        if pattern != "*":
            _name("service" if kind != "peer" else "host", pattern)
        self.policy.traps.append(Trap(kind, pattern, script, self.tcl.where()))
        return ""

    # New commands -----------------------------------------------------------
    def getstate(self, service: str, host: str = "") -> str:
        engine = self._engine("getstate")
        if host and host != self.policy.node:
            view = engine.peer_view(host)
            if view is None:
                raise TclCommandError(f"unknown host \"{host}\": not a master or slave of any service",
                                      "NOPEER", host)
            state = view.state_of(service)
            return state.value if state else "FAIL"
        return engine.local_state(self._known(service)).value

    def setstate(self, service: str, state: str, reason: str = "set from Tcl") -> str:
        self._engine("setstate").set_local(self._known(service), _state(state), reason)
        return ""

    def startservice(self, service: str) -> str:
        return self._engine("startservice").run_action(self._known(service), "start").value

    def stopservice(self, service: str) -> str:
        return self._engine("stopservice").run_action(self._known(service), "stop").value

    def peers(self, service: str = "") -> tuple:
        engine = self._engine("peers")
        names = self.policy.services[self._known(service)].peers() if service else sorted(self.policy.hosts)
        out = []
        for name in names:
            view = engine.peer_view(name)
            if view is None:
                continue
            entry = ["host", name, "reachable", int(view.status == "up"), "status", view.status,
                     "last_seen", round(view.last_seen, 3) if view.last_seen else "",
                     "failsh", int(view.lease is not None)]
            if service:
                state = view.state_of(service)
                entry += ["role", "master" if name in self.policy.services[service].masters else "slave",
                          "state", state.value if state else "FAIL"]
            out.append(tuple(entry))
        return tuple(out)

    def services(self) -> tuple:
        return tuple(sorted(self.policy.services))

    def hosts(self) -> tuple:
        return tuple(sorted(self.policy.hosts))

    def node(self) -> str:
        return self.policy.node

    def whatif(self, service: str, *pairs: str) -> str:
        """whatif SERVICE ?local STATE? ?HOST STATE ...?: what a run would do now, without acting.

        The states given are put on top of the live inputs of a run (gates.py), which then
        decide as failsh would, every gate included; the tie-breaker is never run (the
        answer is then that it would be asked).  Without a running engine the local state
        is RECOVER and every host not given counts as not answering.
        """
        svc = self.policy.services[self._known(service)]
        if len(pairs) % 2:
            raise _usage("whatif", "service ?local STATE? ?host STATE ...?")
        given = dict(zip(pairs[::2], pairs[1::2], strict=True))
        for host in given:
            if host != "local" and host not in svc.peers():
                raise TclCommandError(f"host \"{host}\" is neither master nor slave of {service}", "NOPEER", host)
        local = _state(given.pop("local")) if "local" in given else None
        states = {h: None if v.upper() == "DOWN" else _state(v) for h, v in given.items()}
        live = self.engine.gate_inputs(service) if self.engine is not None else None
        if live is None:
            live = _offline(svc)
            states = {**{h: None for h in svc.polled()}, **states}
        verdict = gates.evaluate(gates.suppose(live, local, states))
        if verdict.announce:
            return f"{verdict.note}; would re-announce ({', '.join(verdict.announce)} may have held it)"
        return verdict.note

    def schedule(self, mode: str = "") -> str:
        engine = self._engine("schedule")
        if mode:
            if mode not in ("on", "off"):
                raise _usage("schedule", "?on|off?")
            engine.set_scheduling(mode == "on")
        return "on" if engine.scheduling else "off"

    def exit(self, status: str = "0") -> str:
        """Tcl's exit would end the process at once, services UP and lease held: instead
        failsh finishes the current script, then stops as on SIGTERM, with ``status``."""
        code = _whole(status, 0, 255)
        if code is None:
            raise TclCommandError(f"invalid exit status \"{status}\": expected 0..255", "BADVALUE", status)
        self._engine("exit").request_exit(code)
        return ""

    def _known(self, service: str) -> str:
        if service not in self.policy.services:
            raise TclCommandError(f"unknown service \"{service}\"", "NOSERVICE", service)
        return service


# Commands that need neither the policy nor the engine ----------------------------------
def healthy(*args: str) -> int:
    """healthy ?-unreachable 0|1? CHECK ?HOST[:PORT]? ?TIMEOUT?: 1 if hc there reports CHECK
    UP, else 0.

    An hc that does not answer counts as unhealthy (or as -unreachable says); an unknown
    check is an error.
    """
    unreachable = False
    if args[:1] == ("-unreachable",):
        if len(args) < 2 or args[1] not in ("0", "1"):
            raise _usage("healthy", "?-unreachable 0|1? check ?host[:port]? ?timeout?")
        unreachable, args = args[1] == "1", args[2:]
    if not 1 <= len(args) <= 3:
        raise _usage("healthy", "?-unreachable 0|1? check ?host[:port]? ?timeout?")
    check, where, timeout = [*args, *("localhost", "1")[len(args) - 1:]]
    try:
        return int(hc_healthy(where, check, timeout=_seconds("timeout", timeout, 0.01), unreachable=unreachable))
    except RequestFailed as exc:
        raise TclCommandError(f"healthy {check}: {exc}", "HC", exc.code) from None
    except ClientError as exc:
        raise TclCommandError(f"healthy {check}: {exc}", "HC") from None


def fo_log(level: str, *message: str) -> str:
    """fo::log LEVEL MESSAGE ...: a line in failsh's log (facility policy)."""
    levels = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO,
              "warning": logging.WARNING, "error": logging.ERROR}
    if level not in levels:
        raise _usage("fo::log", "debug|info|notice|warning|error message")
    log.log(levels[level], "%s", " ".join(message))
    return ""


def fo_ipaddrs(*args: str) -> tuple:
    """fo::ipaddrs ?-prefix? DEVICE: every address (IPv4 and IPv6, canonical; with -prefix
    as ADDRESS/PREFIXLEN, the length the interface has) on DEVICE, from ``ip -j addr show``;
    empty if the device does not exist."""
    with_prefix = args[:1] == ("-prefix",)
    if len(args) != 1 + with_prefix:
        raise TclCommandError('wrong # args: should be "fo::ipaddrs ?-prefix? device"', "TCL", "WRONGARGS")
    dev = args[-1]
    try:
        r = subprocess.run(["ip", "-j", "addr", "show", "dev", dev], capture_output=True, text=True,
                           timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        raise TclCommandError(f"fo::ipaddrs {dev}: ip failed: {exc}", "IP") from None
    if r.returncode != 0:
        return ()
    try:
        return tuple(str(ipaddress.ip_address(a["local"])) + (f"/{int(a['prefixlen'])}" if with_prefix else "")
                     for link in json.loads(r.stdout or "[]") for a in link.get("addr_info", []) if "local" in a)
    except (ValueError, TypeError, KeyError) as exc:
        raise TclCommandError(f"fo::ipaddrs {dev}: unexpected output of ip -j: {exc}", "IP") from None


def fo_announce(*args: str) -> str:
    """fo::announce DEVICE ADDRESS: one gratuitous ARP (IPv4) or unsolicited neighbour
    advertisement (IPv6) from failsh itself, at once, without asking whether DEVICE holds
    ADDRESS: for fo::ipup, which has just added it (fo::garp's announcer starts a Python
    and runs ip before its first; the clients would wait for that)."""
    if len(args) != 2:
        raise _usage("fo::announce", "device address")
    try:
        announce.send_once(args[0], announce.parse_address(args[1]))
    except announce.AnnounceError as exc:
        raise TclCommandError(f"fo::announce: {exc}", "ANNOUNCE") from None
    return ""


def fo_ipcanon(addr: str) -> str:
    """fo::ipcanon ADDRESS?/PREFIX?: the address in canonical form (IPv6 compressed)."""
    try:
        return str(ipaddress.ip_interface(addr).ip)
    except ValueError:
        raise TclCommandError(f"not an IP address: \"{addr}\"", "BADVALUE", addr) from None
