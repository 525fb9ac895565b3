"""A real two-host failover cluster on loopback for the operations tests.

Each host is a faild and a failsh process (``python -m failover.cli...``) on free ports,
exactly as docs/architecture.md runs them by hand; nothing is mocked.  Used by
test_failmon, test_dashboard, test_metrics and test_faildebug.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from failover.client import Client, ClientError

WEB_POLICY = """proc up args {return UP}
proc down args {return RECOVER}
failsvc web interval 1
failsvc web masters {www1}
failsvc web slaves {www2}
failsvc web start up
failsvc web stop down
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except (OSError, ValueError, KeyError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def prom_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None if absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        got = dict(item.split("=", 1) for item in rest.rstrip("}").split(",") if item) if rest else {}
        if all(got.get(k) == json.dumps(v) for k, v in labels.items()):
            return float(value)
    return None


class Host:
    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.faild_port = free_port()
        self.monitor_port = free_port()
        self.control_port = free_port()
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.faild: subprocess.Popen | None = None
        self.failsh: subprocess.Popen | None = None

    @property
    def failsh_log(self) -> str:
        return (self.dir / "failsh.log").read_text(errors="replace")

    @property
    def faild_log(self) -> str:
        return (self.dir / "faild.log").read_text(errors="replace")


class Cluster:
    """www1 (master) and www2 (slave) of service ``web``, or whatever ``policy`` says."""

    def __init__(self, directory: Path, names: tuple[str, ...] = ("www1", "www2"), policy: str = WEB_POLICY,
                 faild_args: tuple[str, ...] = (), failsh_args: tuple[str, ...] = (),
                 http: bool = False, metrics: bool = False, env: dict[str, str] | None = None) -> None:
        self.dir = directory
        self.hosts = {n: Host(n, directory / n) for n in names}
        self.policy = directory / "policy.tcl"
        self.policy.write_text(policy)
        self.faild_args = faild_args
        self.failsh_args = failsh_args
        self.http = http
        self.metrics = metrics
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def start(self) -> Cluster:
        for h in self.hosts.values():
            self.start_faild(h)
        for h in self.hosts.values():
            self.start_failsh(h)
        return self

    def start_faild(self, h: Host) -> None:
        cmd = [sys.executable, "-m", "failover.cli.faild", "-F", "-l", "127.0.0.1", "-p", str(h.faild_port),
               "-s", str(h.dir / "faild.state"), "-r", str(h.dir / "faild.pid"), "-N", h.name, *self.faild_args]
        if self.metrics:
            cmd += ["--metrics", f"127.0.0.1:{h.metrics_port}"]
        with open(h.dir / "faild.log", "ab") as log:
            h.faild = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env)
        with Client(f"tcp://127.0.0.1:{h.faild_port}", timeout=0.2, retries=0) as c:
            def ping() -> bool:
                if h.faild.poll() is not None:
                    pytest.fail(f"faild {h.name} exited:\n{h.faild_log}")
                try:
                    c.ping()
                    return True
                except ClientError:
                    return False
            wait_until(ping, 15, f"faild {h.name}")

    def start_failsh(self, h: Host, extra: tuple[str, ...] = ()) -> None:
        peers = [f"-P{o.name}=127.0.0.1:{o.faild_port}" for o in self.hosts.values() if o is not h]
        cmd = [sys.executable, "-m", "failover.cli.failsh", "-F", "-N", h.name, "-f", str(self.policy),
               "--faild", f"127.0.0.1:{h.faild_port}", *peers, "-m", str(h.monitor_port),
               "--monitor-listen", "127.0.0.1", "-D", str(h.control_port), "-i", str(h.dir / "failsh.pid"),
               "-l", str(h.dir / "failsh.dump"), *self.failsh_args, *extra]
        if self.http:
            cmd += ["--http", f"127.0.0.1:{h.http_port}"]
        with open(h.dir / "failsh.log", "ab") as log:
            h.failsh = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env)

    def states(self, h: Host) -> dict[str, str]:
        """Service -> state in host ``h``'s faild (failsh writes every transition there at once)."""
        with Client(f"tcp://127.0.0.1:{h.faild_port}", timeout=0.3, retries=0) as c:
            try:
                return {r.name: r.state.value for r in c.list()[1]}
            except ClientError:
                return {}

    def wait_states(self, expected: dict[str, dict[str, str]], timeout: float = 15) -> None:
        """Wait until every named host's failsh holds the given states."""
        def ok() -> bool:
            for name, want in expected.items():
                h = self.hosts[name]
                if h.failsh is None or h.failsh.poll() is not None:
                    pytest.fail(f"failsh {name} exited:\n{h.failsh_log}")
                got = self.states(h)
                if any(got.get(s) != v for s, v in want.items()):
                    return False
            return True
        wait_until(ok, timeout, f"states {expected}")

    def crash(self, name: str) -> None:
        """The host dies: SIGKILL its failsh and faild."""
        h = self.hosts[name]
        for p in (h.failsh, h.faild):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(5)

    def stop(self) -> None:
        procs = [p for h in self.hosts.values() for p in (h.failsh, h.faild) if p is not None]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 5
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
