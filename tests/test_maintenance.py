"""Operating failsh in production, end to end on loopback (tests/cluster.py): maintenance
(pause and resume), switchover, the failback policy, flap protection, takeovers that say
why, and a failc change acted on at once.  The rules themselves are table-tested in
tests/test_gates.py; here real faild and failsh processes show that the engine reads the
inputs (the local faild's maintenance and switchover targets, the peers') and acts on them.

The administrator's side is faild's protocol (docs/protocol.md, "Operations for
administrators"), spoken by a Client named "failctl", as failctl does.  failsh runs with
``-d scheduler`` so that its decision lines (the notes, logged at DEBUG when they change)
can be read in its log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster, both_up
from support import http_get, prom_value, run_cli, wait_for
from test_failsh import WEB

from failover.client import Client

pytestmark = pytest.mark.process

NORECLAIM = WEB.replace("failsvc web reclaim reclaimweb\n", "")


def admin(c: Cluster, host: str) -> Client:
    """What failctl does: a client of host's faild that names itself."""
    return Client(c.failds[host].endpoint, timeout=2.0, retries=1, agent="failctl")


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[list[Cluster]]:
    made: list[Cluster] = []
    yield made
    for c in made:
        c.close()


def cluster(clusters: list[Cluster], tmp_path: Path, policy: str, **options: object) -> Cluster:
    c = Cluster(tmp_path / f"c{len(clusters)}", ["www1", "www2"], policy,
                failsh_args=["-d", "scheduler"], **options)  # type: ignore[arg-type]
    clusters.append(c)
    return c


def logged(c: Cluster, host: str, text: str, timeout: float = 5.0) -> None:
    wait_for(lambda: text in c.failsh[host].log(), timeout, lambda: f"{host} to log {text!r}\n{c.logs()}")


STEADY = {"www1": "UP", "www2": "RECOVER"}


def test_a_paused_master_is_not_taken_over_even_without_its_failsh(clusters: list[Cluster], tmp_path: Path) -> None:
    c = cluster(clusters, tmp_path, WEB)
    c.start_master_then_slave()
    with admin(c, "www1") as a:
        a.maint(True, "web", "kernel update")
    logged(c, "www1", "web: paused: kernel update (by failctl")
    logged(c, "www2", "web: wait: master www1 is paused: kernel update (by failctl")
    c.failsh["www1"].kill9()
    wait_for(lambda: c.info("www1", "web")[1] is None, 5, "faild to end the dead failsh's lease")
    samples = c.watch("web", 3.0)  # ten of www2's intervals; www1 would count FAIL after 0.75 s
    assert all(s == STEADY for s in samples), samples
    assert c.markers("www2", "web") == []
    # resume: the rule applies again, and www1's failsh is gone
    with admin(c, "www1") as a:
        a.maint(False, "web")
    c.wait_states("web", {"www2": "UP"})
    logged(c, "www2", "web: RECOVER -> UP: master www1 down (lease ended because the failsh process exited)")


def test_a_paused_slave_holding_the_service_is_not_made_to_hand_back(clusters: list[Cluster], tmp_path: Path) -> None:
    c = cluster(clusters, tmp_path, WEB)
    c.start_failds()
    c.start_failsh("www2")
    c.wait_states("web", {"www2": "UP"})  # www1 has no failsh: www2 serves
    with admin(c, "www2") as a:
        a.maint(True, None, "backup running")  # the whole host
    logged(c, "www2", "web: paused: backup running (by failctl")
    c.start_failsh("www1")
    logged(c, "www1", "web: wait: slave www2 holds it and is paused: backup running")
    samples = c.watch("web", 1.5)
    assert all(s == {"www1": "RECOVER", "www2": "UP"} for s in samples), samples
    with admin(c, "www2") as a:
        a.maint(False, None)
    logged(c, "www2", "web: resumed: backup running (by failctl")
    samples = c.sample("web", lambda s: s == STEADY, effective=True)
    assert not any(both_up(s) for s in samples), samples


def test_upgrading_failsh_under_a_host_pause_moves_nothing(clusters: list[Cluster], tmp_path: Path) -> None:
    """failctl pause --host www1; restart failsh on www1; failctl resume --host www1."""
    c = cluster(clusters, tmp_path, WEB)
    c.start_master_then_slave()
    with admin(c, "www1") as a:
        a.maint(True, None, "failsh upgrade")
    logged(c, "www1", "web: paused: failsh upgrade (by failctl")
    assert c.failsh["www1"].stop() == 0  # SIGTERM: a paused service is left UP
    assert "web: paused: left UP as failsh stops" in c.failsh["www1"].log()
    assert c.state("www1", "web") == "UP"
    c.start_failsh("www1")
    logged(c, "www1", "web: UP and paused in the local faild: adopted as it is, no re-decision")
    wait_for(lambda: c.failsh["www1"].log().count("web: paused: failsh upgrade") == 2, 5, "the new failsh's pause")
    assert "web: none:" not in c.failsh["www1"].log().split("adopted as it is")[1]  # no run decided meanwhile
    c.wait_states("web", STEADY, effective=True)  # the new failsh holds the lease
    with admin(c, "www1") as a:
        a.maint(False, None)
    logged(c, "www1", "web: resumed: failsh upgrade (by failctl")
    samples = c.watch("web", 1.0)
    assert all(s == STEADY for s in samples), samples
    assert c.markers("www1", "web") == ["start"]  # started once, never stopped
    assert c.markers("www2", "web") == []


def test_a_switchover_sticks_until_it_is_cleared(clusters: list[Cluster], tmp_path: Path) -> None:
    c = cluster(clusters, tmp_path, WEB)
    c.start_master_then_slave()
    with admin(c, "www2") as a:
        a.prefer("web", "www2", "new hardware")
    samples = c.sample("web", lambda s: s == {"www1": "RECOVER", "www2": "UP"}, effective=True)
    assert not any(both_up(s) for s in samples), samples
    for host in ("www1", "www2"):
        logged(c, host, "web: switchover to www2 requested by failctl")
    with c.failds["www2"].client() as f:
        up = [t for t in f.history("web") if t.new.value == "UP"][-1]
    assert up.reason.startswith("switchover to www2 requested by failctl"), up
    # the old master's failsh restarts: it does not take the service back
    assert c.failsh["www1"].stop() == 0
    c.start_failsh("www1")
    c.wait_states("web", {"www1": "RECOVER", "www2": "UP"}, effective=True)
    samples = c.watch("web", 1.5)
    assert all(s == {"www1": "RECOVER", "www2": "UP"} for s in samples), samples
    # cleared: the policy's order again (failback auto: www1 takes it back)
    with admin(c, "www2") as a:
        a.prefer("web", None)
    samples = c.sample("web", lambda s: s == STEADY, effective=True)
    assert not any(both_up(s) for s in samples), samples
    logged(c, "www1", "web: switchover to www2 cleared")


def test_failback_manual_keeps_the_service_on_the_slave(clusters: list[Cluster], tmp_path: Path) -> None:
    c = cluster(clusters, tmp_path, WEB + "failsvc web failback manual\n")
    c.start_master_then_slave()
    c.failsh["www1"].kill9()
    c.wait_states("web", {"www2": "UP"})
    c.start_failsh("www1")
    c.wait_states("web", {"www1": "RECOVER", "www2": "UP"}, effective=True)
    logged(c, "www1", "web: wait: slave www2 holds it (failback manual)")
    logged(c, "www2", "web: wait: failback manual: keeping it while master www1 is RECOVER")
    samples = c.watch("web", 1.5)
    assert all(s == {"www1": "RECOVER", "www2": "UP"} for s in samples), samples
    # a failure of the slave (here: its failsh stops) gives the service back
    assert c.failsh["www2"].stop() == 0
    c.wait_states("web", {"www1": "UP"})


def test_failback_delay_waits_for_the_master_to_be_ready_that_long(clusters: list[Cluster], tmp_path: Path) -> None:
    c = cluster(clusters, tmp_path, WEB + "failsvc web failback delay 2\n")
    c.start_master_then_slave()
    c.failsh["www1"].kill9()
    c.wait_states("web", {"www2": "UP"})
    c.start_failsh("www1")
    samples = c.sample("web", lambda s: s == STEADY, effective=True)
    assert not any(both_up(s) for s in samples), samples
    log = c.failsh["www2"].log()
    waited = log.index("web: wait: failback delay: handing back once master www1 has been ready for 2 s")
    assert waited < log.rindex("web: UP -> RECOVER: master www1 is RECOVER: handing back")


def test_a_flapping_service_is_held_where_it_is(clusters: list[Cluster], tmp_path: Path) -> None:
    """flap 2 1: a third change of holder within a minute holds the service."""
    c = cluster(clusters, tmp_path, WEB + "failsvc web flap 2 1\n")
    c.start_master_then_slave()
    www1 = c.failds["www1"].address
    assert run_cli("failc", "-h", www1, "-m", "broken", "web", "FAIL").returncode == 0
    # 1: www1 -> www2; 2: www1 reclaimed it (RECOVER), www2 handed back (within milliseconds)
    wait_for(lambda: c.markers("www2", "web") == ["start", "stop"], 5, lambda: c.logs())
    c.wait_states("web", STEADY)
    assert run_cli("failc", "-h", www1, "-m", "broken again", "web", "FAIL").returncode == 0
    c.wait_states("web", {"www1": "RECOVER", "www2": "UP"})  # 3: www2 holds it now
    logged(c, "www2", "web: flapping: changed holder 3 times within 1 min (more than 2): held where it is (www2)")
    samples = c.watch("web", 1.5)
    assert all(s == {"www1": "RECOVER", "www2": "UP"} for s in samples), samples
    assert c.failsh["www2"].log().count("web: flapping: changed holder") == 1
    assert "WARNING failover.scheduler: web: flapping" in c.failsh["www2"].log()
    logged(c, "www1", "wait: slave www2 holds it (flapping: more than 2 holder changes within 1 min)")


def test_each_takeover_says_which_detection_fired(clusters: list[Cluster], tmp_path: Path) -> None:
    c = cluster(clusters, tmp_path, NORECLAIM + "failsvc web flap off\n", http=True)
    c.start_master_then_slave()
    metrics = f"http://127.0.0.1:{c.http_ports['www2']}/metrics"

    def took_over(why: str, cause: str, count: float = 1.0) -> None:
        c.wait_states("web", {"www2": "UP"})
        line = f"web: RECOVER -> UP: master www1 down ({why}) and no slave is UP"
        logged(c, "www2", line)
        with c.failds["www2"].client() as f:
            assert any(t.reason.startswith(line[len("web: RECOVER -> UP: "):]) for t in f.history("web")), why
        assert prom_value(http_get(metrics)[2], "failover_takeovers_total", service="web", cause=cause) == count

    def back() -> None:
        run_cli("failc", "-h", c.failds["www1"].address, "web", "RECOVER")
        c.wait_states("web", STEADY, effective=True)

    c.failsh["www1"].kill9()
    took_over("lease ended because the failsh process exited", "lease-exited")
    c.start_failsh("www1")
    back()
    assert c.failsh["www1"].stop() == 0
    took_over("lease ended because it was released (graceful stop)", "lease-released")
    c.start_failsh("www1")
    back()
    r = run_cli("failc", "-h", c.failds["www1"].address, "-m", "disk swap", "web", "FAIL")
    assert r.returncode == 0, r.stderr
    c.wait_states("web", {"www2": "UP"})
    with c.failds["www1"].client() as f:
        by = f.get("web").by  # faild's "failc from ADDRESS", or the address alone
    who = f" by {by}" if by else ""
    took_over(f"set FAIL{who}: disk swap", "set-fail")
    logged(c, "www1", f"web: changed outside failsh to FAIL{who}: disk swap")
    back()
    c.failds["www1"].kill9()
    c.wait_states("web", {"www2": "UP"})
    logged(c, "www2", "web: RECOVER -> UP: master www1 down (faild silent for ")
    assert prom_value(http_get(metrics)[2], "failover_takeovers_total", service="web", cause="faild-silent") == 1


def test_a_failc_change_is_acted_on_before_the_next_run(clusters: list[Cluster], tmp_path: Path) -> None:
    """Interval 10: failsh polls its own faild often and runs the service at once when its
    record changed from outside; its change hint makes the slave poll at once too."""
    c = cluster(clusters, tmp_path, NORECLAIM + "failsvc web interval 10\n")
    c.start_master_then_slave()
    r = run_cli("failc", "-h", c.failds["www1"].address, "-m", "moving it", "web", "FAIL")
    assert r.returncode == 0, r.stderr
    samples = c.sample("web", lambda s: s == {"www1": "FAIL", "www2": "UP"}, timeout=2.0, period=0.05,
                       effective=True)  # well before the next run, 10 s away
    assert not any(both_up(s) for s in samples), samples
