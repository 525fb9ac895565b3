"""The monitor snapshot (failover/shell/snapshot.py): rows reused from the last snapshot
show what a snapshot built afresh shows, and the encoding it carries is the dict's JSON."""

from __future__ import annotations

import json
import time

import attrs
import pytest

from failover.model import MaintEntry, PreferEntry, ServiceRecord, Transition
from failover.observe import feed
from failover.shell.localstate import LocalState
from failover.shell.policy import Policy, ServiceConfig
from failover.shell.snapshot import Snapshots
from failover.shell.view import DOWN, UP, PeerView
from failover.states import State

pytestmark = pytest.mark.fast


class Setup:
    def __init__(self, services: int = 6) -> None:
        self.policy = Policy("loc")
        for h in ("p1", "p2", "p3"):
            self.policy.host(h)
        for i in range(services):
            self.policy.services[f"s{i}"] = ServiceConfig(f"s{i}", masters=["p1"], slaves=["p2", "p3"])
        self.states = LocalState(lambda: self.policy, None, lambda _n, _r: None)  # type: ignore[arg-type]  # no Hosts: not read
        now = time.time()
        self.views = {h: PeerView(h, f"tcp://{h}:1", status=UP, lease=10.0, last_seen=now, listed=True,
                                  services={n: ServiceRecord(n, State.UP if h == "p1" else State.RECOVER, now, 1)
                                            for n in self.policy.services})
                      for h in ("loc", "p1", "p2", "p3")}
        self.cached = Snapshots("loc", lambda: self.policy, self.states, self.views.get)

    def fresh(self) -> Snapshots:
        """A Snapshots with no rows built yet, on the same inputs as ``cached``."""
        snaps = Snapshots("loc", lambda: self.policy, self.states, self.views.get)
        snaps.decisions, snaps.last_check, snaps.history = \
            self.cached.decisions, self.cached.last_check, self.cached.history
        return snaps

    def set_record(self, host: str, name: str, state: State) -> None:
        view = self.views[host]
        self.views[host] = attrs.evolve(view, services={**view.services,
                                                        name: ServiceRecord(name, state, time.time(), 2)})

    def check(self) -> dict:
        """The cached snapshot equals a fresh one (but time and seq), and encodes as its dict."""
        got, fresh = self.cached.snapshot(), self.fresh().snapshot()
        assert feed.encode(got) == json.dumps(dict(got), separators=(",", ":")).encode()
        assert feed.decode(feed.encode(got))["services"] == fresh["services"]
        assert {k: v for k, v in got.items() if k not in ("time", "seq")} == \
            {k: v for k, v in fresh.items() if k not in ("time", "seq")}
        assert json.loads(feed.encode(got)) == got
        return got


def test_reused_rows_show_what_a_fresh_snapshot_shows() -> None:
    s = Setup()
    first = s.check()
    assert first["services"][0]["peers"]["p1"] == {"role": "master", "state": "UP", "status": "up"}
    s.check()                                      # nothing changed: every row reused
    s.cached.checked("s1")                         # only last_check moves
    s.cached.note("s2", "waiting for p1")
    s.cached.note("s0", 'a decision with ,"last_check":null, in it')  # where the row's JSON is cut
    s.states.local["s3"] = State.UP
    s.states.last_change["s3"] = time.time()
    s.set_record("p2", "s4", State.FAIL)
    snap = s.check()
    rows = {r["name"]: r for r in snap["services"]}
    assert rows["s1"]["last_check"] is not None and rows["s2"]["decision"] == "waiting for p1"
    assert rows["s3"]["state"] == "UP" and rows["s4"]["peers"]["p2"]["state"] == "FAIL"
    gone = {n: r for n, r in s.views["p3"].services.items() if n != "s0"}  # a record gone
    s.views["p3"] = attrs.evolve(s.views["p3"], services=gone)
    assert s.check()["services"][0]["peers"]["p3"]["state"] == "FAIL"
    s.views["p3"] = attrs.evolve(s.views["p3"], status=DOWN)   # a host's status: every row of it
    assert {r["peers"]["p3"]["status"] for r in s.check()["services"]} == {DOWN}
    s.views["p2"] = attrs.evolve(s.views["p2"], lease=None)    # its failsh gone: FAIL everywhere
    assert {r["peers"]["p2"]["state"] for r in s.check()["services"]} == {"FAIL"}
    s.policy.services["s5"].slaves.remove("p3")                # failsvc changes a service in place
    assert list(s.check()["services"][5]["peers"]) == ["p1", "p2"]
    s.policy.services["s6"] = ServiceConfig("s6", masters=["p2"])
    assert [r["name"] for r in s.check()["services"]][-1] == "s6"


def test_maintenance_and_switchover_targets() -> None:
    s = Setup()
    s.check()
    s.views["loc"] = attrs.evolve(s.views["loc"], maintenance={"s1": MaintEntry(time.time(), "kernel", "me")})
    assert s.check()["services"][1]["paused"]["reason"] == "kernel"
    s.views["p1"] = attrs.evolve(s.views["p1"], prefer={"s2": PreferEntry("p2", time.time())})
    assert s.check()["services"][2]["prefer"] == "p2"
    s.set_record("p1", "s3", State.FAIL)                       # seen while no row is kept
    assert s.check()["services"][3]["peers"]["p1"]["state"] == "FAIL"
    s.views["loc"] = attrs.evolve(s.views["loc"], maintenance={})
    s.views["p1"] = attrs.evolve(s.views["p1"], prefer={})
    snap = s.check()
    assert all(r["paused"] is None and r["prefer"] is None for r in snap["services"])


def test_history_and_lease_in_the_encoding() -> None:
    s = Setup(services=0)
    s.cached.history.append(Transition("s0", None, State.UP, time.time(), 0, 'a "quoted" reason'))
    snap = s.check()
    assert snap["services"] == [] and snap["lease"] == 10.0 and snap["history"][0]["old"] is None
    assert feed.encode(snap).startswith(feed.SNAPSHOT_TOPIC)
