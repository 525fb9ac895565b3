"""A service run whose inputs did not change is skipped (failover/shell/runner.py), and one
whose inputs changed is taken: a real faild per host, a real failsh on www2.

www1 is only a faild: the test holds its failsh lease and sets its records, as failc
would.  www2's failsh runs ``web`` (slave of www1) and ``chk`` (its own, with a check
procedure) every 0.2 s, logs at debug level and serves /metrics, where
failover_service_runs_total{result="evaluated|skipped"} counts its runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster
from support import TRANSIENT, http_get, prom_value, wait_for

from failover.states import State

pytestmark = pytest.mark.process

POLICY = """proc chk_check args { mark chk check; return UP }
failsvc web interval 0.2
failsvc web masters {www1}
failsvc web slaves {www2}
failsvc web start {svc_start web}
failsvc web stop {svc_stop web}
failsvc chk interval 0.2
failsvc chk masters {www2}
failsvc chk start {svc_start chk}
failsvc chk check chk_check
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, policy=POLICY, http=True, failsh_args=["-d", "scheduler"])
    try:
        c.start_failds()
        with c.failds["www1"].client() as www1:
            www1.call("lease", ttl=600)  # a failsh holds www1's lease: its states count
            www1.set("web", State.UP, "test: www1 serves")
        c.start_failsh("www2")
        c.wait_states("web", {"www1": "UP", "www2": "RECOVER"})
        c.wait_states("chk", {"www2": "UP"})
        yield c
    finally:
        c.close()


def runs(c: Cluster) -> tuple[float, float]:
    """(evaluated, skipped) runs of www2's failsh so far."""
    def scrape() -> tuple[float, float] | None:
        status, _, text = http_get(f"http://127.0.0.1:{c.http_ports['www2']}/metrics")
        evaluated = prom_value(text, "failover_service_runs_total", result="evaluated")
        skipped = prom_value(text, "failover_service_runs_total", result="skipped")
        return (evaluated, skipped) if status == 200 and evaluated is not None and skipped is not None else None
    return wait_for(scrape, 10, "www2's /metrics", ignore=TRANSIENT)


def checks(c: Cluster) -> int:
    return c.markers("www2", "chk").count("check")


def quiet_window(c: Cluster) -> tuple[int, int] | None:
    """Twenty runs in which nothing changes: every one is skipped (a window with an
    evaluated run, say the local faild's reply late on a loaded machine, is tried again).
    Returns how many times chk's check procedure had run at the window's start and end."""
    before, checked = runs(c), checks(c)
    for _ in range(10):
        wait_for(lambda start=before[1]: runs(c)[1] >= start + 20, 10, "twenty more runs of www2's services")
        after, now_checked = runs(c), checks(c)
        if after[0] == before[0]:
            return checked, now_checked
        before, checked = after, now_checked
    return None


def test_unchanged_runs_are_skipped_and_a_peer_change_is_acted_on(cluster: Cluster) -> None:
    c = cluster
    assert quiet_window(c) is not None, "every window of twenty runs had an evaluated run, though nothing changed"
    assert "web: unchanged, skipped" in c.failsh["www2"].log()  # failsh -d says so, at debug level
    evaluated, _ = runs(c)
    with c.failds["www1"].client() as www1:
        www1.set("web", State.FAIL, "test: www1 lost it")  # as failc -h www1 web FAIL would
        c.wait_states("web", {"www1": "FAIL", "www2": "UP"})
        assert runs(c)[0] > evaluated
        assert c.markers("www2", "web") == ["start"]
        www1.set("web", State.UP, "test: www1 is back")  # a master UP again: www2 hands back
        c.wait_states("web", {"www1": "UP", "www2": "RECOVER"})
    assert c.markers("www2", "web") == ["start", "stop"]


def test_a_check_runs_every_interval_while_the_decision_is_skipped(cluster: Cluster) -> None:
    window = quiet_window(cluster)
    assert window is not None, "every window of twenty runs had an evaluated run, though nothing changed"
    assert window[1] >= window[0] + 3, f"chk's check ran {window[1] - window[0]} times in twenty skipped runs"
    assert cluster.state("www2", "chk") == "UP"
