"""Network-namespace test bed: N hosts and a client on one bridge, for tests and benchmarks.

Topology (all created by this module, all inside namespaces it owns)::

    <prefix>-sw      bridge br0; one port p-<name> per node
    <prefix>-h1 ...  eth0 = 10.99.N.1, .2, ...   fd99:N::1, ::2, ...   (hosts: faild/failsh,
                                                                  keepalived, vipserver)
    <prefix>-cl      eth0 = 10.99.N.200           fd99:N::200          (the client: vipclient)
    VIP              10.99.N.100/24               fd99:N::100/64 (vip6)

The IPv6 addresses are ULAs added with nodad (usable at once); nothing routes fd99:N::/64
outside the bed either.

Safety: the root namespace has no route to 10.99.N.0/24, so a connection from it would go to
the default gateway, off the machine.  Every program that sends traffic is therefore started
with ``ip netns exec``; the root namespace only runs ``ip``/``tc``/``nft`` configuration commands.

Cleanup: ``close()`` (called by ``__exit__``, by atexit, and on SIGTERM/SIGHUP, after which
the process still dies of the signal) kills every process group it started, then every
process left in its namespaces, then deletes the namespaces (which destroys the veths and the
bridge) and its temp dir.  A run that was killed
with SIGKILL leaves its namespaces behind; ``stale_cleanup()`` (run by every new Testbed)
removes those whose owner pid is gone.

Usage::

    with Testbed(hosts=["h1", "h2"]) as tb:
        tb.start_vipserver("h1")
        tb.vip_add("h1")
        client, results = tb.start_vipclient()
        ...
        tb.link_down("h1")
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from failover import ports
from failover.lab.vipclient import Result

log = logging.getLogger("failover.testbed")

T = TypeVar("T")

# Default names are fo<pid>x<serial>-<node>, so stale_cleanup can tell whose they are.
_DEFAULT_PREFIX_RE = re.compile(r"^fo(\d+)x(\d+)$")
_NS_RE = re.compile(r"^(fo\d+x\d+)-[a-z][a-z0-9]*$")
_PREFIX_RE = re.compile(r"^fo[a-z0-9]{1,11}$")
_NODE_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")  # p-<name> must fit IFNAMSIZ (15)
_SWITCH = "sw"
_LOSS_TABLE = "fo_loss"
_BLOCK_TABLE = "fo_block"
_TMP_TAG = "-testbed-"  # temp dirs are <prefix>-testbed-XXXX

_serial = 0
_serial_lock = threading.Lock()
_live: set[Testbed] = set()
_signals_installed = False
_pending_signal: int | None = None


class TestbedError(RuntimeError):
    """A test bed command failed or a wait ran out of time."""

    __test__ = False  # not a pytest test class despite the name


@attrs.frozen
class Host:
    """One node of the test bed: its logical name, namespace, address and switch port."""

    name: str
    ns: str
    addr: str
    port: str  # the bridge-side veth in the switch namespace
    addr6: str = ""


def available() -> str | None:
    """None if namespace test beds can run here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    if shutil.which("ip") is None:
        return "iproute2 'ip' not installed"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError) as e:
        return f"'ip netns' unusable: {e}"
    return None


def _cmd(argv: Sequence[str], *, check: bool = True, timeout: float = 10.0,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a configuration command in the root namespace (ip/tc/nft only, never traffic)."""
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise TestbedError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def _ns_pids(ns: str) -> list[int]:
    r = _cmd(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in r.stdout.split() if x.isdigit()]


def _kill_ns_processes(ns: str, deadline: float = 2.0) -> None:
    """SIGKILL whatever still runs in a namespace of ours, so its deletion really frees it."""
    end = time.monotonic() + deadline
    for _ in range(20):
        pids = _ns_pids(ns)
        if not pids or time.monotonic() > end:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def _delete_ns(ns: str) -> None:
    _kill_ns_processes(ns)
    _cmd(["ip", "netns", "del", ns], check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    """Names from ``ip netns list`` (first word of each line)."""
    return [line.split()[0] for line in _cmd(["ip", "netns", "list"]).stdout.splitlines() if line.strip()]


def _owner_dead(prefix: str) -> bool:
    """True if `prefix` is of the default fo<pid>x<n> form and that pid is gone."""
    m = _DEFAULT_PREFIX_RE.match(prefix)
    return m is not None and not _pid_alive(int(m.group(1)))


def stale_cleanup(prefix: str | None = None) -> list[str]:
    """Remove test-bed leftovers of crashed runs; returns the namespaces deleted.

    Without `prefix`: namespaces ``fo<pid>x<n>-*`` and temp dirs ``fo<pid>x<n>-testbed-*``
    whose pid is no longer alive.  With `prefix`: every ``<prefix>-*`` namespace and
    ``<prefix>-testbed-*`` dir (a fixed prefix reused by a rerun owns those names).
    """
    removed = []
    for ns in list_namespaces():
        if prefix is not None:
            stale = ns.startswith(prefix + "-")
        else:
            m = _NS_RE.match(ns)
            stale = m is not None and _owner_dead(m.group(1))
        if stale:
            _delete_ns(ns)
            removed.append(ns)
    for d in Path(tempfile.gettempdir()).glob(f"{prefix or 'fo*'}{_TMP_TAG}*"):
        owner = d.name.split(_TMP_TAG, 1)[0]
        if (owner == prefix or prefix is None and _owner_dead(owner)) and d.is_dir() and not d.is_symlink():
            shutil.rmtree(d, ignore_errors=True)
    if removed:
        log.warning("stale_cleanup removed %s", " ".join(removed))
    return removed


def _close_all() -> None:
    for tb in list(_live):
        tb.close()


def _on_signal(signum: int, frame: Any) -> None:
    # Clean up, then die of the signal as the default action would (exit status and all): a
    # SystemExit instead would be caught by pytest as one failed test and the run would go on.
    global _pending_signal
    if any(tb._closing for tb in _live):
        _pending_signal = signum  # let that cleanup finish; close() delivers the signal again
        return
    _close_all()
    _die(signum)


def _die(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    global _signals_installed
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return
    _signals_installed = True
    atexit.register(_close_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        # Only take over the default action (die); a handler someone else set stays theirs.
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _on_signal)


def wait_until(pred: Callable[[], T | None], timeout: float, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll `pred` until it returns something truthy; TestbedError after `timeout` s."""
    end = time.monotonic() + timeout
    for _ in range(int(timeout / max(interval, 0.001)) + 2):
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            break
        time.sleep(interval)
    raise TestbedError(f"timed out after {timeout:.1f} s waiting for {what}")


class Testbed:
    """Hosts and a client as network namespaces on one bridge; see the module docstring."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, hosts: Iterable[str] = ("h1", "h2"), *, client: str = "cl",
                 prefix: str | None = None, subnet: int | None = None, keep_tmp: bool = False) -> None:
        global _serial
        names = list(hosts)
        for n in [*names, client]:
            if not _NODE_RE.match(n) or n == _SWITCH:
                raise ValueError(f"bad node name {n!r}: want [a-z][a-z0-9]{{0,9}}, not {_SWITCH!r}")
        if len(set(names + [client])) != len(names) + 1:
            raise ValueError("node names must be distinct")
        if not 1 <= len(names) <= 99:
            raise ValueError("1 to 99 hosts")
        with _serial_lock:
            serial = _serial
            _serial += 1
        if prefix is None:
            prefix = f"fo{os.getpid()}x{serial}"
            self._fixed_prefix = False
        else:
            if not _PREFIX_RE.match(prefix):
                raise ValueError(f"bad prefix {prefix!r}: want 'fo' + up to 11 of [a-z0-9]")
            self._fixed_prefix = True
        self.prefix = prefix
        self._subnet_req = subnet
        self._seed = os.getpid() * 31 + serial
        self._host_names = names
        self._client_name = client
        self.keep_tmp = keep_tmp
        self.tmpdir = Path()
        self.subnet = ""
        self.vip = ""
        self.vip_cidr = ""
        self.prefixlen = 24
        self.vip6 = ""
        self.vip6_cidr = ""
        self.switch_ns = f"{prefix}-{_SWITCH}"
        self._nodes: dict[str, Host] = {}
        self._procs: list[subprocess.Popen[Any]] = []
        self._logs: dict[int, Path] = {}
        self._created: list[str] = []
        self._closing = False
        self._closed = False
        self._started = False

    # ----- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pick_subnet(self) -> int:
        """10.99.N.0/24 with N not used by the root namespace (so nothing there is confusable)."""
        used = _cmd(["ip", "-4", "-o", "addr", "show"]).stdout
        candidates = [self._subnet_req] if self._subnet_req is not None else \
            [(self._seed + k) % 200 + 20 for k in range(200)]
        for n in candidates:
            if n is None or not 0 <= n <= 255:
                raise ValueError(f"bad subnet {n}")
            if f" 10.99.{n}." not in used:
                return n
        raise TestbedError("no free 10.99.N.0/24 (all used by the root namespace?)")

    def start(self) -> None:
        """Create the namespaces, bridge and veths; on any failure everything is removed again."""
        if self._started:
            raise TestbedError("already started")
        self._started = True
        reason = available()
        if reason:
            raise TestbedError(reason)
        _install_signal_handlers()
        stale_cleanup(self.prefix if self._fixed_prefix else None)
        _live.add(self)
        try:
            n = self._pick_subnet()
            self.subnet = f"10.99.{n}.0/24"
            self.vip = f"10.99.{n}.100"
            self.vip_cidr = f"{self.vip}/{self.prefixlen}"
            self.vip6 = f"fd99:{n:x}::100"
            self.vip6_cidr = f"{self.vip6}/64"
            self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}{_TMP_TAG}"))
            sw = self.switch_ns
            self._add_ns(sw)
            _cmd(["ip", "-n", sw, "link", "add", "br0", "type", "bridge", "stp_state", "0",
                  "mcast_snooping", "0"])
            _cmd(["ip", "-n", sw, "link", "set", "br0", "up"])
            nodes = [(h, i + 1) for i, h in enumerate(self._host_names)] + [(self._client_name, 200)]
            for name, octet in nodes:
                host = Host(name=name, ns=f"{self.prefix}-{name}", addr=f"10.99.{n}.{octet}",
                            port=f"p-{name}", addr6=f"fd99:{n:x}::{octet}")
                self._add_ns(host.ns)
                # Create the pair inside the namespaces: no interface ever exists in the root one.
                _cmd(["ip", "-n", sw, "link", "add", host.port, "type", "veth", "peer", "name", "eth0",
                      "netns", host.ns])
                _cmd(["ip", "-n", sw, "link", "set", host.port, "master", "br0", "up"])
                _cmd(["ip", "-n", host.ns, "addr", "add", f"{host.addr}/{self.prefixlen}", "dev", "eth0"])
                _cmd(["ip", "-n", host.ns, "addr", "add", f"{host.addr6}/64", "dev", "eth0", "nodad"])
                _cmd(["ip", "-n", host.ns, "link", "set", "eth0", "up"])
                _cmd(["ip", "-n", host.ns, "link", "set", "lo", "up"])
                self._nodes[name] = host
        except BaseException:
            self.close()
            raise
        log.info("testbed %s up: %s on %s", self.prefix, " ".join(self._nodes), self.subnet)

    def _add_ns(self, ns: str) -> None:
        _cmd(["ip", "netns", "add", ns])
        self._created.append(ns)

    def close(self) -> None:
        """Kill every process, delete every namespace and the temp dir.  Idempotent."""
        if self._closed or self._closing:
            return
        self._closing = True
        try:
            self._stop_all()
            for ns in reversed(self._created):  # hosts first, the switch last
                try:
                    _delete_ns(ns)
                except Exception as e:  # keep going: one failure must not leak the rest
                    log.error("testbed %s: deleting %s: %s", self.prefix, ns, e)
            self._created.clear()
            if self.tmpdir != Path() and not self.keep_tmp:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
        finally:
            self._closed = True
            self._closing = False
            _live.discard(self)
        global _pending_signal
        if _pending_signal is not None and not any(tb._closing for tb in _live):
            signum, _pending_signal = _pending_signal, None
            _close_all()
            _die(signum)

    def _stop_all(self) -> None:
        running = [p for p in self._procs if p.poll() is None]
        for p in running:
            self._signal_group(p, signal.SIGTERM)
            self._signal_group(p, signal.SIGCONT)  # a SIGSTOPped process must see its SIGTERM
        end = time.monotonic() + 1.5
        for p in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, end - time.monotonic()))
        for p in running:
            # Also the group of an exited leader: its children may still hold the group.
            self._signal_group(p, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=1.0)
        for p in self._procs:
            for f in (p.stdout, p.stderr, p.stdin):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()

    # ----- nodes ---------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        """The node called `name` (a host or the client)."""
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r} in testbed {self.prefix}") from None

    @property
    def hosts(self) -> list[Host]:
        """The hosts (not the client), in the order given."""
        return [self._nodes[n] for n in self._host_names]

    @property
    def client(self) -> Host:
        return self._nodes[self._client_name]

    def peer_map(self) -> dict[str, str]:
        """Host name -> address, e.g. for ``failsh -P NAME=ADDRESS``."""
        return {h.name: h.addr for h in self.hosts}

    def _node(self, host: Host | str) -> Host:
        return host if isinstance(host, Host) else self.host(host)

    # ----- processes -----------------------------------------------------------------------

    def run(self, host: Host | str, argv: Sequence[str], *, env: dict[str, str] | None = None,
            log_name: str | None = None, **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside `host`'s namespace in its own process group; cleaned up on close.

        `env` is added to the current environment.  Unless stdout is given, stdout and stderr
        go to a log file in tmpdir (see ``log_path``), so a full pipe can never block a daemon.
        """
        if self._closed or not self._started:
            raise TestbedError("testbed is not running")
        node = self._node(host)
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        logf = None
        if "stdout" not in popen_kw:
            base = log_name or Path(argv[0]).name
            path = self.tmpdir / f"{node.name}-{base}-{len(self._procs)}.log"
            logf = open(path, "wb")  # noqa: SIM115 - closed right after Popen (the child keeps it)
            popen_kw["stdout"] = logf
            popen_kw.setdefault("stderr", subprocess.STDOUT)
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        popen_kw.setdefault("start_new_session", True)  # own group: killpg reaches its children
        try:
            p = subprocess.Popen(["ip", "netns", "exec", node.ns, *argv], env=full_env, **popen_kw)
        finally:
            if logf is not None:
                logf.close()
        self._procs.append(p)
        if logf is not None:
            self._logs[p.pid] = Path(logf.name)
        return p

    def python(self, host: Host | str, module: str, *args: str, **kw: Any) -> subprocess.Popen[Any]:
        """``run`` of ``<this python> -m module args`` (the venv's interpreter)."""
        return self.run(host, [sys.executable, "-m", module, *args], log_name=module.rsplit(".", 1)[-1], **kw)

    def log_path(self, proc: subprocess.Popen[Any]) -> Path | None:
        """Where `proc`'s output went, if ``run`` chose the file."""
        return self._logs.get(proc.pid)

    def exec(self, host: Host | str, argv: Sequence[str], *, timeout: float = 10.0,
             check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` to completion inside `host`'s namespace (process group killed on timeout)."""
        node = self._node(host)
        p = subprocess.Popen(["ip", "netns", "exec", node.ns, *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             text=True, start_new_session=True)
        try:
            out, err = p.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(p, signal.SIGKILL)
            p.communicate(timeout=5)
            raise TestbedError(f"{node.name}: {' '.join(argv)}: timed out after {timeout} s") from None
        r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        if check and r.returncode != 0:
            raise TestbedError(f"{node.name}: {' '.join(argv)}: exit {r.returncode}: {err.strip()}")
        return r

    @staticmethod
    def _signal_group(p: subprocess.Popen[Any], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, sig)

    def signal(self, proc: subprocess.Popen[Any], sig: int, group: bool = True) -> None:
        """Send `sig` to `proc`'s process group (or only to `proc`)."""
        if proc.poll() is not None and not group:
            return
        if group:
            self._signal_group(proc, sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 3.0) -> int | None:
        """SIGTERM the group, SIGKILL it after `timeout` s; returns the exit status."""
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            self._signal_group(proc, signal.SIGCONT)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2.0)
        return proc.returncode

    def pids(self, host: Host | str) -> list[int]:
        """Every process currently in `host`'s namespace."""
        return _ns_pids(self._node(host).ns)

    # ----- network faults ------------------------------------------------------------------

    def link_down(self, host: Host | str) -> None:
        """Pull the cable: the switch port goes down, and the host's eth0 loses carrier."""
        _cmd(["ip", "-n", self.switch_ns, "link", "set", self._node(host).port, "down"])

    def link_up(self, host: Host | str) -> None:
        _cmd(["ip", "-n", self.switch_ns, "link", "set", self._node(host).port, "up"])

    def netem(self, host: Host | str, loss: float = 0.0, delay_ms: float = 0.0) -> None:
        """Drop `loss` % of `host`'s packets both ways (carrier stays up), and/or delay them.

        Loss uses an nftables netdev table on eth0 (ingress + egress, random) because sch_netem
        is often missing (it is on this project's CI kernel); delay needs sch_netem.
        ``loss=100`` is a silent partition.
        """
        node = self._node(host)
        self.netem_clear(node)
        if delay_ms:
            r = _cmd(["tc", "-n", node.ns, "qdisc", "replace", "dev", "eth0", "root", "netem",
                      "delay", f"{delay_ms}ms"], check=False)
            if r.returncode != 0:
                raise TestbedError(f"delay needs sch_netem, which this kernel lacks: {r.stderr.strip()}")
        if loss:
            if shutil.which("nft") is None:
                raise TestbedError("loss needs nft (apt-get install nftables)")
            pct = max(0, min(100, round(loss)))
            rule = f"numgen random mod 100 < {pct} counter drop" if pct < 100 else "counter drop"
            conf = (f"table netdev {_LOSS_TABLE} {{\n"
                    f"  chain in {{ type filter hook ingress device \"eth0\" priority 0; {rule}; }}\n"
                    f"  chain out {{ type filter hook egress device \"eth0\" priority 0; {rule}; }}\n}}\n")
            self.exec(node, ["nft", "-f", "-"], input=conf)

    def netem_clear(self, host: Host | str) -> None:
        node = self._node(host)
        _cmd(["tc", "-n", node.ns, "qdisc", "del", "dev", "eth0", "root"], check=False)
        if shutil.which("nft"):
            self.exec(node, ["nft", "delete", "table", "netdev", _LOSS_TABLE], check=False)

    def loss_drops(self, host: Host | str) -> int:
        """Packets ``netem(loss=...)`` has dropped on `host` so far (both directions)."""
        r = self.exec(host, ["nft", "-j", "list", "table", "netdev", _LOSS_TABLE], check=False)
        if r.returncode != 0:
            return 0
        return sum(x["counter"]["packets"] for item in json.loads(r.stdout).get("nftables", [])
                   for x in item.get("rule", {}).get("expr", []) if "counter" in x)

    def block(self, host: Host | str, peer: Host | str) -> None:
        """Drop all IPv4 traffic between `host` and `peer`, in `host`'s namespace, both ways.

        A partition of just these two: links stay up, both still reach everyone else (and
        ARP still passes, so the client's view of the VIP is unaffected).  nftables inet
        table ``fo_block`` with a set of blocked addresses; ``unblock`` removes them.
        """
        if shutil.which("nft") is None:
            raise TestbedError("block needs nft (apt-get install nftables)")
        t = f"inet {_BLOCK_TABLE}"
        conf = (f"add table {t}\n"
                f"add set {t} peers {{ type ipv4_addr; }}\n"
                f"add chain {t} in {{ type filter hook input priority 0; }}\n"
                f"add chain {t} out {{ type filter hook output priority 0; }}\n"
                f"add element {t} peers {{ {self._node(peer).addr} }}\n")
        if not self.exec(host, ["nft", "list", "chain", "inet", _BLOCK_TABLE, "in"], check=False).stdout:
            conf += f"add rule {t} in ip saddr @peers drop\nadd rule {t} out ip daddr @peers drop\n"
        self.exec(host, ["nft", "-f", "-"], input=conf)

    def unblock(self, host: Host | str, peer: Host | str | None = None) -> None:
        """Undo ``block(host, peer)``; without `peer`, every block of `host`."""
        if shutil.which("nft") is None:
            return
        if peer is None:
            self.exec(host, ["nft", "delete", "table", "inet", _BLOCK_TABLE], check=False)
        else:
            self.exec(host, ["nft", "delete", "element", "inet", _BLOCK_TABLE, "peers",
                             f"{{ {self._node(peer).addr} }}"], check=False)

    # ----- the VIP -------------------------------------------------------------------------

    def vip_add(self, host: Host | str, garp: bool = True, cidr: str | None = None) -> None:
        """Put the VIP (or `cidr`, e.g. ``vip6_cidr``) on `host`'s eth0 and announce it."""
        node = self._node(host)
        cidr = cidr or self.vip_cidr
        _cmd(["ip", "-n", node.ns, "addr", "add", cidr, "dev", "eth0", *(["nodad"] if ":" in cidr else [])])
        if garp:
            self.garp(node, addr=cidr.split("/")[0])

    def vip_del(self, host: Host | str, cidr: str | None = None) -> bool:
        """Remove the VIP (or `cidr`) from `host`; False if it was not there."""
        r = _cmd(["ip", "-n", self._node(host).ns, "addr", "del", cidr or self.vip_cidr, "dev", "eth0"],
                 check=False)
        return r.returncode == 0

    def garp(self, host: Host | str, count: int = 1, addr: str | None = None,
             delay: float = 1.0) -> subprocess.Popen[Any]:
        """Announce the VIP (or `addr`, IPv4: gratuitous ARP, IPv6: unsolicited NA) from
        `host`, `count` times `delay` s apart, in the background (failover.announce)."""
        return self.python(host, "failover.shell.announce", "eth0", addr or self.vip, "--count", str(count),
                           "--delay", f"{delay:g}")

    def addresses(self, host: Host | str, family: int = 4) -> list[str]:
        """IPv4 (`family` 4) or IPv6 (6) addresses on `host`'s eth0."""
        out = _cmd(["ip", "-n", self._node(host).ns, "-j", f"-{family}", "addr", "show", "dev", "eth0"]).stdout
        return [a["local"] for i in json.loads(out or "[]") for a in i.get("addr_info", [])]

    def holders(self, addr: str | None = None) -> list[str]:
        """Names of the hosts that have `addr` (default: the VIP; IPv4 or IPv6) on eth0."""
        addr = addr or self.vip
        family = 6 if ":" in addr else 4
        return [h.name for h in self.hosts if addr in self.addresses(h, family)]

    def mac(self, host: Host | str) -> str:
        """The hardware address of `host`'s eth0 (lower case, colons)."""
        out = _cmd(["ip", "-n", self._node(host).ns, "-j", "link", "show", "dev", "eth0"]).stdout
        return str(json.loads(out)[0]["address"])

    def neighbour(self, host: Host | str, addr: str) -> tuple[str | None, str | None]:
        """(MAC, state) of `host`'s neighbour-table entry for `addr` on eth0 (``ip neigh``,
        reads the table, sends nothing); (None, None) if there is none."""
        out = _cmd(["ip", "-n", self._node(host).ns, "-j", "neigh", "show", "to", addr, "dev", "eth0"]).stdout
        for e in json.loads(out or "[]"):
            if e.get("dst") == addr:
                states = e.get("state") or [None]
                return e.get("lladdr"), states[0]
        return None, None

    def has_vip(self, host: Host | str) -> bool:
        return self.vip in self.addresses(host)

    def vip_holders(self) -> list[str]:
        """Names of the hosts that currently have the VIP configured."""
        return [h.name for h in self.hosts if self.has_vip(h)]

    # ----- the service and its client ------------------------------------------------------

    def start_vipserver(self, host: Host | str, port: int = ports.LAB_WEB,
                        wait: float = 5.0) -> subprocess.Popen[Any]:
        """Start vipserver (answers with the node name on every IPv4 and IPv6 address, port
        `port`) and wait until it serves."""
        node = self._node(host)
        p = self.python(node, "failover.lab.vipserver", "--name", node.name, "--port", str(port), "--bind", "::")
        if wait:
            self.wait_served(node, node.addr, port, timeout=wait, host=node.name)
        return p

    def start_vipclient(self, out: Path | None = None, *, interval_ms: float = 10.0,
                        timeout_ms: float = 200.0, duration: float = 600.0, addr: str | None = None,
                        port: int = ports.LAB_WEB) -> tuple[subprocess.Popen[Any], Path]:
        """Start vipclient in the client namespace against the VIP; returns (process, results file)."""
        out = out or self.tmpdir / f"vipclient-{len(self._procs)}.jsonl"
        p = self.python(self.client, "failover.lab.vipclient", "--addr", addr or self.vip, "--port", str(port),
                        "--interval-ms", str(interval_ms), "--timeout-ms", str(timeout_ms),
                        "--duration", str(duration), "--out", str(out))
        # The header line says the client is up (the python import takes tens of ms).
        wait_until(lambda: out.exists() and out.stat().st_size > 0 or p.poll() is not None, 10,
                   what="vipclient to start")
        if p.poll() is not None:
            raise TestbedError(f"vipclient exited with {p.returncode}; see {self.log_path(p)}")
        return p, out

    def probe(self, frm: Host | str, addr: str, port: int = ports.LAB_WEB, timeout: float = 0.5) -> Result:
        """One request from inside `frm`'s namespace (never from the root namespace)."""
        r = self.exec(frm, [sys.executable, "-m", "failover.lab.vipclient", "--once", "--addr", addr,
                            "--port", str(port), "--timeout-ms", str(timeout * 1000)],
                      check=False, timeout=timeout + 10)
        try:
            return Result(**json.loads(r.stdout.strip().splitlines()[-1]))
        except (IndexError, ValueError, TypeError) as e:
            raise TestbedError(f"probe from {self._node(frm).name}: bad output {r.stdout!r} {r.stderr!r}") from e

    def wait_served(self, frm: Host | str, addr: str, port: int = ports.LAB_WEB, *, timeout: float = 5.0,
                    host: str | None = None) -> Result:
        """Probe until served (by `host`, if given); TestbedError after `timeout` s."""
        def ok() -> Result | None:
            r = self.probe(frm, addr, port, timeout=0.3)
            return r if r.ok and (host is None or r.host == host) else None
        return wait_until(ok, timeout, interval=0.05, what=f"{addr}:{port} served by {host or 'anyone'}")

    # ----- failover's own daemons ----------------------------------------------------------

    def failover_dir(self, host: Host | str, tag: str = "failover") -> Path:
        """``tmpdir/<tag>/<host>``: state, pid and dump files of `host`'s faild and failsh."""
        d = self.tmpdir / tag / self._node(host).name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def start_faild(self, host: Host | str, *, tag: str = "failover", args: Sequence[str] = (),
                    wait: float = 10.0) -> subprocess.Popen[Any]:
        """faild in `host` (-F, -N host, files under ``failover_dir``), listening on all
        addresses port 1847; waits up to `wait` s until it listens (0: do not wait)."""
        node = self._node(host)
        d = self.failover_dir(node, tag)
        p = self.run(node, [sys.executable, "-m", "failover.cli.faild", "-F", "-N", node.name,
                            "-s", str(d / "faild.state"), "-r", str(d / "faild.pid"), *args], log_name="faild")
        if wait:
            wait_until(lambda: p.poll() is not None or self.listening(node, ports.FAILD), wait,
                       what=f"faild on {node.name} to listen")
            if p.poll() is not None:
                raise TestbedError(f"faild on {node.name} exited with {p.returncode}; see {self.log_path(p)}")
        return p

    def start_failsh(self, host: Host | str, policy: Path | str, *, env: dict[str, str] | None = None,
                     tag: str = "failover", args: Sequence[str] = (),
                     wrapper: Sequence[str] = ()) -> subprocess.Popen[Any]:
        """failsh -f `policy` in `host`: -N host, ``-P name=address`` for every other host
        of the bed (the namespaces share one host name and have no DNS), the monitor feed
        on its default port (peers take change hints from it), no control port, pid and
        dump files under ``failover_dir``.  `wrapper` goes before the command, e.g.
        ``["setpriv", "--bounding-set", "-net_raw"]`` to run it without CAP_NET_RAW."""
        node = self._node(host)
        d = self.failover_dir(node, tag)
        peers = [a for h in self.hosts if h.name != node.name for a in ("-P", f"{h.name}={h.addr}")]
        return self.run(node, [*wrapper, sys.executable, "-m", "failover.cli.failsh", "-F", "-N", node.name,
                               "-f", str(policy), "-i", str(d / "failsh.pid"), "-l", str(d / "failsh.dump"),
                               "-D", "0", *peers, *args], env=env, log_name="failsh")

    def listening(self, host: Host | str, port: int) -> bool:
        """Whether something in `host` listens on TCP `port` (``ss``: reads sockets, sends nothing)."""
        r = self.exec(host, ["ss", "-Hltn", f"sport = :{port}"], check=False)
        return bool(r.stdout.strip())

    def failstat(self, hosts: Iterable[Host | str] | None = None, *, frm: Host | str | None = None,
                 history: int = 0, timeout: float = 0.5) -> dict[str, dict[str, Any]]:
        """``failstat --json`` run in `frm` (default: the client) against `hosts` (default: all).

        Returns host name -> failstat's record for it (``services``, or ``error`` when that
        faild did not answer); with `history`, the last that many transitions too.
        """
        nodes = [self._node(h) for h in (hosts if hosts is not None else self.hosts)]
        argv = [sys.executable, "-m", "failover.cli.failstat", "--json", "-t", str(timeout), "-r", "0"]
        if history:
            argv += ["--history", "-n", str(history)]
        r = self.exec(frm or self.client, [*argv, *[n.addr for n in nodes]], check=False,
                      timeout=10 + timeout * len(nodes))
        try:
            out = json.loads(r.stdout)
        except ValueError as e:
            raise TestbedError(f"failstat: bad output {r.stdout!r} {r.stderr!r}") from e
        return {n.name: rec for n, rec in zip(nodes, out, strict=True)}

    def service_states(self, service: str, hosts: Iterable[Host | str] | None = None, *,
                       frm: Host | str | None = None) -> dict[str, str | None]:
        """Host name -> state of `service` in its faild (None: no answer or unknown service)."""
        out: dict[str, str | None] = {}
        for name, rec in self.failstat(hosts, frm=frm).items():
            out[name] = next((s["state"] for s in rec.get("services", []) if s["name"] == service), None)
        return out

    # ----- keepalived (the baseline the benchmark compares against) -------------------------

    def start_keepalived(self, host: Host | str, *, priority: int, advert_int: float = 1.0,
                         vrid: int = 51, unicast: bool = False, master: bool | None = None) -> subprocess.Popen[Any]:
        """Run keepalived (VRRP only, foreground) in `host` with the test bed's VIP on eth0.

        Each instance gets its own config and pid files under tmpdir, so instances on
        different hosts (and parallel test beds) never see each other's pid files.
        """
        if shutil.which("keepalived") is None:
            raise TestbedError("keepalived not installed (apt-get install keepalived)")
        node = self._node(host)
        d = self.tmpdir / f"keepalived-{node.name}"
        d.mkdir(exist_ok=True)
        peers = [h.addr for h in self.hosts if h.name != node.name] if unicast else None
        conf = d / "keepalived.conf"
        conf.write_text(keepalived_conf(router_id=node.name, vip_cidr=self.vip_cidr, priority=priority,
                                        advert_int=advert_int, vrid=vrid,
                                        master=priority >= 150 if master is None else master,
                                        unicast_src=node.addr if unicast else None, unicast_peers=peers))
        for f in ("keepalived.pid", "vrrp.pid"):
            (d / f).unlink(missing_ok=True)
        # -n foreground (so run()'s process group holds it and its VRRP child), -l -D log to our
        # log file, -G no syslog, -P VRRP subsystem only.
        return self.run(node, ["keepalived", "-n", "-l", "-D", "-G", "-P", "-f", str(conf),
                               "-p", str(d / "keepalived.pid"), "-r", str(d / "vrrp.pid")],
                        log_name="keepalived")

    def __repr__(self) -> str:
        return f"Testbed({self.prefix}, {self.subnet}, {list(self._nodes)})"


def log_tails(paths: Iterable[Path], lines: int = 25) -> str:
    """The last `lines` lines of each log file, each under a line naming it (failure reports)."""
    out = []
    for path in paths:
        if path.exists():
            out.append(f"--- {path} (tail)\n" + "".join(path.read_text(errors="replace").splitlines(True)[-lines:]))
    return "\n".join(out)


# The faults the tests and bench/failover_time.py inject on a host running failover.
FAULTS = ("kill9-failsh", "kill9-faild", "sigstop", "linkdown", "graceful")


class FailoverHosts:
    """faild + failsh on some hosts of a test bed, each with its own policy file (and env):
    start, crash, restart, and the faults of ``FAULTS`` with their undoing."""

    def __init__(self, tb: Testbed, policies: dict[str, Path], env: dict[str, str] | None = None, *,
                 tag: str = "failover") -> None:
        self.tb = tb
        self.policies = policies
        self.env = env
        self.tag = tag
        self.faild: dict[str, subprocess.Popen[Any]] = {}
        self.failsh: dict[str, subprocess.Popen[Any]] = {}

    def start_faild(self, host: str) -> None:
        self.faild[host] = self.tb.start_faild(host, tag=self.tag)

    def start_failsh(self, host: str) -> None:
        self.failsh[host] = self.tb.start_failsh(host, self.policies[host], env=self.env, tag=self.tag)

    def start(self) -> None:
        """Every faild first (each waited for), then every failsh."""
        for h in self.policies:
            self.start_faild(h)
        for h in self.policies:
            self.start_failsh(h)

    def kill(self, host: str, which: str) -> None:
        """SIGKILL faild or failsh (its whole process group, as a crash would)."""
        self.tb.signal((self.faild if which == "faild" else self.failsh)[host], signal.SIGKILL)

    def restart(self, host: str, which: str) -> None:
        procs = self.faild if which == "faild" else self.failsh
        self.tb.stop(procs[host], timeout=10)
        (self.start_faild if which == "faild" else self.start_failsh)(host)

    def inject(self, host: str, fault: str) -> None:
        """Apply one of ``FAULTS`` to `host` and return at once.  sigstop is a hung host:
        faild and failsh both freeze; graceful is a SIGTERM to failsh's main process."""
        if fault in ("kill9-failsh", "kill9-faild"):
            self.kill(host, fault.removeprefix("kill9-"))
        elif fault == "sigstop":
            self.tb.signal(self.failsh[host], signal.SIGSTOP)
            self.tb.signal(self.faild[host], signal.SIGSTOP)
        elif fault == "linkdown":
            self.tb.link_down(host)
        elif fault == "graceful":
            self.tb.signal(self.failsh[host], signal.SIGTERM, group=False)
        else:
            raise ValueError(f"unknown fault {fault!r}")

    def restore(self, host: str, fault: str) -> None:
        """Undo `fault`: restart what was killed or stopped, thaw, or plug the cable back."""
        if fault in ("kill9-failsh", "graceful"):
            self.restart(host, "failsh")
        elif fault == "kill9-faild":
            self.restart(host, "faild")
        elif fault == "sigstop":
            self.tb.signal(self.faild[host], signal.SIGCONT)
            self.tb.signal(self.failsh[host], signal.SIGCONT)
        elif fault == "linkdown":
            self.tb.link_up(host)
        else:
            raise ValueError(f"unknown fault {fault!r}")

    def stop(self) -> None:
        for p in self.procs():
            self.tb.stop(p, timeout=10)

    def procs(self) -> list[subprocess.Popen[Any]]:
        return [*self.failsh.values(), *self.faild.values()]

    def logs(self) -> list[Path]:
        return [p for p in map(self.tb.log_path, self.procs()) if p]


class HolderSampler:
    """Background thread: every `period` s, which hosts have each address (``ip addr``, sends nothing).

    ``with HolderSampler(tb, [tb.vip]) as s: ...``; then ``s.samples`` is a list of
    (monotonic time, {address: (host, ...)}).  Stops after `limit` s at the latest.
    """

    def __init__(self, tb: Testbed, addrs: Sequence[str] | None = None, period: float = 0.05,
                 limit: float = 900.0) -> None:
        self.tb = tb
        self.addrs = list(addrs or [tb.vip])
        self._v6 = any(":" in a for a in self.addrs)
        self.period = period
        self.limit = limit
        self.samples: list[tuple[float, dict[str, tuple[str, ...]]]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="holder-sampler", daemon=True)

    def __enter__(self) -> HolderSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        end = time.monotonic() + self.limit
        for _ in range(int(self.limit / max(self.period, 0.001)) + 1):
            if self._stop.is_set() or time.monotonic() > end:
                return
            try:
                t = time.monotonic()
                have = {h.name: set(self.tb.addresses(h)) | (set(self.tb.addresses(h, 6)) if self._v6 else set())
                        for h in self.tb.hosts}
                self.samples.append((t, {a: tuple(n for n, s in have.items() if a in s) for a in self.addrs}))
            except Exception as e:  # the bed is closing; keep what we have
                self.error = e
                return
            self._stop.wait(self.period)

    def holders(self, addr: str | None = None, start: float = 0.0,
                end: float = float("inf")) -> list[tuple[float, tuple[str, ...]]]:
        """(time, holders of `addr`) for the samples in [start, end]."""
        a = addr or self.addrs[0]
        return [(t, h[a]) for t, h in list(self.samples) if start <= t <= end]

    def overlaps(self, addr: str | None = None, start: float = 0.0,
                 end: float = float("inf")) -> list[tuple[float, tuple[str, ...]]]:
        """The samples in [start, end] at which more than one host had `addr`."""
        return [(t, h) for t, h in self.holders(addr, start, end) if len(h) > 1]



def keepalived_conf(*, router_id: str, vip_cidr: str, priority: int, advert_int: float = 1.0,
                    vrid: int = 51, master: bool = False, interface: str = "eth0",
                    unicast_src: str | None = None, unicast_peers: Sequence[str] | None = None) -> str:
    """A minimal keepalived.conf: one vrrp_instance, one VIP, no scripts, preemption on.

    VRRPv3 because v2 only allows whole-second advert intervals.  keepalived 2.x starts
    every non-255 instance in BACKUP anyway; `master` only sets the documented intent.
    """
    if not 1 <= priority <= 254:
        raise ValueError("priority must be 1..254")
    if advert_int < 0.01:
        raise ValueError("advert_int must be >= 0.01 s")
    uni = ""
    if unicast_src:
        peers = "".join(f"    {p}\n" for p in unicast_peers or ())
        uni = f"  unicast_src_ip {unicast_src}\n  unicast_peer {{\n{peers}  }}\n"
    return (f"global_defs {{\n  router_id {router_id}\n  vrrp_version 3\n}}\n"
            f"vrrp_instance VI_1 {{\n"
            f"  state {'MASTER' if master else 'BACKUP'}\n"
            f"  interface {interface}\n"
            f"  virtual_router_id {vrid}\n"
            f"  priority {priority}\n"
            f"  advert_int {advert_int:g}\n"
            f"{uni}"
            f"  virtual_ipaddress {{\n    {vip_cidr} dev {interface}\n  }}\n"
            f"}}\n")
