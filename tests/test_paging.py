"""No fixed cap on services (issue 15): a real faild given 10,000 services through the
client, its list read in pages and then incrementally (docs/protocol.md, "Paged and
incremental list"), an un-paged list refused with a clear message when too big, a restart
that forces a full read, failstat and failctl over 10,000 services, and failsh with 1,000
services on one host and on a master and a slave."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
import zmq
from cluster import Cluster
from support import FaildProcess, run_cli, wait_for

from failover import model, protocol
from failover.cli import common
from failover.cli.failmon import Feed
from failover.client import Client
from failover.faild import community
from failover.faild.server import Faild
from failover.faild.store import Store
from failover.listing import ListReader
from failover.model import HostInfo
from failover.shell.control import ControlPort
from failover.shell.localstate import Change
from failover.shell.peerlink import PeerLink, PeerSpec
from failover.shell.view import UNKNOWN, UP
from failover.states import State

# the lane of each test is marked on it: the PeerLink test is fast (in-process), the rest process

MANY = 10_000


def raw_list(f: FaildProcess, **members: object) -> bytes:
    """The reply frame of one ``list`` as it comes off the wire."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.rcvtimeo = 5000
    try:
        sock.connect(f.endpoint)
        sock.send(protocol.encode({"v": 1, "id": 1, "op": "list", **members}))
        return sock.recv()
    finally:
        sock.close()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaildProcess]:
    """A faild holding 10,000 services, set one by one through the client (its state file,
    rewritten on each, in /dev/shm where there is one: a disk's fsync would double the time)."""
    shm = Path("/dev/shm")
    directory = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) \
        else tmp_path_factory.mktemp("big")
    f = FaildProcess(directory / "faild", node="big").start()
    try:
        with f.client(timeout=5.0, retries=2) as c:
            for i in range(MANY):
                c.set(f"svc{i:05d}", State.UP if i % 10 else State.FAIL, "start procedure returned UP")
        yield f
    finally:
        f.kill9()
        if directory.parent == shm:
            shutil.rmtree(directory, ignore_errors=True)


def expected_states() -> dict[str, State]:
    return {f"svc{i:05d}": State.UP if i % 10 else State.FAIL for i in range(MANY)}


@pytest.mark.process
def test_a_paged_list_returns_all_of_them_exactly(big: FaildProcess) -> None:
    with big.client(timeout=5.0) as c:
        listed = c.list_all()
        assert listed.complete and not listed.legacy and listed.pages > 5
        assert {n: r.state for n, r in listed.records.items()} == expected_states()
        assert sorted(r.counter for r in listed.records.values()) == list(range(1, MANY + 1))
        assert listed.counter == MANY
        host, records = c.list()  # the same, as (host, records by name)
        assert host.name == "big" and [r.name for r in records] == sorted(expected_states())
    first = json.loads(raw_list(big, after=""))
    assert first["more"] is True and first["count"] == MANY and first["maintenance"] == {} == first["prefer"]


@pytest.mark.process
def test_since_returns_only_the_changed_and_an_unchanged_faild_costs_a_few_bytes(big: FaildProcess) -> None:
    with big.client(timeout=5.0) as c:
        reader = c.list_all()
        since = reader.counter
        assert since is not None
        frame = raw_list(big, since=since)
        assert len(frame) < 300, frame  # whatever the faild holds
        assert json.loads(frame)["services"] == []
        c.set("svc04711", State.RECOVER, "by hand")
        c.set("svc00042", State.FAIL, "by hand")
        changes = c.changes(since)
        assert [(r.name, r.state) for r in changes.services] == [("svc00042", State.FAIL),
                                                                  ("svc04711", State.RECOVER)]
        assert changes.counter == since + 2 and changes.count == MANY and changes.maintenance is None
        c.maint(True, "svc00007", "disk swap")
        changes = c.changes(since + 2)
        assert changes.services == [] and changes.maintenance is not None and list(changes.maintenance) == ["svc00007"]
        c.refresh(reader)  # incremental: the same as a full read
        full = c.list_all()
        assert reader.records == full.records and reader.maintenance == full.maintenance and reader.resyncs == 0
        c.maint(False, "svc00007")
        c.set("svc04711", State.UP)
        c.set("svc00042", State.FAIL if 42 % 10 == 0 else State.UP)


@pytest.mark.process
def test_an_unpaged_list_is_refused_when_too_big_and_answered_when_small(
        big: FaildProcess, faild: FaildProcess) -> None:
    reply = json.loads(raw_list(big))
    assert reply["ok"] is False and reply["error"] == "TOOBIG"
    assert reply["message"] == ("big holds 10000 services, more than one reply carries; this client must read "
                                "them in pages (failover >= 0.7)")
    with faild.client() as c:
        c.set("web", State.UP)
    small = json.loads(raw_list(faild))  # as a failover 0.6 client asks
    assert small["ok"] and [s["name"] for s in small["services"]] == ["web"] and "more" not in small


@pytest.mark.process
def test_failstat_and_failctl_on_10000_services(big: FaildProcess) -> None:
    r = run_cli("failstat", "--json", big.address, timeout=60)
    assert "Traceback" not in r.stderr
    assert r.returncode == common.EXIT_STALE  # UP without a failsh lease, as the test set them
    (host,) = json.loads(r.stdout)
    assert {s["name"]: State(s["state"]) for s in host["services"]} == expected_states()
    r = run_cli("failstat", big.address, timeout=60)
    assert len([line for line in r.stdout.splitlines() if line.startswith(big.address + " ")]) == MANY
    r = run_cli("failctl", "-H", big.address, "status", "--json", timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    data = json.loads(r.stdout)
    assert len(data["services"]) == MANY


@pytest.mark.process
def test_a_restarted_faild_is_read_again_in_full(big: FaildProcess) -> None:
    with big.client(timeout=5.0) as c:
        reader = c.list_all()
    big.restart()  # same state file, a new process
    with big.client(timeout=5.0) as c:
        c.set("svc00001", State.RECOVER, "after the restart")
        pages = reader.pages
        c.refresh(reader)
        assert reader.resyncs == 1 and reader.pages - pages > 5  # since, refused as stale, then everything
        assert reader.records == c.list_all().records
        assert reader.records["svc00001"].state is State.RECOVER


# failsh with many services ------------------------------------------------------------------
def many_policy(count: int, slaves: str = "", interval: int = 10) -> str:
    """``count`` services on master www1 (and ``slaves``); checked every ``interval`` s, so
    that the policy thread keeps up on a loaded test machine (its lease depends on it)."""
    return f"""proc up args {{return UP}}
proc down args {{return RECOVER}}
for {{set i 0}} {{$i < {count}}} {{incr i}} {{
    set s [format svc%04d $i]
    failsvc $s interval {interval}
    failsvc $s masters {{www1}}
    failsvc $s slaves {{{slaves}}}
    failsvc $s start up
    failsvc $s stop down
}}
"""


def holdings(f: FaildProcess) -> tuple[dict[str, str], float | None]:
    """Every state a faild holds (read in pages), and its failsh lease."""
    with Client(f.endpoint, timeout=2.0, retries=1) as c:
        listed = c.list_all()
    assert listed.host is not None
    return {n: r.state.value for n, r in listed.records.items()}, listed.host.lease


@pytest.mark.process
def test_failsh_with_1000_services_converges(tmp_path: Path) -> None:
    c = Cluster(tmp_path, names=("www1",), policy=many_policy(1000))
    try:
        c.start()
        wait_for(lambda: holdings(c.failds["www1"])[0] == {f"svc{i:04d}": "UP" for i in range(1000)}, 120,
                 lambda: f"all 1,000 UP\n{c.logs()}", interval=0.5)
    finally:
        c.close()


@pytest.mark.process
def test_a_slave_sees_all_1000_services_of_its_master(tmp_path: Path) -> None:
    c = Cluster(tmp_path, names=("www1", "www2"), policy=many_policy(1000, "www2"))
    names = [f"svc{i:04d}" for i in range(1000)]
    feed = None
    try:
        c.start_failds()
        c.start_failsh("www1")
        wait_for(lambda: holdings(c.failds["www1"])[0] == dict.fromkeys(names, "UP"), 120,
                 lambda: f"all 1,000 UP on the master\n{c.logs()}", interval=0.5)
        wait_for(lambda: holdings(c.failds["www1"])[1] is not None, 30, "the master's lease", interval=0.5)
        c.start_failsh("www2")
        # the slave starts none: it decides on a complete view of its master (a service it
        # did not see there would be started on the slave)
        wait_for(lambda: holdings(c.failds["www2"])[0] == dict.fromkeys(names, "RECOVER"), 120,
                 lambda: f"all 1,000 RECOVER on the slave\n{c.logs()}", interval=0.5)
        feed = Feed([f"127.0.0.1:{c.monitor_ports['www2']}"], 0)

        def slave_sees(check: Callable[[dict], bool]) -> bool:
            feed.poll(0.5)
            return any(check(snap) for snap in feed.snaps.values())

        # its snapshot (the monitor feed) shows every one UP on the master, as a full read would
        wait_for(lambda: slave_sees(lambda snap: len(snap["services"]) == 1000 and all(
            s["peers"]["www1"]["state"] == "UP" for s in snap["services"])), 30, "the slave's view", interval=0)
        # what changes on the master later comes with the slave's next incremental read
        with Client(c.failds["www1"].endpoint, timeout=2.0) as m:
            m.maint(True, None, "test: the whole master")
            m.prefer("svc0999", "www1", "test")
        wait_for(lambda: slave_sees(lambda snap: snap["hosts"][0]["name"] == "www1" and snap["hosts"][0]["paused"]
                                    and snap["services"][-1]["prefer"] == "www1"), 30,
                 "the slave to see the master paused", interval=0)
        assert "UP" not in holdings(c.failds["www2"])[0].values()
    finally:
        if feed is not None:
            feed.close()
        c.close()


@pytest.mark.fast
@pytest.mark.parametrize("seed", range(4))
def test_failsh_view_of_a_peer_is_what_a_full_read_gives(seed: int) -> None:
    """failsh's PeerLink polls a faild (in-process) whose records, maintenance and switchover
    targets change at random, some of them between the pages of a read: after every read
    its PeerView holds exactly what a full read gives, and a host whose first read is not
    complete is not heard yet."""
    rng = random.Random(seed)
    store = Store(None)
    names = [f"svc{i:04d}-" + "x" * 50 for i in range(1500)]
    for name in names:
        store.set(name, State.UP, "start procedure returned UP", "failsh")
    host = HostInfo("www1", 1.7e9, 4242)
    f = Faild(store, community.DEFAULT_RULES, host, leases=True)
    f.lease.renew(600.0)
    ctx, poller = zmq.Context(), zmq.Poller()
    link = PeerLink(PeerSpec("www1", "tcp://127.0.0.1:9", 1.0, 60.0), ctx, poller, time.monotonic())
    ids = itertools.count(1)

    def answer(between: Callable[[], None] | None = None) -> None:
        """What the network thread does: a poll, then the next page at once while there is one."""
        for _ in range(100):
            rid = next(ids)
            asked = link.lister.ask(str(rid))  # as PeerLink.send
            link.sent[str(rid)] = time.monotonic()
            link._reply(f.handle(protocol.encode(protocol.Request(op="list", id=rid, **asked).to_wire())))
            if not link.lister.pending:
                return
            if link.view.listed is False:
                assert link.view.status == UNKNOWN and link.view.services == {}
            if between is not None:
                between()
        raise AssertionError("no end")

    def change() -> None:
        for _ in range(rng.randrange(1, 20)):
            name, roll = rng.choice(names), rng.random()
            if roll < 0.8:
                store.set(name, rng.choice(list(State)), "r" * rng.randrange(100), "failsh")
            elif roll < 0.95:
                store.maint(rng.choice([name, "*"]), rng.random() < 0.6, "m")
            else:
                store.set_prefer(name, rng.choice([None, "www2"]))

    try:
        for _ in range(15):
            answer(change if rng.random() < 0.3 else None)
            answer()  # what changed during the read
            with_pages = ListReader()
            while not with_pages.take(asked := with_pages.request(), model.page_from_wire(
                    protocol.decode_reply(f.handle(protocol.encode({"v": 1, "id": 1, "op": "list", **asked}))))):
                pass
            view = link.view
            assert view.listed and view.status == UP and view.lease is not None
            assert view.services == with_pages.records
            assert view.maintenance == with_pages.maintenance and view.prefer == with_pages.prefer
            change()
        restarted = Faild(store, community.DEFAULT_RULES, attrs.evolve(host, started=host.started + 1), leases=True)
        restarted.lease.renew(600.0)
        f = restarted
        store.set(names[0], State.FAIL, "after the restart")
        answer()
        assert link.lister.resyncs == 1 and link.view.services == {r.name: r for r in store.all()}
    finally:
        link.close(poller)
        ctx.destroy(linger=0)


@pytest.mark.fast
def test_failsh_control_port_pages_its_list_too() -> None:
    """failsh's control port (and hc's monitor) serve the protocol through the same Faild:
    a paged read of 2,000 services works there as on faild, and an un-paged one is refused."""
    port = ControlPort("www1", "public")
    for i in range(2000):
        port.on_change(Change(f"svc{i:04d}-" + "x" * 40, None, State.UP, "start procedure returned UP", 1.7e9))
    reader = ListReader()
    while not reader.take(asked := reader.request(), model.page_from_wire(
            protocol.decode_reply(port.handle(protocol.encode({"v": 1, "id": 1, "op": "list", **asked}))))):
        pass
    assert len(reader.records) == 2000 and reader.pages > 2 and reader.maintenance == {}
    refused = protocol.decode_reply(port.handle(protocol.encode({"v": 1, "id": 2, "op": "list"})))
    assert refused["error"] == "TOOBIG"

