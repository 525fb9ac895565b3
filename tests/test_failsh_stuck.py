"""failsh must neither freeze nor look alive while it is not deciding (issue 11, items 3-5, 11).

Real faild and failsh processes on loopback (tests/cluster.py).  A policy whose top-level
code never returns is refused at start, by --check and on SIGHUP (the running policy stays);
a policy thread held by a script outside any time bound lets the lease lapse, so the slave
takes over; SIGTERM is honoured while a procedure runs; a faild answering under another
node name counts as not answering; a host coming back in a chain of three does not make
its slaves yield before it could start.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster
from conftest import FaildProcess, run_cli, wait_for

pytestmark = pytest.mark.process

MASTER_SLAVE = """
failsvc web interval 0.2
failsvc web masters {www1}
failsvc web slaves {www2}
failsvc web start {svc_start web}
failsvc web stop {svc_stop web}
"""

NEVER_RETURNS = {
    "loop": "while 1 {}",
    "exec": "exec sleep 1000",
    "vwait": "vwait forever",
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, ["www1", "www2"], MASTER_SLAVE)
    yield c
    c.close()


@pytest.mark.parametrize("body", NEVER_RETURNS.values(), ids=NEVER_RETURNS.keys())
def test_a_policy_that_never_returns_is_refused_at_start_and_by_check(tmp_path: Path, body: str) -> None:
    policy = tmp_path / "stuck.tcl"
    policy.write_text(f"failsvc web masters www1\n{body}\n")
    for args in (["--check"], ["-F", "-m", "0", "-D", "0", "--faild", "127.0.0.1:9", "-i", str(tmp_path / "pid")]):
        r = run_cli("failsh", *args, "-N", "www2", "--load-timeout", "1", "-f", str(policy), timeout=30)
        assert r.returncode == 5, r.stderr
        assert "loading cancelled" in r.stderr or "loading timed out after 1 s" in r.stderr, r.stderr
        assert str(policy) in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("sleep*"))


def test_sighup_onto_a_policy_that_never_returns_keeps_the_running_one(cluster: Cluster) -> None:
    cluster.start_failds()
    master = cluster.start_failsh("www1", extra=["--load-timeout", "1"])
    cluster.start_failsh("www2")
    cluster.wait_states("web", {"www1": "UP", "www2": "RECOVER"}, effective=True)
    good = cluster.policy.read_text()
    cluster.policy.write_text(good + "\nwhile 1 {}\n")
    master.send(signal.SIGHUP)
    wait_for(lambda: "reload failed, keeping the running policy" in master.log(), 10, "the reload to be refused")
    assert "loading timed out after 1 s" in master.log()
    # the lease never lapsed: www2 never took over, and www1 still decides (a failc FAIL is acted on)
    assert cluster.markers("www2", "web") == []
    cluster.policy.write_text(good)
    assert master.stop() == 0
    cluster.wait_states("web", {"www2": "UP"}, timeout=10)
    assert "Traceback" not in master.log()


def test_a_stuck_policy_thread_lets_the_lease_lapse_and_sigterm_still_works(cluster: Cluster) -> None:
    """The start procedure returns UP but leaves an ``after`` script that never returns:
    failsh's network thread would go on answering, so only the lease tells the peers."""
    cluster.policy.write_text(cluster.policy.read_text().replace(
        "failsvc web start {svc_start web}",
        'failsvc web start {if {$env(FO_NODE) eq "www1"} {after 1000 {while 1 {}}}; svc_start web}'))
    cluster.start_master_then_slave()
    master = cluster.failsh["www1"]
    samples = cluster.sample("web", lambda s: s["www2"] == "UP", timeout=20)
    assert samples and master.running()
    assert "policy thread stuck" in master.log()
    assert cluster.info("www1", "web")[1] is None  # no lease: peers count www1 FAIL
    t0 = time.monotonic()
    assert master.stop(timeout=15) == 0
    print(f"\nSIGTERM with a stuck policy thread: exit after {time.monotonic() - t0:.2f} s")
    log = master.log()
    assert "did not respond within 1 s" in log and "Traceback" not in log
    assert "stop" in cluster.markers("www1", "web")  # the stop procedure ran after the unwind


def test_sigterm_while_a_procedure_runs_cancels_it(cluster: Cluster) -> None:
    cluster.policy.write_text(cluster.policy.read_text().replace(
        "failsvc web start {svc_start web}", "failsvc web start {exec sleep 1000}\nfailsvc web timeout 60"))
    cluster.start_failds()
    master = cluster.start_failsh("www1")
    wait_for(lambda: subprocess.run(["pgrep", "-f", "^sleep 1000"], capture_output=True).returncode == 0,
             15, "the start procedure to run")
    t0 = time.monotonic()
    assert master.stop(timeout=20) == 0
    print(f"\nSIGTERM during a 60 s procedure: exit after {time.monotonic() - t0:.2f} s")
    log = master.log()
    assert "running procedure cancelled" in log and "Traceback" not in log and "eval unwound" not in log
    assert subprocess.run(["pgrep", "-f", "^sleep 1000"], capture_output=True).returncode == 1
    assert cluster.state("www1", "web") != "UP"


def test_a_faild_under_another_name_is_not_the_host_polled(tmp_path: Path) -> None:
    c = Cluster(tmp_path, ["www1", "www2"], MASTER_SLAVE)
    impostor = FaildProcess(tmp_path / "impostor", node="intruder")
    try:
        impostor.start()
        c.start_failds()
        with impostor.client() as cl:  # it even claims to hold the service
            cl.set("web", "UP")
        slave = c.start_failsh("www2", peers={"www1": impostor.port})
        c.wait_states("web", {"www2": "UP"})
        wait_for(lambda: "answers as 'intruder', not 'www1'" in slave.log(), 5, "the log line naming both")
    finally:
        c.close()
        impostor.kill9()


CHAIN = """
failsvc ldap interval 0.5
failsvc ldap start {svc_start ldap}
failsvc ldap stop {svc_stop ldap}
if {$env(FO_NODE) eq "a"} { failsvc ldap slaves {b c} }
if {$env(FO_NODE) eq "b"} { failsvc ldap masters {a}; failsvc ldap slaves {c} }
if {$env(FO_NODE) eq "c"} { failsvc ldap masters {a b} }
failhost a deadtime 6
"""


def test_a_returning_host_in_a_chain_does_not_leave_nobody_serving(tmp_path: Path) -> None:
    """a > b > c; a and b are gone, c serves.  b comes back while a is still down: b must
    not make c yield before it knows a is not ready (a's dead time, 6 s here), so the
    service is never without a holder for longer than a blink of the handover."""
    c = Cluster(tmp_path, ["a", "b", "c"], CHAIN)
    try:
        c.start()
        c.wait_states("ldap", {"a": "UP", "b": "RECOVER", "c": "RECOVER"}, effective=True, timeout=20)
        c.crash_host("a")
        c.crash_host("b")
        c.wait_states("ldap", {"c": "UP"}, timeout=20)
        c.failds["b"].restart()
        c.start_failsh("b")
        samples = c.sample("ldap", lambda s: s["b"] == "UP" and s["c"] == "RECOVER", timeout=30, period=0.05)
        assert "waiting for master a to answer before taking the lease" in c.failsh["b"].log()
    finally:
        c.close()
    gaps, run = [], 0
    for s in samples:
        run = run + 1 if "UP" not in s.values() else 0
        gaps.append(run)
    longest = max(gaps) * 0.05
    print(f"\nchain: longest interval without a holder about {longest:.2f} s (a's dead time 6 s)")
    assert longest < 3.0, "c yielded long before b could start"
    assert not any(sum(v == "UP" for v in s.values()) > 1 for s in samples)

