"""A real etcd cluster on the namespace test bed: one member per host namespace.

Debian's ``etcd`` (package etcd-server), each member in its own host of a
:class:`~failover.lab.testbed.Testbed`, on that host's address (clients 2379, peers 2380),
its data in the bed's temp directory.  Everything that talks to a member runs inside a
namespace of the bed (``etcdctl`` through ``Testbed.exec``).

:class:`LoopbackEtcd` is one member on 127.0.0.1 (free ports), for the process tests.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from failover.lab.testbed import Testbed, TestbedError, wait_until

CLIENT_PORT, PEER_PORT = 2379, 2380


def available() -> str | None:
    """None if etcd can run here, else why not."""
    for tool, package in (("etcd", "etcd-server"), ("etcdctl", "etcd-client")):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install {package})"
    return None


class EtcdCluster:
    """Members on ``hosts`` of ``tb``; ``start()`` waits until the cluster has a leader."""

    def __init__(self, tb: Testbed, hosts: list[str], heartbeat_ms: int = 100, election_ms: int = 1000) -> None:
        self.tb = tb
        self.hosts = list(hosts)
        self.heartbeat_ms, self.election_ms = heartbeat_ms, election_ms
        self.procs: dict[str, subprocess.Popen[Any]] = {}

    def client_url(self, host: str) -> str:
        return f"http://{self.tb.host(host).addr}:{CLIENT_PORT}"

    @property
    def endpoints(self) -> list[str]:
        return [self.client_url(h) for h in self.hosts]

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        for h in self.hosts:
            self.start_member(h, new=True)
        wait_until(lambda: self.leader() is not None, timeout, interval=0.2, what="an etcd leader")
        return self

    def start_member(self, host: str, new: bool = False) -> None:
        """Start (or restart, keeping its data) the member on ``host``."""
        addr = self.tb.host(host).addr
        initial = ",".join(f"{h}=http://{self.tb.host(h).addr}:{PEER_PORT}" for h in self.hosts)
        data = self.tb.tmpdir / f"etcd-{host}"
        self.procs[host] = self.tb.run(host, [
            "etcd", "--name", host, "--data-dir", str(data),
            "--listen-client-urls", f"http://{addr}:{CLIENT_PORT}",
            "--advertise-client-urls", f"http://{addr}:{CLIENT_PORT}",
            "--listen-peer-urls", f"http://{addr}:{PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{addr}:{PEER_PORT}",
            "--initial-cluster", initial, "--initial-cluster-state", "new" if new else "existing",
            "--initial-cluster-token", self.tb.prefix,
            "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
            # a member that comes back from a partition does not force an election (etcd 3.5's default)
            "--pre-vote",
            "--log-level", "warn"], log_name="etcd")

    def kill(self, host: str) -> None:
        """kill -9 of the member on ``host``."""
        self.tb.signal(self.procs[host], signal.SIGKILL)

    def stop(self) -> None:
        for p in self.procs.values():
            self.tb.stop(p, timeout=5)

    def status(self, frm: str | None = None) -> list[dict[str, Any]]:
        """``etcdctl endpoint status`` of every member, run inside ``frm`` (default: the
        first member's host); members that do not answer are left out."""
        r = self.tb.exec(frm or self.hosts[0], ["etcdctl", "--endpoints", ",".join(self.endpoints),
                                                "--dial-timeout", "1s", "--command-timeout", "2s",
                                                "endpoint", "status", "-w", "json"],
                         check=False, timeout=15)
        try:
            return [s for s in json.loads(r.stdout or "[]") if isinstance(s, dict)]
        except ValueError as exc:
            raise TestbedError(f"etcdctl endpoint status: {r.stdout!r} {r.stderr!r}") from exc

    def leader(self, frm: str | None = None) -> str | None:
        """The host whose member leads now, if any answers and has a leader."""
        for s in self.status(frm):
            st = s.get("Status", {})
            if st.get("leader") and st.get("leader") == st.get("header", {}).get("member_id"):
                url = s.get("Endpoint", "")
                for h in self.hosts:
                    if url == self.client_url(h):
                        return h
        return None


class LoopbackEtcd:
    """One etcd member on 127.0.0.1, its data in ``directory``; ``start()`` waits until it
    serves, ``kill()`` is kill -9, ``start()`` again restarts it with its data."""

    def __init__(self, directory: Path, client_port: int, peer_port: int) -> None:
        self.dir = directory
        self.client_port, self.peer_port = client_port, peer_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20.0) -> LoopbackEtcd:
        self.dir.mkdir(parents=True, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        with open(self.dir / "etcd.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["etcd", "--name", "e0", "--data-dir", str(self.dir / "data"),
                 "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"e0={peer}", "--heartbeat-interval", "100", "--election-timeout", "1000",
                 "--log-level", "warn"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_until(self.serving, timeout, interval=0.1, what="etcd on loopback")
        return self

    def serving(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/health", timeout=0.5) as r:  # loopback only
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def log(self) -> str:
        path = self.dir / "etcd.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

