"""``failsh --check``: what ``keepalived -t`` or ``crm_verify`` would find in a policy.

The file is loaded once for every host its masters and slaves lists name (``-N`` set to
that host, as each host runs it), and the policies it gives are compared:

* errors (failsh --check exits 5): a start, stop, reclaim, check, tie-breaker, announce
  or trap script that calls a command that does not exist once the file is loaded (a
  misspelt or missing proc); lists that do not form one order across the hosts (two
  hosts each other's masters both wait forever, each other's slaves both start; longer
  cycles; a host in both lists); a host whose dead time is not longer than the interval
  it is polled at (it would count FAIL between two polls); the file failing to load
  for one of the hosts;
* warnings (exit 0): a host in neither list of a service it runs, a host that lists
  another as its slave while that one does not list it back, host names that do not
  resolve and have no address, a dead time that one lost poll exceeds.

The rule for scripts: a script is split into its top-level commands as Tcl would (a
piece ends at a newline or semicolon once ``info complete`` says it is whole); the first
word of each must name a command that exists after the load: a proc (the file's or the
library's), a Tcl command or one of failsh's.  A first word computed at run time (``$cmd``,
``[...]``) is not checked.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import attrs

from failover.shell.policy import Policy, ServiceConfig
from failover.shell.tclhost import TclHost

ERROR = "error"
WARNING = "warning"
SCRIPTS = ("start", "stop", "reclaim", "check", "tiebreaker", "announce")
MAX_HOSTS = 64          # hosts evaluated at most
RESOLVE_TIMEOUT = 2.0   # s for all host name lookups together


@attrs.frozen
class Finding:
    level: str      # ERROR or WARNING
    where: str      # FILE:LINE (or FILE), "" if unknown
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.level}: {self.message}" if self.where else f"{self.level}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"level": self.level, "where": self.where, "message": self.message}


@attrs.frozen
class Loaded:
    """The policy file as one host runs it."""

    host: str
    policy: Policy
    tcl: TclHost


Loader = Callable[[str], "Loaded | str"]  # host -> its policy, or why it does not load ("FILE:LINE: ...")


def verify(first: Loaded, load: Loader, addresses: Mapping[str, str], dead_factor: float, path: Path,
           resolve: Callable[[Iterable[str]], set[str]] | None = None, heartbeats: bool = False) -> list[Finding]:
    """Every finding for the file as ``first.host`` loaded it and as every host it names
    would (``load``); ``addresses``: failsh -P; ``resolve``: the names among those given
    that resolve (default: DNS and /etc/hosts); ``heartbeats``: failsh --heartbeat-key."""
    findings: list[Finding] = []
    loaded = {first.host: first}
    todo = sorted(first.policy.named() - {first.host})
    while todo and len(loaded) < MAX_HOSTS:
        host = todo.pop(0)
        if host in loaded:
            continue
        result = load(host)
        if isinstance(result, str):
            where, _, message = result.partition(": ") if result.startswith(str(path)) else ("", "", result)
            findings.append(Finding(ERROR, where, f"the file does not load as host {host}: {message}"))
            continue
        loaded[host] = result
        todo += sorted(result.policy.named() - set(loaded) - set(todo))
    for one in loaded.values():
        findings += _scripts(one)
        findings += _deadtimes(one, dead_factor, heartbeats)
        findings += _arbiter(one)
    findings += _in_no_list(loaded, first.host)
    findings += _order(loaded)
    findings += _addresses(loaded, first.host, addresses, path, resolve or _resolves)
    unique = list(dict.fromkeys(findings))
    return sorted(unique, key=lambda f: (f.level != ERROR, _line_key(f.where)))


def _line_key(where: str) -> tuple[str, int]:
    file, _, line = where.rpartition(":")
    return (file, int(line)) if line.isdigit() else (where, 0)


def _where(svc: ServiceConfig, *keys: str) -> str:
    for key in (*keys, ""):
        if svc.where.get(key):
            return svc.where[key]
    return ""


# Scripts -------------------------------------------------------------------------
def commands_of(tcl: TclHost, script: str) -> list[str] | None:
    """The first words of the top-level commands of ``script`` ("" for one computed at
    run time); None if it is not a complete script."""
    if not _complete(tcl, script):
        return None
    words, piece = [], ""
    for part in _pieces(script):
        piece += part
        if part not in ("\n", ";") or not _complete(tcl, piece[:-1]):
            continue
        if part == ";" and piece.lstrip().startswith("#"):  # a comment ends at the end of its line only
            continue
        words += _first_word(tcl, piece[:-1])
        piece = ""
    words += _first_word(tcl, piece)
    return words


def _pieces(script: str) -> list[str]:
    out, start = [], 0
    for i, ch in enumerate(script):
        if ch in "\n;":
            out += [script[start:i], ch]
            start = i + 1
    return [*out, script[start:]]


def _complete(tcl: TclHost, text: str) -> bool:
    return bool(int(tcl.interp.call("info", "complete", text)))


def _first_word(tcl: TclHost, command: str) -> list[str]:
    text = command.strip()
    if not text or text.startswith("#"):
        return []
    try:
        words = tcl.split(text)
    except Exception:  # not a list (e.g. "a"b): Tcl decides at run time
        return [""]
    if not words:
        return []
    first = words[0]
    return ["" if "$" in first or "[" in first or "\\" in first else first]


def _exists(tcl: TclHost, name: str) -> bool:
    found = tcl.interp.call("namespace", "eval", "::", ["namespace", "which", "-command", name])
    if str(found):
        return True
    return bool(int(tcl.interp.call("info", "exists", f"::auto_index({name})")))


def _scripts(one: Loaded) -> list[Finding]:
    findings = []
    checks: list[tuple[str, str, str]] = []  # (where, what, script)
    for name, svc in sorted(one.policy.services.items()):
        for kind in SCRIPTS:
            script = getattr(svc, kind)
            if script:
                checks.append((_where(svc, kind), f"{name}: {kind} script {_short(script)}", script))
    for trap in one.policy.traps:
        checks.append((trap.where, f"failtrap {trap.kind} {trap.pattern} script {_short(trap.script)}", trap.script))
    for where, what, script in checks:
        words = commands_of(one.tcl, script)
        if words is None:
            findings.append(Finding(ERROR, where, f"{what} is not a complete Tcl script"))
            continue
        for word in words:
            if word and not _exists(one.tcl, word):
                findings.append(Finding(ERROR, where, f"{what} calls \"{word}\", which is not defined "
                                                      "(no proc or command of that name once the file is loaded)"))
    return findings


def _arbiter(one: Loaded) -> list[Finding]:
    """A service under the arbiter in a file without failarbiter would never start."""
    if one.policy.arbiter is not None:
        return []
    return [Finding(ERROR, _where(svc, "arbiter"), f"{name} is under the arbiter (failsvc {name} arbiter etcd) "
                    "but the file has no failarbiter: it would never start")
            for name, svc in sorted(one.policy.services.items()) if svc.arbiter]


def _short(script: str) -> str:
    one_line = " ".join(script.split())
    return f'"{one_line[:60]}{"..." if len(one_line) > 60 else ""}"'


# Dead times -------------------------------------------------------------------------
def _deadtimes(one: Loaded, dead_factor: float, heartbeats: bool) -> list[Finding]:
    """A dead time not longer than the poll interval counts a live host FAIL between two
    polls; one shorter than two intervals, a lost poll does (not with heartbeats, which
    vouch for the host several times per dead time)."""
    findings = []
    policy = one.policy
    for name, host in sorted(policy.hosts.items()):
        services = [policy.services[s] for s in policy.services_of(name)]
        if not services:
            continue
        interval = policy.interval_for(name)
        dead = host.deadtime or dead_factor * interval
        fastest = min(services, key=lambda s: s.interval)
        where = host.where.get("deadtime") or _where(fastest, "interval")
        given = "failhost deadtime" if host.deadtime else f"--dead-factor {dead_factor:g} x interval"
        if dead <= interval:
            findings.append(Finding(ERROR, where, f"on {one.host}: {name}'s dead time {dead:g} s ({given}) is not "
                                                  f"longer than the interval it is polled at ({interval:g} s, service "
                                                  f"{fastest.name}): it would count FAIL between two polls"))
        elif dead < 2 * interval and not heartbeats:
            findings.append(Finding(WARNING, where, f"on {one.host}: {name}'s dead time {dead:g} s ({given}) is less "
                                                    f"than two intervals ({interval:g} s, service {fastest.name}): "
                                                    "one lost poll makes it count FAIL"))
    return findings


# Lists -----------------------------------------------------------------------------------
def _members(loaded: Mapping[str, Loaded], name: str) -> set[str]:
    """The hosts that some host's lists of service ``name`` name (the file may build each
    host's lists from its own name, leaving it out)."""
    return {h for one in loaded.values() if (svc := one.policy.services.get(name)) is not None for h in svc.listed()}


def _in_no_list(loaded: Mapping[str, Loaded], node: str) -> list[Finding]:
    findings = []
    names = sorted({n for one in loaded.values() for n in one.policy.services})
    members = {name: _members(loaded, name) for name in names}
    for host, one in loaded.items():
        for name, svc in sorted(one.policy.services.items()):
            if (svc.masters or svc.slaves) and host not in members[name]:
                what = f"{host} (this host, -N)" if host == node else host
                findings.append(Finding(WARNING, _where(svc, "masters", "slaves"),
                                        f"{name}: {what} is in no host's masters or slaves list, but runs it "
                                        f"(between masters {', '.join(svc.masters) or '-'} and slaves "
                                        f"{', '.join(svc.slaves) or '-'}): check -N / $FO_NODE, or list it"))
    return findings


def _order(loaded: Mapping[str, Loaded]) -> list[Finding]:
    """The masters/slaves lists of every host must form one order per service."""
    findings = []
    names = sorted({n for one in loaded.values() for n in one.policy.services})
    for name in names:
        above: dict[tuple[str, str], tuple[str, str]] = {}  # (higher, lower) -> (stated by, where)
        members = _members(loaded, name)
        for host, one in sorted(loaded.items()):
            svc = one.policy.services.get(name)
            if svc is None:
                continue
            both = sorted(set(svc.masters) & set(svc.slaves))
            if both:
                findings.append(Finding(ERROR, _where(svc, "slaves"), f"{name}: on {host}, {', '.join(both)} "
                                                                     f"{'is' if len(both) == 1 else 'are'} in both its "
                                                                     "masters and its slaves list"))
            if host not in members:  # a host in no list: warned about in _in_no_list
                continue
            for m in svc.masters:
                above.setdefault((m, host), (host, _where(svc, "masters")))
            for s in svc.slaves:
                above.setdefault((host, s), (host, _where(svc, "slaves")))
        reported: set[frozenset[str]] = set()
        for (hi, lo), (by, where) in sorted(above.items()):
            back = above.get((lo, hi))
            if back is None or frozenset((hi, lo)) in reported or back[0] == by:
                continue
            reported.add(frozenset((hi, lo)))
            if by == lo:  # lo says hi is its master; hi says lo is its master
                findings.append(Finding(ERROR, where, f"{name}: {hi} and {lo} are each other's masters: both wait "
                                                      "for the other forever"))
            else:  # hi says lo is its slave; lo says hi is its slave
                findings.append(Finding(ERROR, where, f"{name}: {hi} and {lo} are each other's slaves: both may start "
                                                      "it at once"))
        cycle = _cycle({(hi, lo) for hi, lo in above if frozenset((hi, lo)) not in reported})
        if cycle and len(cycle) > 3:
            findings.append(Finding(ERROR, above[(cycle[0], cycle[1])][1],
                                    f"{name}: the masters/slaves lists do not form one order: {' > '.join(cycle)}"))
        for (hi, lo), (by, where) in sorted(above.items()):
            other = loaded.get(lo)
            svc = other.policy.services.get(name) if other is not None else None
            if by == hi and svc is not None and lo in members and hi not in svc.masters + svc.slaves:
                findings.append(Finding(WARNING, where, f"{name}: {hi} counts {lo} as its slave, but {lo} does not "
                                                        f"list {hi}: {lo} may start it while {hi} holds it"))
    return findings


def _cycle(edges: set[tuple[str, str]]) -> list[str]:
    """A cycle in the 'outranks' graph, as a path that ends where it starts; [] if none."""
    nxt: dict[str, list[str]] = {}
    for hi, lo in sorted(edges):
        nxt.setdefault(hi, []).append(lo)
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for lo in nxt.get(node, []):
            if state.get(lo) == 1:
                return [*path[path.index(lo):], lo]
            if lo not in state and (found := visit(lo)):
                return found
        path.pop()
        state[node] = 2
        return []
    for node in sorted(nxt):
        if node not in state and (found := visit(node)):
            return found
    return []


# Names ----------------------------------------------------------------------------
def _addresses(loaded: Mapping[str, Loaded], node: str, addresses: Mapping[str, str], path: Path,
               resolve: Callable[[Iterable[str]], set[str]]) -> list[Finding]:
    wheres: dict[str, str] = {}
    given = set(addresses)
    for one in loaded.values():
        for name, host in one.policy.hosts.items():
            if host.address:
                given.add(name)
        for svc in one.policy.services.values():
            for h in svc.masters + svc.slaves + svc.witnesses:
                wheres.setdefault(h, _where(svc, "masters" if h in svc.masters else
                                            "slaves" if h in svc.slaves else "witnesses"))
    names = sorted(set(wheres) - given - {node})  # this host's own faild is --faild
    found = resolve(names)
    return [Finding(WARNING, wheres[h] or str(path), f"host {h} does not resolve and has no address: give one with "
                                                     f"failhost {h} address ADDRESS (or failsh -P {h}=ADDRESS)")
            for h in names if h not in found]


def _resolves(names: Iterable[str]) -> set[str]:
    """The names that resolve (DNS, /etc/hosts) within RESOLVE_TIMEOUT, looked up at once."""
    found: set[str] = set()
    lock = threading.Lock()

    def one(name: str) -> None:
        try:
            socket.getaddrinfo(name, None)
        except (OSError, UnicodeError):
            return
        with lock:
            found.add(name)
    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(RESOLVE_TIMEOUT)
    with lock:
        return set(found)
