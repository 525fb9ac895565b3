"""Real faild + failsh processes on loopback, one set per pretend host: the one cluster
of the process tests (failsh, hints, split brain, security, failmon, the web page, metrics,
faildebug, hc end to end).

Each host is a faild (``support.FaildProcess``) and a failsh (``python -m
failover.cli.failsh -F``) on free 127.0.0.1 ports; every failsh gets ``-P`` entries for
all the other hosts, exactly as docs/architecture.md runs them by hand, and the policy
tells each host where the others publish their change hints.  Nothing is mocked.  The
policies' procedures write marker lines to ``FO_DIR`` (see ``MARKERS``).

Every wait here is bounded in time; ``Cluster.close()`` kills whatever is still running.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from support import Daemon, FaildProcess, free_port

from failover.client import ClientError

# Tcl helpers for test policies, 0.5 style: procs declared with args, returning a state.
# mark SVC WHAT appends "millis WHAT" to $FO_DIR/$FO_NODE.SVC.log; a running service
# is the file $FO_DIR/$FO_NODE.SVC.running.
MARKERS = r"""
proc fo_file {svc ext} { global env; return [file join $env(FO_DIR) $env(FO_NODE).$svc.$ext] }
proc mark {svc what} {
    set f [open [fo_file $svc log] a]; puts $f "[clock milliseconds] $what"; close $f
}
proc svc_start {svc args} { mark $svc start; close [open [fo_file $svc running] w]; return UP }
proc svc_stop {svc args} { mark $svc stop; file delete [fo_file $svc running]; return RECOVER }
proc svc_reclaim {svc args} { mark $svc reclaim; return RECOVER }
"""

# one service on a master and a slave, procedures that only answer
WEB_POLICY = """proc up args {return UP}
proc down args {return RECOVER}
failsvc web interval 1
failsvc web masters {www1}
failsvc web slaves {www2}
failsvc web start up
failsvc web stop down
"""
DEFAULT_WAIT = 15.0


class FailshProcess(Daemon):
    """One failsh for host ``node``; ``peers`` maps the other hosts to their faild ports."""

    def __init__(self, node: str, directory: Path, faild_port: int, peers: dict[str, int],
                 policy: Path, env: dict[str, str], extra: Iterable[str] = (), monitor_port: int = 0,
                 http_port: int | None = None) -> None:
        self.node = node
        self.monitor_port = monitor_port
        self.directory = directory
        self.faild_port = faild_port
        self.peers = peers
        self.policy = policy
        self.env = env
        self.extra = list(extra)
        self.http_port = http_port  # --http: the live web page, /snapshot.json, /metrics
        self.control_port = free_port()
        self.pidfile = directory / f"{node}.failsh.pid"
        self.dumpfile = directory / f"{node}.dump"
        self.logfile = directory / f"{node}.failsh.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "failover.cli.failsh", "-F", "-N", self.node, "-f", str(self.policy),
               "--faild", f"127.0.0.1:{self.faild_port}", "-m", str(self.monitor_port), "--monitor-listen", "127.0.0.1",
               "-D", str(self.control_port), "-i", str(self.pidfile), "-l", str(self.dumpfile)]
        for name, port in sorted(self.peers.items()):
            cmd += ["-P", f"{name}=127.0.0.1:{port}"]
        if self.http_port is not None:
            cmd += ["--http", f"127.0.0.1:{self.http_port}"]
        return cmd + self.extra

    def start(self) -> FailshProcess:
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env={**self.env, "FO_NODE": self.node})
        return self


class Cluster:
    """Hosts ``names`` sharing one policy text (written to ``policy.tcl``)."""

    def __init__(self, directory: Path, names: Iterable[str] = ("www1", "www2"), policy: str = WEB_POLICY,
                 communities: dict[str, str] | None = None, *, faild_args: Sequence[str] = (),
                 failsh_args: Sequence[str] = (), http: bool = False, metrics: bool = False,
                 env: dict[str, str] | None = None) -> None:
        """``communities``: host -> community file text for its faild (default: none);
        ``faild_args``, ``failsh_args``: more options for every faild, every failsh;
        ``http``: every failsh serves its web page on ``http_ports[name]``; ``metrics``:
        every faild serves /metrics on ``metrics_ports[name]``; ``env``: more environment."""
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.names = list(names)
        self.policy = directory / "policy.tcl"
        # each failsh publishes its change hints on its own port, and the policy tells the peers
        self.monitor_ports = {n: free_port() for n in self.names}
        self.http_ports = {n: free_port() for n in self.names} if http else {}
        self.metrics_ports = {n: free_port() for n in self.names} if metrics else {}
        hints = "".join(f"failhost {n} monitor {p}\n" for n, p in self.monitor_ports.items())
        self.policy.write_text(MARKERS + policy + "\n" + hints)
        self.env = {**os.environ, "FO_DIR": str(directory), **(env or {})}
        self.failsh_args = list(failsh_args)
        self.failds = {}
        for n in self.names:
            cfile = None
            if communities and n in communities:
                cfile = directory / f"{n}.communities"
                cfile.write_text(communities[n])
            extra = [*faild_args, *(["--metrics", f"127.0.0.1:{self.metrics_ports[n]}"] if metrics else [])]
            self.failds[n] = FaildProcess(directory / f"faild-{n}", node=n, communities=cfile, extra=extra,
                                          env=self.env)
        self.failsh: dict[str, FailshProcess] = {}

    # Processes ------------------------------------------------------------
    def start(self, *failsh_names: str) -> Cluster:
        """Start every faild, then failsh on ``failsh_names`` (default: all hosts)."""
        self.start_failds()
        for n in failsh_names or self.names:
            self.start_failsh(n)
        return self

    @contextlib.contextmanager
    def serving(self, expected: dict[str, str], service: str = "web") -> Iterator[Cluster]:
        """Every faild and failsh started until the hosts hold ``expected`` states of
        ``service`` (a module fixture's cluster); everything killed afterwards."""
        try:
            self.start()
            self.wait_states(service, expected)
            yield self
        finally:
            self.close()

    def start_failds(self) -> None:
        for f in self.failds.values():
            if not f.running():
                f.start()

    def start_failsh(self, name: str, policy: Path | None = None, extra: Iterable[str] = (),
                     peers: dict[str, int] | None = None, *, env: dict[str, str] | None = None) -> FailshProcess:
        """failsh on host ``name``; ``env``: more environment for this one."""
        if peers is None:
            peers = {n: f.port for n, f in self.failds.items() if n != name}
        p = FailshProcess(name, self.dir, self.failds[name].port, peers, policy or self.policy,
                          {**self.env, **(env or {})}, [*self.failsh_args, *extra], self.monitor_ports[name],
                          self.http_ports.get(name))
        self.failsh[name] = p
        return p.start()

    def start_master_then_slave(self, service: str = "web", master: str = "www1", slave: str = "www2") -> None:
        """Every faild; failsh on ``master`` until it is UP, then on ``slave`` until it waits."""
        self.start_failds()
        self.start_failsh(master)
        self.wait_states(service, {master: "UP"})
        self.start_failsh(slave)
        self.wait_states(service, {master: "UP", slave: "RECOVER"}, effective=True)
        time.sleep(0.5)  # the slave subscribes to the master's change hints (a PUB drops what it cannot send)

    def crash_host(self, name: str) -> None:
        """kill -9 of the host's faild, then its failsh: the host is gone.  In the other
        order a faild that answers "no failsh lease" shows a reachable host whose failsh
        died, which its slaves take over at once."""
        self.failds[name].kill9()
        self.failsh[name].kill9()

    def close(self) -> None:
        for p in self.failsh.values():
            p.kill9()
        for f in self.failds.values():
            if f.running():
                f.kill9()

    # Looking at the hosts ------------------------------------------------------
    def info(self, name: str, service: str) -> tuple[str | None, float | None]:
        """(state of ``service`` in host ``name``'s faild, seconds left of its failsh lease).

        (None, None) if faild does not answer or does not know the service.
        """
        try:
            with self.failds[name].client(timeout=0.3) as c:  # CURVE too, for a CurveFaild
                reply = c.call("list")
        except ClientError:
            return None, None
        lease = reply["host"].get("lease")
        for s in reply["services"]:
            if s["name"] == service:
                return s["state"], lease
        return None, lease

    def state(self, name: str, service: str) -> str | None:
        return self.info(name, service)[0]

    def effective(self, name: str, service: str) -> str:
        """The state the peers act on: FAIL without an answer or without a failsh lease."""
        state, lease = self.info(name, service)
        return state if state is not None and lease is not None else "FAIL"

    def states(self, service: str, effective: bool = False) -> dict[str, str | None]:
        get = self.effective if effective else self.state
        return {n: get(n, service) for n in self.names}

    def wait_states(self, service: str, expected: dict[str, str], timeout: float = DEFAULT_WAIT,
                    effective: bool = False) -> float:
        """Poll until the hosts in ``expected`` hold those states; return the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        seen: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            get = self.effective if effective else self.state
            seen = {n: get(n, service) for n in expected}
            if seen == expected:
                return time.monotonic() - t0
            time.sleep(0.05)
        pytest.fail(f"{service}: wanted {expected}, still {seen} after {timeout} s\n{self.logs()}")

    def sample(self, service: str, until: Callable[[dict[str, str | None]], bool], timeout: float = DEFAULT_WAIT,
               period: float = 0.1, effective: bool = False) -> list[dict[str, str | None]]:
        """Sample every host's state every ``period`` s until ``until(sample)``; all samples."""
        samples = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.states(service, effective)
            samples.append(s)
            if until(s):
                return samples
            time.sleep(period)
        pytest.fail(f"{service}: condition not reached in {timeout} s; last {samples[-1:]}\n{self.logs()}")

    def watch(self, service: str, seconds: float, period: float = 0.1) -> list[dict[str, str | None]]:
        """Sample every host's state every ``period`` s for ``seconds``."""
        samples = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            samples.append(self.states(service))
            time.sleep(period)
        return samples

    def markers(self, name: str, service: str) -> list[str]:
        """The marker words (start, stop, reclaim, ...) host ``name`` wrote for ``service``."""
        try:
            lines = (self.dir / f"{name}.{service}.log").read_text().split("\n")
        except OSError:
            return []
        return [line.split(" ", 1)[1] for line in lines if " " in line]

    def running(self, name: str, service: str) -> bool:
        return (self.dir / f"{name}.{service}.running").exists()

    def logs(self) -> str:
        parts = []
        for name, p in self.failsh.items():
            parts.append(f"--- failsh {name} (exit {p.proc.poll() if p.proc else '-'}) ---\n{p.log()[-3000:]}")
        return "\n".join(parts)


def both_up(sample: dict[str, str | None], hosts: Iterable[str] | None = None) -> bool:
    names = list(hosts) if hosts is not None else list(sample)
    return sum(1 for n in names if sample.get(n) == "UP") > 1
