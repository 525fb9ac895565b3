"""Split-brain guard and hold-down on real faild/failsh processes on loopback.

A slave that cannot hear its master may be the one cut off.  With witnesses or a
tie-breaker configured it only takes over when they agree; with a hold-down it keeps a
service it took over for a while before handing it back, so a flapping master does not
bounce the service.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster import Cluster, both_up
from conftest import wait_for
from test_failsh import WEB

from failover.client import Client

pytestmark = pytest.mark.process


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(names: list[str], policy: str) -> Cluster:
        made.append(Cluster(tmp_path / f"cluster{len(made)}", names, policy))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_witness_quorum_blocks_takeover_until_a_witness_is_reachable(
        make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(["www1", "www2", "wit"], WEB + "failsvc web witnesses {wit}\n")
    c.start_master_then_slave()
    c.failds["wit"].kill9()          # the witness is gone too: www2 could be the isolated one
    c.crash_host("www1")
    samples = c.watch("web", 2.5)
    assert all(s["www2"] == "RECOVER" for s in samples), samples
    assert "split-brain guard: master www1 silent but only 0 of 1 witnesses reachable" in c.failsh["www2"].log()
    c.failds["wit"].start()          # the witness answers: the master really is gone
    c.wait_states("web", {"www2": "UP"}, timeout=8)


def test_tiebreaker_saying_no_keeps_the_slave_down(make_cluster: Callable[..., Cluster]) -> None:
    policy = WEB + ("proc tiebreak {args} { return [file exists [fo_file tiebreak ok]] }\n"
                    "failsvc web tiebreaker tiebreak\n")
    c = make_cluster(["www1", "www2"], policy)
    c.start_master_then_slave()
    c.crash_host("www1")
    samples = c.watch("web", 2.5)
    assert all(s["www2"] == "RECOVER" for s in samples), samples
    assert "tie-breaker said no" in c.failsh["www2"].log()
    (c.dir / "www2.tiebreak.ok").touch()
    c.wait_states("web", {"www2": "UP"}, timeout=8)


def test_guard_does_not_delay_takeover_from_a_master_that_says_fail(
        make_cluster: Callable[..., Cluster]) -> None:
    """A master that answers FAIL is not a partition: no witness is needed."""
    c = make_cluster(["www1", "www2", "wit"], WEB + "failsvc web witnesses {wit}\n")
    c.start_master_then_slave()
    c.failds["wit"].kill9()
    c.failsh["www1"].stop()          # graceful: stops web and gives up its lease
    c.wait_states("web", {"www2": "UP"}, timeout=8)


def test_announce_runs_when_the_other_host_lets_go(make_cluster: Callable[..., Cluster]) -> None:
    """A frozen master failsh: the slave takes over, the master thaws still UP, the slave
    hands back, and the master tells the clients again (a VIP needs a new gratuitous ARP):
    by its announce script or, if on thawing it first saw its own faild as silent and
    stopped, by starting again."""
    policy = WEB + ("proc announce {args} { mark web announce }\n"
                    "failsvc web announce announce\n")
    c = make_cluster(["www1", "www2"], policy)
    c.start_master_then_slave()
    starts = c.markers("www1", "web").count("start")
    c.failsh["www1"].send(signal.SIGSTOP)
    c.wait_states("web", {"www2": "UP"}, timeout=8)
    c.failsh["www1"].send(signal.SIGCONT)
    c.wait_states("web", {"www1": "UP", "www2": "RECOVER"}, timeout=8, effective=True)
    def told() -> bool:
        marks = c.markers("www1", "web")
        return "announce" in marks or marks.count("start") > starts
    wait_for(told, 5, "www1 to re-announce web")
    if "announce" in c.markers("www1", "web"):
        assert "web: another host may have held it too" in c.failsh["www1"].log()
    # www2 may have announced too, once, while it held web: www1's record went from its
    # stale UP to RECOVER when www1 thawed (www1 had held the address meanwhile)
    assert c.markers("www2", "web").count("announce") <= 1


def test_announce_runs_when_the_other_host_was_up_between_two_polls(
        make_cluster: Callable[..., Cluster]) -> None:
    """A short partition can heal before either side counts the other FAIL: the slave took
    over and handed back between two polls of the master, which never saw it UP.  The
    master still re-announces, because the slave's record changed meanwhile."""
    policy = WEB + ("proc announce {args} { mark web announce }\n"
                    "failsvc web announce announce\n"
                    "failsvc web interval 2\n")
    c = make_cluster(["www1", "www2"], policy)
    c.start_failds()
    with Client(c.failds["www2"].endpoint) as www2:
        www2.set("web", "RECOVER")  # the slave's record exists before the master looks
        c.start_failsh("www1")
        c.wait_states("web", {"www1": "UP"})
        time.sleep(2.5)  # the master's next run notes what www2 looks like while it is UP
        www2.set("web", "UP", "test: took over")
        www2.set("web", "RECOVER", "test: handed back")
    wait_for(lambda: "announce" in c.markers("www1", "web"), 6, "www1 to re-announce web")
    assert "web: another host may have held it too (www2)" in c.failsh["www1"].log()


def test_holddown_keeps_a_taken_over_service_before_handing_back(
        make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(["www1", "www2"], WEB + "failsvc web holddown 4\n")
    c.start_master_then_slave()
    c.failsh["www1"].kill9()
    c.wait_states("web", {"www2": "UP"}, timeout=8)
    c.start_failsh("www1")           # the master is back at once: no bounce yet
    c.wait_states("web", {"www1": "RECOVER"}, timeout=8)
    samples = c.watch("web", 1.5)
    assert all(s == {"www1": "RECOVER", "www2": "UP"} for s in samples), samples
    assert "hold-down: handing back once UP for 4 s" in c.failsh["www2"].log()
    samples = c.sample("web", lambda s: s == {"www1": "UP", "www2": "RECOVER"}, timeout=10, effective=True)
    assert not any(both_up(s) for s in samples), samples
