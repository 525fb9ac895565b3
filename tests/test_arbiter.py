"""The etcd arbiter with real processes on loopback (docs/arbiter.md): one real etcd
member (lab/etcdbed.py LoopbackEtcd), faild and failsh on two pretend hosts (cluster.py).

What a user sees: the master takes the key and starts, with the fencing token in
FO_FENCING_TOKEN and fo::token; the slave takes over a crashed master only once the key is
free (the master's lease ended); with etcd gone the holder stays (the failsafe: the slave
answers and cannot reach etcd either), nobody starts, and etcd back the master keeps it;
with -failsafe 0 the holder stops before its lease can end ("lost the arbiter"), nobody
starts and both turn FAIL (not ready); etcd back, the master takes it again; failsh's
SIGTERM revokes the lease, so the slave starts at once.
The namespace tests (a 3-member etcd, partitions, a nemesis) are in test_arbiter_netns.py.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster
from support import free_port, wait_for

from failover.arbiter.etcd import Etcd, EtcdError, Unavailable
from failover.lab.etcdbed import LoopbackEtcd
from failover.shell.arbiter import ArbiterThread
from failover.shell.policy import ArbiterConfig

_why = "etcd not installed (apt-get install etcd-server)" if shutil.which("etcd") is None else None
pytestmark = [pytest.mark.process, pytest.mark.skipif(_why is not None, reason=str(_why))]

TTL = 3.0
POLICY = """
proc tokstart {svc} {
    global env
    mark $svc "token $env(FO_FENCING_TOKEN) [fo::token $svc]"
    return [svc_start $svc]
}
failarbiter etcd @ENDPOINT@ -ttl @TTL@ -prefix /fo-test/ -failsafe @FAILSAFE@
failsvc web interval 0.5
failsvc web masters {www1}
failsvc web slaves {www2}
failsvc web start {tokstart web}
failsvc web stop {svc_stop web}
failsvc web reclaim {svc_reclaim web}
failsvc web arbiter etcd
failsvc web flap off
"""


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[LoopbackEtcd]:
    e = LoopbackEtcd(tmp_path / "etcd", free_port(), free_port()).start()
    yield e
    e.kill()


@pytest.fixture
def failsafe() -> str:
    """failarbiter -failsafe: a test parametrizes it to "0" for the behaviour without it."""
    return "1"


@pytest.fixture
def cluster(tmp_path: Path, etcd: LoopbackEtcd, failsafe: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "hosts", policy=POLICY.replace("@ENDPOINT@", etcd.endpoint)
                .replace("@TTL@", f"{TTL:g}").replace("@FAILSAFE@", failsafe))
    yield c
    c.close()


def holder(etcd: LoopbackEtcd) -> str | None:
    h = Etcd([etcd.endpoint]).get("/fo-test/web")
    return h.owner if h else None


def tokens(c: Cluster, host: str) -> list[tuple[int, int]]:
    """(FO_FENCING_TOKEN, fo::token) of each start on ``host``."""
    return [(int(a), int(b)) for m in c.markers(host, "web") if m.startswith("token ")
            for a, b in [m.split()[1:3]]]


def running(c: Cluster) -> list[str]:
    return [n for n in c.names if c.running(n, "web")]


def test_takeover_waits_for_the_key_and_the_token_grows(cluster: Cluster, etcd: LoopbackEtcd) -> None:
    c = cluster
    c.start_master_then_slave()
    assert holder(etcd) == "www1"
    (first, same), = tokens(c, "www1")
    assert first == same > 0
    t = time.monotonic()
    c.crash_host("www1")  # its lease lives on for the ttl: the key is not free before
    samples = c.sample("web", lambda s: s["www2"] == "UP", timeout=TTL + 15)
    took = time.monotonic() - t
    assert holder(etcd) == "www2"
    (second, _), = tokens(c, "www2")
    assert second > first
    assert "not starting: /fo-test/web is held by www1 in etcd" in c.failsh["www2"].log()
    assert len(samples) > 1
    print(f"\ntakeover after a crash: {took:.1f} s (ttl {TTL:g} s), tokens {first} -> {second}")
    # the master comes back: the slave hands back, the key moves with it
    c.start_failds()
    c.start_failsh("www1")
    c.wait_states("web", {"www1": "UP", "www2": "RECOVER"}, timeout=30)
    assert holder(etcd) == "www1" and running(c) == ["www1"]
    assert tokens(c, "www1")[-1][0] > second


def test_etcd_down_failsafe_holder_stays_and_nobody_starts(cluster: Cluster, etcd: LoopbackEtcd) -> None:
    """The failsafe (on by default): etcd gone for both hosts, the holder keeps the service
    (logged once), the slave does not start; etcd back, the holder keeps it."""
    c = cluster
    c.start_master_then_slave()
    etcd.kill()
    wait_for(lambda: "failsafe: etcd unreachable for every host; staying" in c.failsh["www1"].log(), TTL + 10,
             "the holder to enter the failsafe")
    samples = c.watch("web", 2 * TTL)
    assert all(s["www1"] == "UP" and s["www2"] != "UP" for s in samples), samples
    assert running(c) == ["www1"]
    assert "lost the arbiter" not in c.failsh["www1"].log()
    assert c.failsh["www1"].log().count("failsafe: etcd unreachable for every host; staying (") == 1  # the WARNING
    etcd.start()  # its data kept: the old lease lives again, the key is still www1's
    wait_for(lambda: "failsafe over: etcd answers again" in c.failsh["www1"].log(), 30, "the failsafe to end")
    c.wait_states("web", {"www1": "UP", "www2": "RECOVER"}, timeout=30)
    assert running(c) == ["www1"] and holder(etcd) == "www1"


@pytest.mark.parametrize("failsafe", ["0"])
def test_etcd_down_holder_stops_and_nobody_starts(cluster: Cluster, etcd: LoopbackEtcd) -> None:
    c = cluster
    c.start_master_then_slave()
    t = time.monotonic()
    etcd.kill()
    wait_for(lambda: not c.running("www1", "web"), TTL + 5, "the holder to stop")
    stopped = time.monotonic() - t
    assert stopped < TTL, f"stopped {stopped:.2f} s after etcd went, the lease ends after {TTL:g} s"
    # the slave cannot take the key either: it is not ready (FAIL) until etcd answers again
    c.wait_states("web", {"www1": "FAIL", "www2": "FAIL"})
    log1 = c.failsh["www1"].log()
    assert "lost the arbiter" in log1 and "no member of http://127.0.0.1:" in log1
    samples = c.watch("web", 2 * TTL)
    assert all(s == {"www1": "FAIL", "www2": "FAIL"} for s in samples), samples[-1]
    assert "not ready while the arbiter cannot be reached (arbiter etcd: no member of" in c.failsh["www2"].log()
    assert "not reclaiming until the arbiter answers" in c.failsh["www1"].log()
    etcd.start()  # its data kept: the master reclaims and takes the key again
    c.wait_states("web", {"www1": "UP", "www2": "RECOVER"}, timeout=30)
    assert running(c) == ["www1"] and holder(etcd) == "www1"
    print(f"\netcd down: the holder stopped after {stopped:.2f} s (ttl {TTL:g} s)")


def test_sigterm_revokes_the_lease(cluster: Cluster, etcd: LoopbackEtcd) -> None:
    c = cluster
    c.start_master_then_slave()
    t = time.monotonic()
    c.failsh["www1"].stop()
    c.wait_states("web", {"www2": "UP"}, timeout=10)
    took = time.monotonic() - t
    assert holder(etcd) == "www2"
    assert took < TTL + 2, f"{took:.1f} s: the lease was not revoked?"
    assert "revoked" in c.failsh["www1"].log()


def test_client_errors_name_the_member_and_the_cause(etcd: LoopbackEtcd) -> None:
    """What failsh logs (and a waiting service's decision line shows) when etcd says no."""
    with pytest.raises(Unavailable, match=r"^arbiter etcd: no member of http://127\.0\.0\.1:1 answered "
                                          r"\(http://127\.0\.0\.1:1: \[Errno 111\] Connection refused\)$"):
        Etcd(["http://127.0.0.1:1"], timeout=0.5).grant(3)
    ctl = ["etcdctl", "--endpoints", etcd.endpoint]
    for args in (["user", "add", "root:rootpw"], ["user", "add", "fo:fopw"], ["role", "add", "fo"],
                 ["role", "grant-permission", "fo", "--prefix=true", "readwrite", "/failover/"],
                 ["user", "grant-role", "fo", "fo"], ["auth", "enable"]):
        subprocess.run([*ctl, *args], check=True, capture_output=True, timeout=10)
    with pytest.raises(EtcdError, match=f"^arbiter etcd: {etcd.endpoint} refused: etcdserver: authentication failed"):
        Etcd([etcd.endpoint], user="fo", password="wrong").grant(3)
    good = Etcd([etcd.endpoint], user="fo", password="fopw")
    lease = good.grant(3)
    assert good.acquire("/failover/web", "www1", lease).owner == "www1"
    with pytest.raises(EtcdError, match="refused: etcdserver: permission denied"):
        good.acquire("/elsewhere/web", "www1", lease)


def test_a_key_being_released_is_not_held_for_a_start(etcd: LoopbackEtcd) -> None:
    """Once the runs no longer want the key (a reclaim left the service RECOVER), the view
    says "not held" at once, before the thread has deleted it: a start decided meanwhile
    would overlap with the host that takes the key next (seen in the namespace tests)."""
    config = ArbiterConfig("etcd", (etcd.endpoint,), prefix="/fo-test/", ttl=TTL)
    arb = ArbiterThread(config, "www1", lambda _services: None)
    arb.set_services(["web"])
    arb.start()
    try:
        arb.want("web", True)
        wait_for(lambda: (v := arb.view("web")) is not None and v.held, 10, "the key to be held")
        arb.want("web", False)
        view = arb.view("web")
        assert view is not None and not view.held and view.token == 0
        wait_for(lambda: holder(etcd) is None, 10, "the key to be released")
    finally:
        arb.close()
