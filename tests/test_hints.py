"""Change hints: a failsh that changes a local state (or takes or gives up its lease)
says so on its monitor feed, and its peers poll its faild at once instead of at their
next tick.  Graceful stops and handbacks then take about a round trip, not an interval.

The policies here poll every 30 s, so anything that happens within a few seconds was
driven by a hint.  The regular polls stay the guarantee: hints are only a nudge, and
nonsense on the feed changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from cluster import Cluster, both_up
from test_failsh import WEB

from failover.observe import feed

pytestmark = pytest.mark.process

SLOW = WEB + "failsvc web interval 30\n"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, ["www1", "www2"], SLOW)
    yield c
    c.close()


def test_graceful_stop_and_return_of_the_master_without_waiting_for_a_poll(cluster: Cluster) -> None:
    c = cluster
    c.start_master_then_slave()
    assert c.failsh["www1"].stop() == 0      # stops web, gives up its lease, hints
    c.wait_states("web", {"www2": "UP"}, timeout=5)
    c.start_failsh("www1")                   # takes its lease and hints: www2 hands back
    samples = c.sample("web", lambda s: s == {"www1": "UP", "www2": "RECOVER"}, timeout=8, effective=True)
    assert not any(both_up(s) for s in samples), samples
    assert c.markers("www2", "web") == ["start", "stop"]


def test_nonsense_on_a_peers_feed_changes_nothing(cluster: Cluster) -> None:
    """Whoever can reach a failsh feed port can send hints (the feed is not authenticated):
    garbage, hints naming other hosts and floods are read and dropped; states stay."""
    c = cluster
    c.start_failds()
    c.start_failsh("www1", extra=["-m", "0"])  # www1 publishes nothing; this test does
    c.wait_states("web", {"www1": "UP"})
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.bind(f"tcp://127.0.0.1:{c.monitor_ports['www1']}")
    try:
        c.start_failsh("www2")
        c.wait_states("web", {"www1": "UP", "www2": "RECOVER"}, effective=True)
        time.sleep(0.5)  # www2's subscription reaches this PUB
        junk = [feed.CHANGE_TOPIC + b"}", feed.CHANGE_TOPIC + b',"node":7}',
                feed.encode_change("www3"), feed.CHANGE_TOPIC + b"\xff" * 1000, b"\x00" * 100]
        for _ in range(200):
            for frame in junk + [feed.encode_change("www1")]:
                pub.send(frame)
        samples = c.watch("web", 1.5)
    finally:
        pub.close()
    assert all(s == {"www1": "UP", "www2": "RECOVER"} for s in samples), samples
    assert c.failsh["www2"].running()
    assert "Traceback" not in c.failsh["www2"].log()
