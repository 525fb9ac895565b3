"""faildebug against a real failsh (control port, failsh -c) and a real faild (RW community):
the level really changes (what the daemon logs afterwards), and the community guards it."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster import Cluster
from support import FaildProcess, free_port, run_cli, wait_for

pytestmark = pytest.mark.process

SOLO = """proc up args {return UP}
proc down args {return RECOVER}
failsvc web interval 1
failsvc web start up
failsvc web stop down
"""


def faildebug(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("faildebug", *args)


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One host, one service without peers, failsh -c secret."""
    c = Cluster(tmp_path_factory.mktemp("faildebug"), names=("solo",), policy=SOLO, failsh_args=("-c", "secret"))
    with c.serving({"solo": "UP"}):
        yield c


def flip(c: Cluster) -> None:
    """Change web behind failsh's back (like failc) and wait until failsh has put it back UP."""
    with c.failds["solo"].client() as fc:
        fc.set("web", "RECOVER", "test: changed with failc")
    c.wait_states("web", {"solo": "RECOVER"}, timeout=5)
    c.wait_states("web", {"solo": "UP"}, timeout=10)


def test_failsh_level_changes_at_run_time(solo: Cluster) -> None:
    h = solo.failsh["solo"]
    port = str(h.control_port)
    assert "DEBUG failover.scheduler" not in h.log()

    denied = faildebug("-p", port, "scheduler", "debug")  # default community 'public'
    assert denied.returncode == 1 and "no write access" in denied.stderr
    wrong = faildebug("-p", port, "-c", "guess", "scheduler", "debug")
    assert wrong.returncode == 1

    ok = faildebug("-p", port, "-c", "secret", "scheduler", "debug")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "solo: log level of scheduler set to debug"
    flip(solo)
    wait_for(lambda: "DEBUG failover.scheduler: web:" in h.log(), 5, "failsh to log its decisions")

    # the other way: scheduler at warning hides its INFO lines (SIGINT's "state dumped" is one)
    assert faildebug("-h", f"127.0.0.1:{port}", "-c", "secret", "scheduler", "warning").returncode == 0
    dump = h.dumpfile
    mark = len(h.log())
    h.send(signal.SIGINT)
    wait_for(lambda: dump.exists() and "failsh on solo" in dump.read_text(), 5, "the state dump", ignore=(OSError,))
    time.sleep(0.3)
    assert "state dumped" not in h.log()[mark:]
    # 'all info' resets every facility, scheduler included
    assert faildebug("-p", port, "-c", "secret", "all", "info").returncode == 0
    dump.unlink()
    h.send(signal.SIGINT)
    wait_for(lambda: "INFO failover.scheduler: state dumped to" in h.log()[mark:], 5, "the INFO line again")


def test_faild_level_guarded_by_rw_community(tmp_path: Path, faild_factory: Callable[..., FaildProcess]) -> None:
    communities = tmp_path / "communities"
    communities.write_text("* public RO\n* admin RW\n")
    f = faild_factory(node="fd1", communities=communities)
    port, log = f.port, f.logfile
    try:
        with f.client("admin") as admin:
            admin.set("web", "UP", "first")
            wait_for(lambda: "web -> UP (first)" in log.read_text(), 5, "the INFO line of a change")

            ro = faildebug("--faild", "-p", str(port), "server", "error")
            assert ro.returncode == 1 and "no write access" in ro.stderr
            ok = faildebug("--faild", "-p", str(port), "-c", "admin", "server", "error")
            assert ok.returncode == 0 and "fd1: log level of server set to error" in ok.stdout
            admin.set("web", "RECOVER", "second")
            admin.set("web", "UP", "third")
            assert "faildebug" not in log.read_text()
            assert "(second)" not in log.read_text() and "(third)" not in log.read_text()

            assert faildebug("--faild", "-h", f"127.0.0.1:{port}", "-c", "admin", "server", "info").returncode == 0
            admin.set("web", "FAIL", "fourth")
            wait_for(lambda: "web -> FAIL (fourth)" in log.read_text(), 5, "INFO lines again")
    finally:
        f.stop()


def test_usage_and_unreachable() -> None:
    bad = faildebug("nosuchfacility", "debug")
    assert bad.returncode == 2 and "unknown facility" in bad.stderr
    bad = faildebug("server", "loud")
    assert bad.returncode == 2 and "unknown level" in bad.stderr
    gone = faildebug("-p", str(free_port()), "-t", "0.5", "server", "debug")
    assert gone.returncode == 3 and "no reply" in gone.stderr and "Traceback" not in gone.stderr
