"""End to end: hc finds www1's web service broken, faild says FAIL, failsh moves it to www2.

Two faild, two failsh running one policy (www1 master, www2 slave), hc on www1
checking www1's backend (a real local HTTP server) with its monitor on.  The
backend starts returning 500: hc sets web FAIL in www1's faild, www2's failsh starts
the service, www1's reclaim procedure stops it and keeps it FAIL while hc says the
check is not UP (the Tcl command healthy, against hc's monitor).  The backend recovers: hc sets
RECOVER, and the service goes back to www1.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cluster import Cluster
from support import BIN, HcProcess, wait_for

from failover.lab.fakes import FakeHTTP

POLICY = r"""
proc marker {} { global env; return [file join $env(FO_DIR) web.$env(FO_NODE)] }
proc startweb {args} { set f [open [marker] w]; close $f; return UP }
proc stopweb {args} { file delete [marker]; return RECOVER }
proc reclaimweb {args} {
    global env
    stopweb
    # keep FAIL while hc does not find the service healthy (docs/hc.md: ask hc with healthy)
    if {[info exists env(HC_E2E_HC)] && ![healthy web $env(HC_E2E_HC) 0.5]} { return FAIL }
    return RECOVER
}
foreach {setting value} {interval 0.2 masters www1 slaves www2 start startweb stop stopweb reclaim reclaimweb} {
    failsvc web $setting $value
}
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


pytestmark = [pytest.mark.process, pytest.mark.skipif(not failsh_available(), reason="failsh not available")]


def test_hc_fails_the_service_over_to_the_slave_and_back(tmp_path):
    cluster = Cluster(tmp_path, ["www1", "www2"], POLICY)
    hc = HcProcess(tmp_path, tmp_path / "Hcfile", node="www1")

    def states() -> tuple[str | None, ...]:
        return tuple(cluster.states("web").values())  # www1, www2

    def logs() -> str:
        return f"{cluster.logs()}\n--- hc\n{hc.log()[-3000:]}"

    with FakeHTTP() as backend:
        hc.hcfile.write_text(f"""\
web:
    check http {backend.url}health status 200
    interval 0.2
    timeout 0.5
    fall 2
    rise 2
    faild 127.0.0.1:{cluster.failds['www1'].port} service web
""")
        try:
            cluster.start_failds()
            cluster.start_failsh("www1", env={"HC_E2E_HC": hc.address})
            cluster.start_failsh("www2")
            hc.start()

            assert wait_for(lambda: states() == ("UP", "RECOVER"), 15, logs)
            assert (tmp_path / "web.www1").exists() and not (tmp_path / "web.www2").exists()

            broken = time.monotonic()
            backend.mode = "error"
            assert wait_for(lambda: states() == ("FAIL", "UP"), 15, logs)
            took = time.monotonic() - broken
            assert wait_for(lambda: not (tmp_path / "web.www1").exists(), 5)  # reclaim stopped it
            assert (tmp_path / "web.www2").exists()
            with cluster.failds["www1"].client() as c:
                reasons = [t.reason for t in c.history("web", limit=20)]
            assert any(r.startswith("hc: check web failed 2 times in a row: HTTP 500") for r in reasons), reasons
            # the slave's takeover names the check that fired, in its log and in its faild
            assert "web: RECOVER -> UP: master www1 down (hc check web failed 2 times in a row: HTTP 500" in \
                cluster.failsh["www2"].log(), logs()
            # it stays there while the check fails: no ping-pong through reclaim
            seen = set()
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                seen.add(states())
                time.sleep(0.05)
            assert seen == {("FAIL", "UP")}, (seen, logs())

            backend.mode = "ok"
            assert wait_for(lambda: states() == ("UP", "RECOVER"), 15, logs)
            assert (tmp_path / "web.www1").exists() and not (tmp_path / "web.www2").exists()
        finally:
            hc.kill9()
            cluster.close()
    print(f"failover took {took:.2f} s after the backend broke")
    assert took < 5.0


SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "policies" / "01-web-master-slave.tcl"


def test_the_web_sample_with_hc_keeps_the_service_on_the_slave_while_the_check_fails(tmp_path: Path) -> None:
    """samples/policies/01 as shipped, with hc running the web node of samples/Hcfile.example
    on www1: while the check fails the sample's reclaim asks hc (fo::hcok) and keeps web
    FAIL, so the service stays with www2 instead of flapping between the hosts."""
    policy = SAMPLE.read_text() + r"""
# the test bed: the init script leaves a marker file, hc's monitor is on a port of its own
proc apache {action state} { if {$action eq "start"} { svc_start web } else { svc_stop web }; return $state }
failsvc web interval 0.3
set ::fo::hc $env(HC_ADDRESS)
"""
    cluster = Cluster(tmp_path, ["www1", "www2"], policy)
    hc = HcProcess(tmp_path, tmp_path / "Hcfile", node="www1")

    def logs() -> str:
        return f"{cluster.logs()}\n--- hc\n{hc.log()[-3000:]}"

    with FakeHTTP() as backend:
        hc.hcfile.write_text(f"""\
web:
    check http {backend.url}health status 200 body ok
    interval 0.2
    timeout 0.5
    fall 2
    rise 2
    faild 127.0.0.1:{cluster.failds['www1'].port} service web
""")
        try:
            cluster.start_failds()
            for host in ("www1", "www2"):
                cluster.start_failsh(host, env={"HC_ADDRESS": hc.address})
            hc.start()
            assert wait_for(lambda: cluster.states("web") == {"www1": "UP", "www2": "RECOVER"}, 15, logs)
            backend.mode = "error"
            assert wait_for(lambda: cluster.states("web") == {"www1": "FAIL", "www2": "UP"}, 15, logs)
            assert wait_for(lambda: "stop" in cluster.markers("www1", "web"), 5, logs)  # reclaim stopped it
            samples = cluster.watch("web", 3.0)  # hc fails web again every 0.2 s meanwhile
            assert all(s == {"www1": "FAIL", "www2": "UP"} for s in samples), (samples, logs())
            assert cluster.markers("www2", "web") == ["start"]
            assert "flapping" not in cluster.failsh["www2"].log()
            backend.mode = "ok"
            assert wait_for(lambda: cluster.states("web") == {"www1": "UP", "www2": "RECOVER"}, 15, logs)
        finally:
            hc.kill9()
            cluster.close()
