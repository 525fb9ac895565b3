"""failctl as an installed console script against real faild and failsh processes: the
cluster table and its exit status, maintenance and switchover written to every faild
concerned, refusals, --watch, usage errors (docs/operations.md, "failctl")."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster import Cluster
from support import FaildProcess, cli_command, free_port, run_cli, wait_for

from failover.cli import common
from failover.client import Client

pytestmark = pytest.mark.process

# public reads (the peers' failsh poll with it), admin writes (failsh --faild-community, failctl -c)
COMMUNITIES = """\
*    public  RO
*    admin   RW
"""


def failctl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    r = run_cli("failctl", *args, timeout=timeout)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    return r


def rows(out: str, header: str) -> list[list[str]]:
    """The rows (split on blanks) of the table whose header line starts with ``header``."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    body = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        body.append(line.split())
    return body


def via_from(c: Cluster, node: str = "www2") -> list[str]:
    """failctl options: learn the cluster from ``node``'s failsh (its faild's port with -p)."""
    return ["--from", f"127.0.0.1:{c.monitor_ports[node]}", "-p", str(c.failds[node].port)]


def via_hosts(c: Cluster) -> list[str]:
    return [arg for f in c.failds.values() for arg in ("-H", f.address)]


# status ------------------------------------------------------------------------------------
@pytest.fixture
def web(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, communities={n: COMMUNITIES for n in ("www1", "www2")},
                failsh_args=("--faild-community", "admin"))
    try:
        c.start_master_then_slave()
        yield c
    finally:
        c.close()


def test_status_from_a_failsh(web: Cluster) -> None:
    r = failctl(*via_from(web), "-c", "public", "status")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "from failsh on www2" in r.stdout.splitlines()[0]
    hosts = rows(r.stdout, "HOST ")
    assert [h[:3] for h in hosts] == [["www1", "up", hosts[0][2]], ["www2", "up", hosts[1][2]]]
    assert all(h[3] == "left" for h in hosts)  # "2.4s left": a live failsh on both
    services = rows(r.stdout, "SERVICE ")
    assert services[0][:8] == ["web", "www1", "-", "www1", "1", "master", "UP", "yes"]
    assert services[1][:6] == ["www2", "2", "slave", "RECOVER", "yes", "-"]
    # -H gives the same picture, without the roles
    r = failctl(*via_hosts(web), "-c", "public", "status", "web")
    assert r.returncode == 0
    assert rows(r.stdout, "SERVICE ")[0][:7] == ["web", "www1", "-", "www1", "-", "UP", "yes"]


def test_status_json(web: Cluster) -> None:
    r = failctl("-c", "public", "status", "--json", *via_from(web))  # the options after the command too
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["exit"] == 0 and data["source"].startswith("failsh on www2")
    (svc,) = data["services"]
    assert (svc["name"], svc["holders"], svc["stale"], svc["ok"], svc["switchover"]) == ("web", ["www1"], [], True,
                                                                                         None)
    assert [(h["host"], h["order"], h["role"], h["state"], h["failsh"]) for h in svc["hosts"]] == [
        ("www1", 1, "master", "UP", True), ("www2", 2, "slave", "RECOVER", True)]
    assert all(h["lease"] > 0 and h["paused"] is None for h in data["hosts"])
    assert {h["name"] for h in data["hosts"]} == {"www1", "www2"}


def test_stale_up_is_never_the_holder(tmp_path: Path) -> None:
    """kill -9 of the only failsh: its faild still says UP, but nobody holds the service."""
    c = Cluster(tmp_path, names=("www1",), policy="proc up args {return UP}\nfailsvc web interval 1\n"
                "failsvc web start up\n")
    try:
        c.start()
        c.wait_states("web", {"www1": "UP"})
        c.failsh["www1"].kill9()
        wait_for(lambda: c.info("www1", "web") == ("UP", None), 10, "the lease to end")
        r = failctl("-H", c.failds["www1"].address, "status")
        assert r.returncode == common.EXIT_NO_HOLDER, r.stdout
        row = rows(r.stdout, "SERVICE ")[0]
        assert row[:2] == ["web", "NONE"] and "UP (stale: no failsh)" in r.stdout
        assert "no failsh (exited" in r.stdout  # why the lease ended, from host.lease_end
        data = json.loads(failctl("-H", c.failds["www1"].address, "status", "--json").stdout)
        assert data["services"][0]["stale"] == ["www1"] and data["services"][0]["holders"] == []
        assert data["hosts"][0]["lease_end"]["why"] == "exited"
    finally:
        c.close()


@pytest.fixture
def two_failds(faild_factory: Callable[..., FaildProcess]) -> list[FaildProcess]:
    return [faild_factory(f"h{i}", node=f"node{i}") for i in (1, 2)]


def hold(f: FaildProcess, service: str, state: str = "UP", lease: float = 60) -> None:
    """What a failsh would leave: the service's state and a live lease (taken by the test)."""
    with f.client() as c:
        c.set(service, state, "test")
        c.call("lease", ttl=lease)


def test_two_live_holders_exit_8(two_failds: list[FaildProcess]) -> None:
    a, b = two_failds
    hold(a, "web")
    hold(b, "web")
    r = failctl("-H", a.address, "-H", b.address, "status")
    assert r.returncode == common.EXIT_SPLIT
    assert rows(r.stdout, "SERVICE ")[0][:4] == ["web", "node1", "node2", "(SPLIT)"]
    # a split brain is certain, whatever else is wrong: still 8 with a host that does not answer
    r = failctl("-t", "0.3", "-r", "0", "-H", a.address, "-H", b.address, "-H", f"127.0.0.1:{free_port()}", "status")
    assert r.returncode == common.EXIT_SPLIT


def test_exit_status_of_hosts_that_do_not_answer(two_failds: list[FaildProcess]) -> None:
    a, b = two_failds
    hold(a, "web")
    hold(b, "web", "RECOVER")
    assert failctl("-H", a.address, "-H", b.address, "status").returncode == 0
    down = f"127.0.0.1:{free_port()}"
    r = failctl("-t", "0.3", "-r", "0", "-H", a.address, "-H", down, "status")
    assert r.returncode == common.EXIT_UNREACHABLE
    assert [down, "DOWN", "?", "-"] in rows(r.stdout, "HOST ") and f"failctl: {down}: no reply from" in r.stderr
    r = failctl("-H", a.address, "-H", "no-such-host.invalid", "status")
    assert r.returncode == common.EXIT_UNKNOWN_HOST and "unknown host 'no-such-host.invalid'" in r.stderr
    r = failctl("-t", "0.3", "--from", f"127.0.0.1:{free_port()}", "status")
    assert r.returncode == common.EXIT_UNREACHABLE and r.stderr.startswith("failctl: no snapshot from")
    hold(b, "web", "FAIL")
    with a.client() as c:
        c.set("web", "RECOVER")
    assert failctl("-H", a.address, "-H", b.address, "status").returncode == common.EXIT_NO_HOLDER
    r = failctl("-H", a.address, "status", "nosuch")
    assert r.returncode == 1 and "unknown service 'nosuch'" in r.stderr


def test_paused_up_without_failsh_stays_the_holder(two_failds: list[FaildProcess]) -> None:
    """A failsh upgrade in a maintenance window: the host paused, its failsh stopped, the
    service left UP.  Not stale: the administrator keeps it there on purpose."""
    a, b = two_failds
    hold(a, "web")
    hold(b, "web", "RECOVER")
    with Client(a.endpoint, agent="failctl") as c:
        c.maint(True, reason="failsh upgrade")
        c.call("lease", ttl=0)  # failsh stops
    r = failctl("-H", a.address, "-H", b.address, "status")
    assert r.returncode == 0, r.stdout
    row = rows(r.stdout, "SERVICE ")[0]
    assert row[:3] == ["web", "node1", "(paused)"] and "UP (paused, no failsh)" in r.stdout
    data = json.loads(failctl("-H", a.address, "-H", b.address, "status", "--json").stdout)["services"][0]
    assert data["holders"] == ["node1"] and data["stale"] == [] and data["hosts"][0]["kept"] is True
    r = run_cli("failstat", a.address)
    assert r.returncode == 0 and "UP (paused, no failsh)" in r.stdout and "paused (host)" in r.stdout
    with Client(a.endpoint, agent="failctl") as c:
        c.maint(False)
    assert failctl("-H", a.address, "-H", b.address, "status").returncode == common.EXIT_NO_HOLDER


def test_from_without_a_snapshot_falls_back_to_the_hosts_given(two_failds: list[FaildProcess]) -> None:
    a, b = two_failds
    hold(a, "web")
    r = failctl("-t", "0.3", "-r", "0", "--from", f"127.0.0.1:{free_port()}", "-H", a.address, "-H", b.address,
                "status")
    assert r.returncode == common.EXIT_UNREACHABLE
    assert rows(r.stdout, "SERVICE ")[0][:2] == ["web", "node1"]
    assert "no snapshot from" in r.stderr and "only the -H hosts asked" in r.stderr


def test_watch_redraws_until_ctrl_c(two_failds: list[FaildProcess], tmp_path: Path) -> None:
    a, _b = two_failds
    hold(a, "web")
    out = tmp_path / "watch.out"
    with open(out, "w") as f:
        proc = subprocess.Popen([*cli_command("failctl"), "-H", a.address, "status", "--watch", "0.1"],
                                stdout=f, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: out.read_text().count("failctl status at") >= 3, 15, "three tables")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0  # the last table's status: web has one live holder
        assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.kill()


# pause / resume ----------------------------------------------------------------------------
def flags(f: FaildProcess) -> tuple[dict, dict]:
    with f.client(community="admin") as c:
        reply = c.ask("list")
    return ({k: (v.reason, v.by) for k, v in reply.maintenance.items()},
            {k: (v.host, v.reason) for k, v in reply.prefer.items()})


def test_pause_and_resume(web: Cluster) -> None:
    w1, w2 = web.failds["www1"], web.failds["www2"]
    r = failctl(*via_from(web), "-c", "admin", "pause", "web", "-m", "db migration")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["www1: web paused", "www2: web paused"]
    for f in (w1, w2):
        assert flags(f)[0] == {"web": ("db migration", "failctl from 127.0.0.1")}
    r = failctl(*via_from(web), "-c", "admin", "pause", "web")  # idempotent: says so, keeps the first
    assert r.returncode == 0 and r.stdout.count("web already paused since") == 2 and "db migration" in r.stdout
    r = failctl(*via_hosts(web), "-c", "admin", "pause", "--host", "www2", "-m", "kernel update")
    assert (r.returncode, r.stdout) == (0, "www2: the whole host paused\n")
    assert flags(w2)[0]["*"] == ("kernel update", "failctl from 127.0.0.1") and "*" not in flags(w1)[0]
    r = failctl(*via_from(web), "-c", "public", "status")
    assert r.returncode == 0
    paused = {row[0]: row for row in rows(r.stdout, "HOST ")}
    assert paused["www2"][-2:] == ["paused", "(host)"] and paused["www1"][-1] == "-"
    assert "www2: whole host paused since" in r.stdout and "kernel update" in r.stdout
    assert "web on www1, www2: paused since" in r.stdout or "web on www2, www1: paused since" in r.stdout
    data = json.loads(failctl(*via_from(web), "-c", "public", "status", "--json").stdout)
    assert data["services"][0]["paused_on"] == ["www1", "www2"]
    assert data["services"][0]["hosts"][1]["paused"]["scope"] == "service"
    # one service on one host, by the host's own address (neither -H nor --from)
    r = failctl("-c", "admin", "resume", "--host", w1.address, "web")
    assert (r.returncode, r.stdout) == (0, "www1: web resumed\n")
    assert flags(w1)[0] == {}
    r = failctl("-c", "admin", "resume", "--host", w1.address, "web")
    assert (r.returncode, r.stdout) == (0, "www1: web was not paused\n")
    r = failctl(*via_hosts(web), "-c", "admin", "resume", "--host", "www2")
    assert (r.returncode, r.stdout) == (0, "www2: the whole host resumed\n")
    r = failctl(*via_hosts(web), "-c", "admin", "resume", "web")
    assert sorted(r.stdout.splitlines()) == ["www1: web was not paused", "www2: web resumed"]
    assert flags(w1)[0] == flags(w2)[0] == {}


def test_pause_refusals(web: Cluster) -> None:
    r = failctl(*via_hosts(web), "-c", "public", "pause", "web")
    assert r.returncode == 1 and r.stdout == ""
    assert sorted(line.split(":")[0] for line in r.stderr.splitlines()) == ["www1", "www2"]
    assert "no write access" in r.stderr and "(nothing changed there)" in r.stderr
    r = failctl(*via_hosts(web), "-c", "admin", "pause", "wbe")
    assert r.returncode == 1 and "unknown service 'wbe'" in r.stderr and "--force" in r.stderr
    assert flags(web.failds["www1"])[0] == {}
    r = failctl(*via_hosts(web), "-c", "admin", "pause", "--host", "www9")
    assert r.returncode == 2 and "unknown host 'www9': the cluster is www1, www2" in r.stderr
    r = failctl(*via_hosts(web), "-c", "admin", "pause", "--force", "newsvc")
    assert r.returncode == 0 and flags(web.failds["www1"])[0].keys() == {"newsvc"}
    failctl(*via_hosts(web), "-c", "admin", "resume", "newsvc")
    down = f"127.0.0.1:{free_port()}"
    r = failctl(*via_hosts(web), "-H", down, "-t", "0.3", "-r", "0", "-c", "admin", "pause", "web")
    assert r.returncode == 3
    assert sorted(r.stdout.splitlines()) == ["www1: web paused", "www2: web paused"]
    assert r.stderr.startswith(f"{down}: no reply from") and "(nothing changed there)" in r.stderr
    failctl(*via_hosts(web), "-c", "admin", "resume", "web")


def test_an_older_faild_is_named(tmp_path: Path) -> None:
    """A server of protocol version 1 without maint (failsh's control port stands in for an
    older faild): one clear line, exit 1."""
    c = Cluster(tmp_path, names=("solo",), policy="failsvc web interval 1\n")
    try:
        c.start()
        port = c.failsh["solo"].control_port
        wait_for(lambda: failctl("-H", f"127.0.0.1:{port}", "status").returncode != 3, 10, "the control port")
        r = failctl("-H", f"127.0.0.1:{port}", "pause", "--host", "solo")
        assert r.returncode == 1
        assert r.stderr == (f"solo: faild on 127.0.0.1:{port} is too old for maintenance (it does not know "
                            "the op 'maint') (nothing changed there)\n")
    finally:
        c.close()


# switchover --------------------------------------------------------------------------------
def test_switchover_writes_every_faild(web: Cluster) -> None:
    r = failctl(*via_from(web), "-c", "admin", "switchover", "web", "--to", "www2", "-m", "www1 hardware swap")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["www1: web: switchover to www2", "www2: web: switchover to www2"]
    for f in web.failds.values():
        assert flags(f)[1] == {"web": ("www2", "www1 hardware swap")}
    r = failctl(*via_from(web), "-c", "public", "status", "--json")
    assert json.loads(r.stdout)["services"][0]["switchover"] == "www2"
    r = failctl(*via_from(web), "-c", "public", "status")
    assert rows(r.stdout, "SERVICE ")[0][2] == "www2" and "switchover to www2 since" in r.stdout
    r = failctl(*via_hosts(web), "-c", "admin", "switchover", "web", "--clear")
    assert r.returncode == 0 and r.stdout.count("web: switchover target cleared") == 2
    assert flags(web.failds["www1"])[1] == flags(web.failds["www2"])[1] == {}


def test_switchover_refusals(web: Cluster) -> None:
    r = failctl(*via_from(web), "-c", "admin", "switchover", "web", "--to", "www3")
    assert r.returncode == 1 and r.stderr == "failctl: www3 is not a host of web (its hosts: www1, www2)\n"
    r = failctl(*via_hosts(web), "-c", "admin", "switchover", "web", "--to", "www3")
    assert r.returncode == 1 and "www3 is not one of the hosts asked: www1, www2" in r.stderr
    failctl(*via_hosts(web), "-c", "admin", "pause", "--host", "www2", "-m", "kernel")
    r = failctl(*via_hosts(web), "-c", "admin", "switchover", "web", "--to", "www2")
    assert r.returncode == 1 and "www2 cannot take web: the whole host is paused there" in r.stderr
    failctl(*via_hosts(web), "-c", "admin", "resume", "--host", "www2")
    for f in web.failds.values():
        assert flags(f)[1] == {}  # nothing written
    # a target whose faild does not answer (www2's stopped: -H names its address still)
    web.failds["www2"].stop()
    r = failctl(*via_hosts(web), "-t", "0.3", "-r", "0", "-c", "admin", "switchover", "web", "--to",
                web.failds["www2"].address)
    assert r.returncode == 3 and "cannot take web: its faild does not answer" in r.stderr
    web.failds["www2"].start()


def test_switchover_to_a_host_without_failsh(two_failds: list[FaildProcess]) -> None:
    a, b = two_failds
    hold(a, "web")
    with b.client() as c:
        c.set("web", "RECOVER")
    r = failctl("-H", a.address, "-H", b.address, "switchover", "web", "--to", "node2")
    assert r.returncode == 1 and "node2 cannot take web: no failsh runs there (no failsh)" in r.stderr
    r = failctl("-H", a.address, "-H", b.address, "switchover", "web", "--to", "node2", "--force")
    assert r.returncode == 0
    with Client(a.endpoint) as c:
        assert c.ask("get", service="web").prefer["web"].host == "node2"


# the command line -----------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    [], ["status", "bad/name"], ["pause"], ["resume"], ["switchover", "web"],
    ["switchover", "web", "--to", "a", "--clear"], ["switchover", "--to", "a"], ["status", "--watch", "0"],
    ["status", "--watch", "soon"], ["-p", "0", "status"], ["frobnicate"], ["pause", "web", "-m", "x" * 257],
    ["--curve-secret", "/nonexistent", "status"],
])
def test_usage_errors_exit_2(args: list[str]) -> None:
    r = failctl("-H", f"127.0.0.1:{free_port()}", *args)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "usage: failctl" in r.stderr or r.stderr.startswith("failctl: ")


def test_help() -> None:
    r = failctl("--help")
    assert r.returncode == 0 and "exit codes:" in r.stdout
    for code in ("7  (failctl status)", "8  (failctl status)", "3  faild did not answer"):
        assert code in r.stdout
    for command in ("status", "pause", "resume", "switchover"):
        r = failctl(command, "--help")
        assert r.returncode == 0 and f"usage: failctl {command}" in r.stdout and "exit status" in r.stdout
