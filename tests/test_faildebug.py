"""faildebug against a real failsh (control port, failsh -c) and a real faild (RW community):
the level really changes (what the daemon logs afterwards), and the community guards it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opscluster import Cluster, free_port, wait_until

from failover.client import Client

FAILDEBUG = [sys.executable, "-m", "failover.cli.faildebug"]
SOLO = """proc up args {return UP}
proc down args {return RECOVER}
failsvc web interval 1
failsvc web start up
failsvc web stop down
"""


def faildebug(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FAILDEBUG, *args], capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One host, one service without peers, failsh -c secret."""
    c = Cluster(tmp_path_factory.mktemp("faildebug"), names=("solo",), policy=SOLO,
                failsh_args=("-c", "secret"))
    try:
        c.start()
        c.wait_states({"solo": {"web": "UP"}})
        yield c
    finally:
        c.stop()


def flip(c: Cluster) -> None:
    """Change web behind failsh's back (like failc) and wait until failsh has put it back UP."""
    h = c["solo"]
    with Client(f"tcp://127.0.0.1:{h.faild_port}", timeout=2, retries=0) as fc:
        fc.set("web", "RECOVER", "test: changed with failc")
    c.wait_states({"solo": {"web": "RECOVER"}}, timeout=5)
    c.wait_states({"solo": {"web": "UP"}}, timeout=10)


def test_failsh_level_changes_at_run_time(solo: Cluster) -> None:
    h = solo["solo"]
    port = str(h.control_port)
    assert "DEBUG failover.scheduler" not in h.failsh_log

    denied = faildebug("-p", port, "scheduler", "debug")  # default community 'public'
    assert denied.returncode == 1 and "no write access" in denied.stderr
    wrong = faildebug("-p", port, "-c", "guess", "scheduler", "debug")
    assert wrong.returncode == 1

    ok = faildebug("-p", port, "-c", "secret", "scheduler", "debug")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "solo: log level of scheduler set to debug"
    flip(solo)
    wait_until(lambda: "DEBUG failover.scheduler: web:" in h.failsh_log, 5, "failsh to log its decisions")

    # the other way: scheduler at warning hides its INFO lines (SIGINT's "state dumped" is one)
    assert faildebug("-h", f"127.0.0.1:{port}", "-c", "secret", "scheduler", "warning").returncode == 0
    dump = h.dir / "failsh.dump"
    mark = len(h.failsh_log)
    h.failsh.send_signal(signal.SIGINT)
    wait_until(lambda: dump.exists() and "failsh on solo" in dump.read_text(), 5, "the state dump")
    time.sleep(0.3)
    assert "state dumped" not in h.failsh_log[mark:]
    # 'all info' resets every facility, scheduler included
    assert faildebug("-p", port, "-c", "secret", "all", "info").returncode == 0
    dump.unlink()
    h.failsh.send_signal(signal.SIGINT)
    wait_until(lambda: "INFO failover.scheduler: state dumped to" in h.failsh_log[mark:], 5, "the INFO line again")


def test_faild_level_guarded_by_rw_community(tmp_path: Path) -> None:
    communities = tmp_path / "communities"
    communities.write_text("* public RO\n* admin RW\n")
    port = free_port()
    log = tmp_path / "faild.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "failover.cli.faild", "-F", "-l", "127.0.0.1", "-p", str(port),
                                 "-s", str(tmp_path / "state"), "-r", str(tmp_path / "pid"), "-N", "fd1",
                                 "-c", str(communities)], stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: "serving" in log.read_text(), 15, "faild to serve")
        with Client(f"tcp://127.0.0.1:{port}", "admin", timeout=2, retries=0) as admin:
            admin.set("web", "UP", "first")
            wait_until(lambda: "web -> UP (first)" in log.read_text(), 5, "the INFO line of a change")

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
            wait_until(lambda: "web -> FAIL (fourth)" in log.read_text(), 5, "INFO lines again")
    finally:
        proc.terminate()
        proc.wait(10)


def test_usage_and_unreachable() -> None:
    bad = faildebug("nosuchfacility", "debug")
    assert bad.returncode == 2 and "unknown facility" in bad.stderr
    bad = faildebug("server", "loud")
    assert bad.returncode == 2 and "unknown level" in bad.stderr
    gone = faildebug("-p", str(free_port()), "-t", "0.5", "server", "debug")
    assert gone.returncode == 3 and "no reply" in gone.stderr and "Traceback" not in gone.stderr
