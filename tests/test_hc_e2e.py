"""End to end: hc finds www1's web service broken, faild says FAIL, failsh moves it to www2.

Two faild, two failsh running one policy (www1 master, www2 slave), hc on www1
checking www1's backend (a real local HTTP server) with its monitor on.  The
backend starts returning 500: hc sets web FAIL in www1's faild, www2's failsh starts
the service, www1's reclaim procedure stops it and keeps it FAIL while hc says the
check is not UP (failc -q against hc's monitor).  The backend recovers: hc sets
RECOVER, and the service goes back to www1.
"""

from __future__ import annotations

import time

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
    # keep FAIL while hc does not find the service healthy (failc -q: exit 0 only if UP)
    if {[info exists env(HC_E2E_HC)] && [catch {exec $env(HC_E2E_FAILC) -h $env(HC_E2E_HC) -q -t 0.5 -r 0 web}]} {
        return FAIL
    }
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
            env = {"HC_E2E_FAILC": str(BIN / "failc")}
            cluster.start_failsh("www1", env={**env, "HC_E2E_HC": hc.address})
            cluster.start_failsh("www2", env=env)
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
