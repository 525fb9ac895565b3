"""A peer that vanishes without closing its connections (power loss, a pulled cable)
and comes back: the change hints must reach the survivor again at once (issue 11, item 9).

Without ZMTP heartbeats the survivor's SUB keeps the dead TCP connection (it never sends
on it, so nothing tells it), the restarted host's feed never hears its subscription, and a
graceful takeover waits for the next poll (a whole interval) instead of a hint (~50 ms).
The interval here is 30 s, so a takeover within a second came from a hint (a poll-driven
one would be spread evenly over the 30 s).
"""

from __future__ import annotations

import time

import pytest

from failover.lab import testbed
from failover.lab.testbed import FailoverHosts, Testbed, TestbedError, log_tails, wait_until

_reason = testbed.available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_reason is not None, reason=f"netns test bed: {_reason}")]

INTERVAL = 30.0
POLICY = """
failsvc web interval 30
failsvc web masters {h1}
failsvc web slaves {h2}
failsvc web start {return UP}
failsvc web stop {return RECOVER}
failhost h1 deadtime 2
failhost h2 deadtime 2
"""


def _states(tb: Testbed) -> dict[str, str | None]:
    return tb.service_states("web")


def test_hints_reach_the_survivor_after_a_silent_outage() -> None:
    with Testbed(hosts=["h1", "h2"]) as tb:
        policy = tb.tmpdir / "web.tcl"
        policy.write_text(POLICY)
        fo = FailoverHosts(tb, {"h1": policy, "h2": policy})
        try:
            fo.start_faild("h1")
            fo.start_faild("h2")
            fo.start_failsh("h1")
            wait_until(lambda: _states(tb)["h1"] == "UP", 20, what="h1 UP")
            fo.start_failsh("h2")
            wait_until(lambda: _states(tb) == {"h1": "UP", "h2": "RECOVER"}, 20, what="h2 waiting")
            time.sleep(1.0)  # h2 subscribed to h1's hints
            # h1 loses power: cable out, its daemons die, and its kernel forgets every TCP
            # connection (ss -K: a namespace's kernel would otherwise resend their FINs
            # once the link is back, which a powered-off host never does); nothing reaches h2
            tb.link_down("h1")
            fo.kill("h1", "failsh")
            fo.kill("h1", "faild")
            tb.exec("h1", ["ss", "-K", "-t", "state", "all"])
            tb.exec("h1", ["ip", "neigh", "flush", "all"])  # and the resets -K queued for ARP
            wait_until(lambda: _states(tb)["h2"] == "UP", 20, what="h2 to take over")
            # h1 comes back and takes the service back
            tb.link_up("h1")
            fo.restart("h1", "faild")
            fo.restart("h1", "failsh")
            wait_until(lambda: _states(tb) == {"h1": "UP", "h2": "RECOVER"}, 40, what="the handback")
            time.sleep(1.0)
            t0 = time.monotonic()
            fo.inject("h1", "graceful")
            wait_until(lambda: _states(tb)["h2"] == "UP", 30, interval=0.01, what="h2 to take over")
            took = time.monotonic() - t0
        except TestbedError as e:
            pytest.fail(f"{e}\n{log_tails(fo.logs())}")
        finally:
            fo.stop()
    print(f"\ngraceful takeover after a silent outage: {took:.3f} s (poll interval {INTERVAL:g} s)")
    assert took < 1.0, "the takeover waited for a poll: the hint did not arrive"
