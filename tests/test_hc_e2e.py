"""End to end: hc finds www1's web service broken, faild says FAIL, failsh moves it to www2.

Two faild, two failsh running one policy (www1 master, www2 slave), hc on www1
checking www1's backend (a real local HTTP server) with its monitor on.  The
backend starts returning 500: hc sets web FAIL in www1's faild, www2's failsh starts
the service, www1's reclaim procedure stops it and keeps it FAIL while hc says the
check is not UP (failc -q against hc's monitor).  The backend recovers: hc sets
RECOVER, and the service goes back to www1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from failover import client
from failover.lab.fakes import FakeHTTP

BIN = Path(sys.executable).parent

POLICY = r"""
proc marker {} { global env; return [file join $env(HC_E2E_DIR) web.$env(FO_NODE)] }
proc startweb {args} { set f [open [marker] w]; close $f; return UP }
proc stopweb {args} { file delete [marker]; return RECOVER }
proc reclaimweb {args} {
    global env
    stopweb
    # keep FAIL while hc does not find the service healthy (failc -q: exit 0 only if UP)
    if {[info exists env(HC_E2E_HC)] && [catch {exec $env(HC_E2E_FAILC) -h $env(HC_E2E_HC) -q -t 0.5 -r 0 web}]} {
        return FAIL
    }
    return RECOVER
}
failsvc web interval 0.2
failsvc web masters {www1}
failsvc web slaves {www2}
failsvc web start startweb
failsvc web stop stopweb
failsvc web reclaim reclaimweb
"""


def failsh_available() -> bool:
    if not (BIN / "failsh").exists():
        return False
    try:
        import tkinter
        tkinter.Tcl()
    except Exception:
        return False
    return True


pytestmark = pytest.mark.skipif(not failsh_available(), reason="failsh not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.ports = {"www1": free_port(), "www2": free_port()}
        self.clients = {n: client.Client(client.endpoint_for(f"127.0.0.1:{p}"), timeout=0.5, retries=0)
                        for n, p in self.ports.items()}

    def spawn(self, name: str, argv: list[str], env: dict | None = None) -> None:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        self.procs.append((name, proc))

    def state(self, node: str) -> str | None:
        try:
            return self.clients[node].get("web").state.value
        except client.ClientError:
            return None

    def states(self) -> tuple[str | None, str | None]:
        return self.state("www1"), self.state("www2")

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{(self.tmp / f'{name}.log').read_text()[-3000:]}" for name, _ in self.procs)

    def stop(self) -> None:
        for c in self.clients.values():
            c.close()
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def test_hc_fails_the_service_over_to_the_slave_and_back(tmp_path):
    cluster = Cluster(tmp_path)
    hc_port = free_port()
    policy = tmp_path / "web.tcl"
    policy.write_text(POLICY)
    with FakeHTTP() as backend:
        hcfile = tmp_path / "Hcfile"
        hcfile.write_text(f"""\
web:
    check http {backend.url}health status 200
    interval 0.2
    timeout 0.5
    fall 2
    rise 2
    faild 127.0.0.1:{cluster.ports['www1']} service web
""")
        try:
            for node in ("www1", "www2"):
                cluster.spawn(f"faild-{node}", [
                    str(BIN / "faild"), "-F", "-N", node, "-p", str(cluster.ports[node]),
                    "-s", str(tmp_path / f"{node}.state"), "-r", str(tmp_path / f"{node}.faild.pid")])
            for node, peer in (("www1", "www2"), ("www2", "www1")):
                env = {**os.environ, "FO_NODE": node, "HC_E2E_DIR": str(tmp_path),
                       "HC_E2E_FAILC": str(BIN / "failc")}
                if node == "www1":
                    env["HC_E2E_HC"] = f"127.0.0.1:{hc_port}"
                cluster.spawn(f"failsh-{node}", [
                    str(BIN / "failsh"), "-F", "-N", node, "-f", str(policy),
                    "--faild", f"127.0.0.1:{cluster.ports[node]}",
                    "-P", f"{peer}=127.0.0.1:{cluster.ports[peer]}", "-m", "0", "-D", "0",
                    "-i", str(tmp_path / f"{node}.failsh.pid"), "-l", str(tmp_path / f"{node}.dump")], env)
            cluster.spawn("hc", [str(BIN / "hc"), "-F", "-m", "-l", "127.0.0.1", "-p", str(hc_port),
                                 "-N", "www1", "-f", str(hcfile)])

            assert wait_for(lambda: cluster.states() == ("UP", "RECOVER"), 15), (cluster.states(), cluster.logs())
            assert (tmp_path / "web.www1").exists() and not (tmp_path / "web.www2").exists()

            broken = time.monotonic()
            backend.mode = "error"
            assert wait_for(lambda: cluster.states() == ("FAIL", "UP"), 15), (cluster.states(), cluster.logs())
            took = time.monotonic() - broken
            assert wait_for(lambda: not (tmp_path / "web.www1").exists(), 5)  # reclaim stopped it
            assert (tmp_path / "web.www2").exists()
            reasons = [t.reason for t in cluster.clients["www1"].history("web", limit=20)]
            assert any(r.startswith("hc: web check failed 2 times in a row: HTTP 500") for r in reasons), reasons
            # it stays there while the check fails: no ping-pong through reclaim
            seen = set()
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                seen.add(cluster.states())
                time.sleep(0.05)
            assert seen == {("FAIL", "UP")}, (seen, cluster.logs())

            backend.mode = "ok"
            assert wait_for(lambda: cluster.states() == ("UP", "RECOVER"), 15), (cluster.states(), cluster.logs())
            assert (tmp_path / "web.www1").exists() and not (tmp_path / "web.www2").exists()
        finally:
            cluster.stop()
    print(f"failover took {took:.2f} s after the backend broke")
    assert took < 5.0
