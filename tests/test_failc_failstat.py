"""failc and failstat as installed console scripts against real faild processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import FaildProcess, free_port, run_cli

from failover.client import Client

pytestmark = pytest.mark.process

COMMUNITIES = """\
*    reader  RO
*    admin   RW
"""


def assert_clean(result, code: int) -> None:
    """Exit status as expected, and any error is one line, never a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    if code not in (0, 2):
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr


# failc ---------------------------------------------------------------------

def test_failc_set_and_query(faild: FaildProcess) -> None:
    r = run_cli("failc", "-h", faild.address, "-m", "tested", "web", "up")
    assert_clean(r, 0)
    assert r.stdout.startswith("web UP since ")
    r = run_cli("failc", "-h", faild.address, "web")
    assert_clean(r, 0)
    assert r.stdout.startswith("web UP since ") and r.stdout.rstrip().endswith("s)")
    with faild.client() as c:
        assert c.history()[-1].reason == "tested"
    # -p supplies the port when HOST has none
    assert_clean(run_cli("failc", "-h", "127.0.0.1", "-p", str(faild.port), "web", "RECOVER"), 0)
    with faild.client() as c:
        assert c.get("web").state == "RECOVER"


def test_failc_quiet_exit_status(faild: FaildProcess) -> None:
    with faild.client() as c:
        c.set("web", "UP")
        c.set("db", "FAIL")
    up = run_cli("failc", "-q", "-h", faild.address, "web")
    assert_clean(up, 0)
    assert up.stdout == ""
    down = run_cli("failc", "-q", "-h", faild.address, "db")
    assert down.returncode == 1 and down.stdout == "" and down.stderr == ""


def test_failc_unknown_service_exits_1(faild: FaildProcess) -> None:
    r = run_cli("failc", "-h", faild.address, "nosuch")
    assert_clean(r, 1)
    assert r.stderr.startswith("failc: unknown service 'nosuch'")


def test_failc_denied_exits_1(faild_factory, tmp_path: Path) -> None:
    cfile = tmp_path / "communities"
    cfile.write_text(COMMUNITIES)
    f = faild_factory(communities=cfile)
    assert_clean(run_cli("failc", "-h", f.address, "-c", "admin", "web", "UP"), 0)
    assert_clean(run_cli("failc", "-h", f.address, "-c", "reader", "web"), 0)
    r = run_cli("failc", "-h", f.address, "-c", "reader", "web", "FAIL")
    assert_clean(r, 1)
    assert "no write access" in r.stderr
    r = run_cli("failc", "-h", f.address, "web")  # default community 'public' is not in the file
    assert_clean(r, 1)
    assert "no read access" in r.stderr


@pytest.mark.parametrize("args", [
    [],                                 # no service
    ["web", "SIDEWAYS"],                # bad state
    ["bad/name"],                       # bad service name
    ["-p", "70000", "web"],             # port out of range
    ["-p", "http", "web"],
    ["-t", "0", "web"],                 # timeout must be > 0
    ["-t", "soon", "web"],
    ["-r", "-1", "web"],
    ["web", "UP", "extra"],
    ["--no-such-option", "web"],
])
def test_failc_usage_errors_exit_2(args: list[str]) -> None:
    r = run_cli("failc", "-h", f"127.0.0.1:{free_port()}", *args)
    assert_clean(r, 2)
    assert "usage: failc" in r.stderr


def test_failc_timeout_against_stopped_faild_exits_3(faild: FaildProcess) -> None:
    assert faild.stop() == 0
    started = time.monotonic()
    r = run_cli("failc", "-h", faild.address, "-t", "0.3", "-r", "2", "web")
    elapsed = time.monotonic() - started
    assert_clean(r, 3)
    assert r.stderr.startswith(f"failc: no reply from tcp://{faild.address} after 3 tries")
    assert elapsed < 5, f"took {elapsed:.1f} s for 3 tries of 0.3 s"


def test_failc_unknown_host_exits_4() -> None:
    r = run_cli("failc", "-h", "no-such-host.invalid", "-t", "0.3", "web")
    assert_clean(r, 4)
    assert r.stderr.startswith("failc: unknown host 'no-such-host.invalid'")
    r = run_cli("failc", "-h", "127.0.0.1:99999", "web")
    assert_clean(r, 4)


def test_failc_help_and_version() -> None:
    r = run_cli("failc", "--help")
    assert_clean(r, 0)
    assert "exit codes:" in r.stdout and "-h HOST" in r.stdout
    r = run_cli("failc", "-V")
    assert_clean(r, 0)
    assert r.stdout.startswith("failc (failover) ")


# failstat ------------------------------------------------------------------

@pytest.fixture
def two_hosts(faild_factory) -> tuple[FaildProcess, str]:
    """One live faild with two services, and the address of a port where nothing listens."""
    up = faild_factory("up", node="alpha")
    with up.client() as c:
        c.set("web", "UP")
        c.set("db", "FAIL", "disk")
        c.call("lease", ttl=600)  # as a live failsh would: web UP is not stale
    return up, f"127.0.0.1:{free_port()}"


def test_failstat_table_one_host_down(two_hosts: tuple[FaildProcess, str]) -> None:
    up, down = two_hosts
    r = run_cli("failstat", "-t", "0.3", "-r", "0", up.address, down)
    assert_clean(r, 3)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["HOST", "SERVICE", "STATE", "LAST", "CHANGE", "AGE", "FLAGS"]
    rows = [line.split() for line in lines[1:]]
    assert [row[:3] for row in rows[:2]] == [[up.address, "db", "FAIL"], [up.address, "web", "UP"]]
    assert rows[2][:3] == [down, "-", "?"] and "no reply" in lines[3]
    assert r.stderr.startswith(f"failstat: no reply from tcp://{down}")


def test_failstat_json_one_host_down(two_hosts: tuple[FaildProcess, str]) -> None:
    up, down = two_hosts
    r = run_cli("failstat", "--json", "-t", "0.3", "-r", "0", up.address, down)
    assert_clean(r, 3)
    data = json.loads(r.stdout)
    assert [d["host"] for d in data] == [up.address, down]
    assert data[0]["name"] == "alpha"
    assert [(s["name"], s["state"], s["counter"]) for s in data[0]["services"]] == [
        ("db", "FAIL", 2), ("web", "UP", 1)]
    assert isinstance(data[0]["services"][0]["last_change"], float)
    assert "no reply" in data[1]["error"] and data[1]["exit"] == 3


def test_failstat_all_up_and_history(two_hosts: tuple[FaildProcess, str], faild_factory) -> None:
    up, _down = two_hosts
    empty = faild_factory("empty", node="beta")
    r = run_cli("failstat", "--history", "-n", "5", up.address, empty.address)
    assert_clean(r, 0)
    assert f"{empty.address}  -" in r.stdout and "(no services)" in r.stdout
    assert "db - -> FAIL  disk" in r.stdout
    r = run_cli("failstat", "--json", "--history", up.address)
    assert_clean(r, 0)
    history = json.loads(r.stdout)[0]["history"]
    assert [(t["service"], t["new"]) for t in history] == [("web", "UP"), ("db", "FAIL")]


def test_failstat_exit_status_is_the_worst(two_hosts: tuple[FaildProcess, str]) -> None:
    up, down = two_hosts
    r = run_cli("failstat", "-t", "0.3", "-r", "0", up.address, down, "no-such-host.invalid")
    assert_clean_multi = r.returncode == 4 and "Traceback" not in r.stderr
    assert assert_clean_multi, r
    assert len(r.stderr.strip().splitlines()) == 2
    r = run_cli("failstat", "-c", "nobody", up.address)
    assert_clean(r, 1)
    assert "no read access" in r.stderr


def test_failstat_usage_error() -> None:
    assert_clean(run_cli("failstat", "--history", "-n", "many"), 2)
    assert_clean(run_cli("failstat", "-n", "0"), 2)
    assert_clean(run_cli("failstat", "-p", "0"), 2)


def test_failstat_stale_up(faild_factory) -> None:
    """UP on a faild that reports no live failsh: stale in the table and the JSON, exit 6;
    hosts that do not answer say more (their code wins)."""
    f = faild_factory("stale", node="alpha")
    with f.client() as c:
        c.set("web", "UP", "started")
        c.set("db", "RECOVER")
        c.call("lease", ttl=60)
        c.call("lease", ttl=0)  # failsh stopped: the lease is released
    r = run_cli("failstat", f.address)
    assert r.returncode == 6, (r.stdout, r.stderr)
    row = next(line for line in r.stdout.splitlines() if " web " in line)
    assert "UP (stale: no failsh)" in row
    assert next(line for line in r.stdout.splitlines() if " db " in line).split()[2] == "RECOVER"
    assert r.stderr == "failstat: UP without a live failsh (stale): web on alpha\n"
    data = json.loads(run_cli("failstat", "--json", f.address).stdout)[0]
    assert data["lease"] is None and data["lease_end"]["why"] == "released"
    assert {s["name"]: s["stale"] for s in data["services"]} == {"db": False, "web": True}
    r = run_cli("failstat", "-t", "0.3", "-r", "0", f.address, f"127.0.0.1:{free_port()}")
    assert r.returncode == 3
    with f.client() as c:
        c.call("lease", ttl=60)
    assert run_cli("failstat", f.address).returncode == 0


def test_failstat_shows_flags_and_by(faild_factory) -> None:
    f = faild_factory("flags", node="alpha")
    with f.client() as c:
        c.set("web", "UP")
        c.set("db", "RECOVER")
        c.call("lease", ttl=600)
    assert run_cli("failc", "-h", f.address, "-m", "by hand", "mail", "FAIL").returncode == 0
    with Client(f.endpoint, agent="failctl") as c:
        c.maint(True, "web", "disk swap")
        c.prefer("db", "beta", "move")
    r = run_cli("failstat", "--history", f.address)
    assert r.returncode == 0, r.stderr
    flags = {line.split()[1]: line.split("  ")[-1].strip() for line in r.stdout.splitlines()[1:4]}
    assert flags == {"db": "switchover to beta", "mail": "", "web": "paused"} or \
        (flags["web"] == "paused" and flags["db"] == "switchover to beta"), r.stdout
    assert "mail - -> FAIL  by hand (by failc from 127.0.0.1)" in r.stdout
    with Client(f.endpoint, agent="failctl") as c:
        c.maint(True)
    r = run_cli("failstat", f.address)
    assert "paused (host)" in next(line for line in r.stdout.splitlines() if " db " in line)
    data = json.loads(run_cli("failstat", "--json", f.address).stdout)[0]
    assert set(data["maintenance"]) == {"*", "web"} and data["prefer"]["db"]["host"] == "beta"
    svc = {s["name"]: s for s in data["services"]}
    assert svc["web"]["paused"]["scope"] == "service" and svc["db"]["paused"]["scope"] == "host"
    assert svc["db"]["switchover"] == "beta" and svc["web"]["switchover"] is None
    assert svc["mail"]["by"] == "failc from 127.0.0.1" and svc["mail"]["reason"] == "by hand"
