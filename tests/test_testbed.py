"""The namespace test bed itself: reachability, cleanup, faults, VIP moves, keepalived baseline.

Every connection here is made inside a test-bed namespace (tb.probe / vipclient run through
``ip netns exec``); nothing connects from the root namespace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from failover.lab import testbed
from failover.lab.testbed import Testbed, TestbedError, list_namespaces, stale_cleanup, wait_until
from failover.lab.vipclient import Tail, first_ok, longest_gap

_reason = testbed.available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_reason is not None, reason=f"netns test bed: {_reason}")]


@pytest.fixture
def tb():
    with Testbed(hosts=["h1", "h2"]) as bed:
        yield bed


def test_layout_and_reachability(tb):
    names = {n.ns for n in [*tb.hosts, tb.client]} | {tb.switch_ns}
    assert names <= set(list_namespaces())
    assert all(n.startswith("fo") for n in names)
    assert re.fullmatch(r"10\.99\.\d+\.0/24", tb.subnet)
    assert tb.peer_map() == {"h1": tb.host("h1").addr, "h2": tb.host("h2").addr}
    tb.start_vipserver("h2")
    r = tb.probe("h1", tb.host("h2").addr)  # h1 -> bridge -> h2, inside namespaces
    assert r.ok and r.host == "h2"
    # The addresses exist only inside the namespaces, never in the root one.
    root = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    assert f" {tb.host('h2').addr}/" not in root


def test_cleanup_when_body_raises():
    with pytest.raises(RuntimeError, match="boom"), Testbed(hosts=["h1", "h2"]) as bed:
        nss = {n.ns for n in [*bed.hosts, bed.client]} | {bed.switch_ns}
        procs = [bed.start_vipserver("h1"), bed.run("h2", ["sleep", "300"])]
        bed.signal(procs[1], signal.SIGSTOP)  # a stopped process must not block cleanup
        tmpdir = bed.tmpdir
        raise RuntimeError("boom")
    assert not nss & set(list_namespaces())
    assert all(p.poll() is not None for p in procs)
    assert not tmpdir.exists()


_CHILD = textwrap.dedent("""
    import json, sys, time
    from failover.lab.testbed import Testbed
    with Testbed(hosts=["h1"]) as tb:
        tb.run("h1", ["sleep", "300"])
        print(json.dumps([str(tb.tmpdir), tb.host("h1").ns, tb.client.ns, tb.switch_ns]), flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_cleanup_after_signal(sig):
    """SIGTERM: the owner cleans up itself.  SIGKILL: stale_cleanup removes what it left."""
    p = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True)
    try:
        tmpdir, *nss = json.loads(p.stdout.readline())
        assert set(nss) <= set(list_namespaces())
        p.send_signal(sig)
        assert p.wait(timeout=10) == -sig  # cleaned up, and still died of the signal
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if sig == signal.SIGKILL:
        assert set(nss) <= set(list_namespaces())  # left behind by the killed owner
        assert set(nss) <= set(stale_cleanup())
    assert not set(nss) & set(list_namespaces())
    assert not Path(tmpdir).exists()


def test_fixed_prefix_removes_leftovers_of_a_previous_run():
    prefix = f"fot{os.getpid()}"
    subprocess.run(["ip", "netns", "add", f"{prefix}-h9"], check=True)  # as if a crashed run left it
    try:
        with Testbed(hosts=["h1"], prefix=prefix) as bed:
            assert f"{prefix}-h9" not in list_namespaces()
            assert bed.host("h1").ns == f"{prefix}-h1"
    finally:
        subprocess.run(["ip", "netns", "del", f"{prefix}-h9"], capture_output=True)
    assert not [n for n in list_namespaces() if n.startswith(prefix + "-")]


def test_stale_cleanup_spares_live_owners(tb):
    stale_cleanup()
    assert tb.switch_ns in list_namespaces()  # our own pid is alive


def test_link_down_cuts_traffic(tb):
    tb.start_vipserver("h1")
    h1 = tb.host("h1").addr
    assert tb.probe("cl", h1).ok
    tb.link_down("h1")
    r = tb.probe("cl", h1, timeout=0.3)
    assert not r.ok and r.err in ("timeout", "EHOSTUNREACH")
    tb.link_up("h1")
    tb.wait_served("cl", h1, timeout=5, host="h1")


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft (nftables) not installed")
def test_total_loss_is_a_silent_partition(tb):
    tb.start_vipserver("h1")
    tb.netem("h1", loss=100)
    assert not tb.probe("cl", tb.host("h1").addr, timeout=0.3).ok
    tb.netem_clear("h1")
    tb.wait_served("cl", tb.host("h1").addr, timeout=5, host="h1")


def test_vip_move_with_garp_is_seen_by_client(tb):
    tb.start_vipserver("h1")
    tb.start_vipserver("h2")
    tb.vip_add("h1")
    _, out = tb.start_vipclient(interval_ms=10, timeout_ms=200)
    tail = Tail(out)
    wait_until(lambda: first_ok(tail.since(0), 0, host="h1"), 5, what="client served by h1")
    t_move = time.monotonic()
    tb.vip_del("h1")
    tb.vip_add("h2")  # and a gratuitous ARP (failover.announce)
    r = wait_until(lambda: first_ok(tail.since(t_move), t_move, host="h2"), 5, what="client served by h2")
    assert r.t1 - t_move < 1.0
    # Without the gratuitous ARP this outage is tens of seconds (tech-notes §5).
    time.sleep(0.2)
    assert longest_gap(tail.since(t_move), t_move, time.monotonic()) < 1.0
    assert tb.vip_holders() == ["h2"]


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived not installed")
def test_keepalived_fails_over_after_kill9(tb):
    for h in ("h1", "h2"):
        tb.start_vipserver(h)
    master = tb.start_keepalived("h1", priority=150, advert_int=0.1)
    tb.start_keepalived("h2", priority=100, advert_int=0.1)
    _, out = tb.start_vipclient(interval_ms=10, timeout_ms=200)
    tail = Tail(out)
    wait_until(lambda: tb.vip_holders() == ["h1"] and first_ok(tail.since(0), 0, host="h1"), 10,
               what="keepalived h1 master and serving")
    t_fault = time.monotonic()
    tb.signal(master, signal.SIGKILL)  # the whole group: parent and VRRP child
    r = wait_until(lambda: first_ok(tail.since(t_fault), t_fault, host="h2"), 10, what="h2 serving")
    # 3 adverts + skew at 0.1 s is about 0.36 s; leave room for a loaded CI machine.
    assert 0.2 < r.t1 - t_fault < 3.0
    assert "h2" in tb.vip_holders()


def test_run_requires_started_testbed():
    bed = Testbed(hosts=["h1"])
    with pytest.raises(TestbedError):
        bed.run("h1", ["true"])
    with pytest.raises(ValueError):
        Testbed(hosts=["sw"])
    with pytest.raises(ValueError):
        Testbed(hosts=["h1"], prefix="notfo")


def test_parallel_testbeds_do_not_collide():
    with Testbed(hosts=["h1"]) as a, Testbed(hosts=["h1"]) as b:
        assert a.host("h1").ns != b.host("h1").ns
        a.start_vipserver("h1")
        b.start_vipserver("h1")
        assert a.probe("cl", a.host("h1").addr).ok and b.probe("cl", b.host("h1").addr).ok
    assert not {a.switch_ns, b.switch_ns} & set(list_namespaces())
