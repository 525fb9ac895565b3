"""The etcd arbiter on the namespace test bed: no two holders, even under partition
(issue #16, docs/arbiter.md).

Bed: h1 (master) and h2 (slave) run faild and failsh with samples/ipfailover-linux
(interval 0.5 s) put under the arbiter (``failarbiter etcd ... -ttl 4``, ``failsvc ip
arbiter etcd``); a real 3-member etcd runs on h1, e2 and e3 (lab/etcdbed.py, each member
in its host's namespace); the client namespace asks the VIP all the time.  A holder is a
host with the VIP on its eth0, sampled every 50 ms (HolderSampler); every test asserts
that no sample shows two holders.

* the master vanishes (a crash: faild, failsh and its VIP gone): h2 takes over once the
  master's key is free (its lease ended); the master returns and gets it back;
* h1 cut off from e2 and e3 (its own member is then a minority) but not from h2 nor the
  clients: h1 stops before its lease can end ("lost the arbiter") and turns FAIL, h2 takes
  over once the key is free; healed, h1 reclaims and h2 hands back;
* an etcd follower killed, then the leader: the holder keeps the service throughout (at
  ttl 8 s: an election fits well within a third of it);
* etcd entirely down (every member killed): with the failsafe (the default) h1 keeps the
  VIP, h2 never starts, both logged; etcd back, h1 keeps it; with ``-failsafe 0`` the
  holder stops, nobody starts (both logged); etcd back, h1 again;
* etcd unreachable for every failsh while e2 and e3 keep a quorum (h1's member killed,
  both failsh cut from e2 and e3): the leases expire in etcd, h1 stays in the failsafe;
  healed, h1 takes its key again (a new lease, put-if-absent) and never lets go;
* in the failsafe, etcd back for h2 only: h1 waits for its key, then lets go before h2
  starts;
* a seeded random nemesis (slow): partitions into halves, kill -9 and SIGSTOP of etcd
  members, links down, host crashes, for NEMESIS seconds; it prints the holders over time
  and the count of double-holder samples, which must be 0.

A kill -9 or a SIGSTOP of failsh itself is not in the nemesis: a frozen or dead failsh
cannot remove the address it left (test_samples.py's table), so the slave takes over once
the lease ends while the address is still configured there.  That is what the fencing
token is for (docs/arbiter.md, "What still needs fencing").
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator

import pytest
from test_samples import _unavailable, gen_policy, wait_alone

from failover.lab import etcdbed
from failover.lab.etcdbed import EtcdCluster
from failover.lab.testbed import FailoverHosts, HolderSampler, Testbed, TestbedError, log_tails, wait_until
from failover.lab.vipclient import Tail


def _reason() -> str | None:
    return _unavailable() or etcdbed.available()


_why = _reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_why is not None, reason=f"netns test bed: {_why}")]

TTL = 4.0
MEMBERS = ["h1", "e2", "e3"]
FAILSH = ["h1", "h2"]
NEMESIS = 75.0  # seconds of random faults
SETTLE = 40.0   # s: after a fault is healed, h1 alone holds the VIP and serves within this


class Bed:
    """h1, h2 (failsh), h1, e2, e3 (etcd), the client asking the VIP."""

    def __init__(self, tb: Testbed, ttl: float = TTL, failsafe: bool = True) -> None:
        self.tb = tb
        self.etcd = EtcdCluster(tb, MEMBERS).start()
        for h in FAILSH:
            tb.start_vipserver(h)
        self.tail = Tail(tb.start_vipclient(duration=900)[1])
        policy = gen_policy(tb.tmpdir / "ip.tcl", "h1", "h2", tb.vip_cidr)
        endpoints = " ".join(self.etcd.endpoints)
        policy.write_text(policy.read_text() + f"failsvc ip flap off\nfailarbiter etcd {endpoints} -ttl {ttl:g} "
                          f"-failsafe {int(failsafe)}\n"
                          "failsvc ip arbiter etcd\n")
        self.fo = FailoverHosts(tb, {h: policy for h in FAILSH})
        self.fo.start()
        self.alone("h1", 40)

    def alone(self, host: str, timeout: float) -> None:
        try:
            wait_alone(self.tb, self.tail, host, timeout)
        except TestbedError as e:
            self.fail(str(e))

    def fail(self, what: str) -> None:
        logs = log_tails([*self.fo.logs(), *filter(None, map(self.tb.log_path, self.etcd.procs.values()))])
        pytest.fail(f"{what}\nVIP holders {self.tb.vip_holders()}\n{logs}")

    def log(self, host: str) -> str:
        path = self.tb.log_path(self.fo.failsh[host])
        return path.read_text(errors="replace") if path else ""

    def wait_log(self, host: str, text: str, timeout: float) -> None:
        """Until ``text`` is in ``host``'s failsh log; else fail, showing the logs."""
        try:
            wait_until(lambda: text in self.log(host), timeout, what=f"{text!r} in {host}'s log")
        except TestbedError as e:
            self.fail(str(e))

    def crash(self, host: str) -> None:
        """The host dies: faild and failsh killed, its VIP gone as after a reboot."""
        self.fo.kill(host, "failsh")
        self.fo.kill(host, "faild")
        self.tb.vip_del(host)

    def boot(self, host: str) -> None:
        self.fo.start_faild(host)
        self.fo.start_failsh(host)

    def cut_from_etcd(self, host: str) -> None:
        for m in MEMBERS:
            if m != host:
                self.tb.block(host, m)


@pytest.fixture
def bed() -> Iterator[Bed]:
    with Testbed(hosts=["h1", "h2", "e2", "e3"]) as tb:
        yield Bed(tb)


def no_overlap(bed: Bed, smp: HolderSampler) -> None:
    both = smp.overlaps()
    if both:
        bed.fail(f"{len(both)} samples with two holders, first at {both[0]}")


def first_held(smp: HolderSampler, host: str, after: float) -> float | None:
    return next((t for t, h in smp.holders(start=after) if host in h), None)


def last_held(smp: HolderSampler, host: str, after: float) -> float | None:
    return max((t for t, h in smp.holders(start=after) if host in h), default=None)


def test_takeover_when_the_master_vanishes_and_handback(bed: Bed) -> None:
    with HolderSampler(bed.tb) as smp:
        t = time.monotonic()
        bed.crash("h1")
        bed.alone("h2", TTL + 20)
        took = first_held(smp, "h2", t)
        bed.boot("h1")
        bed.alone("h1", SETTLE)
    no_overlap(bed, smp)
    assert took is not None and took - t >= TTL * 0.5, "h2 started before h1's lease could have ended"
    print(f"\nmaster crash: h2 holds the VIP {took - t:.1f} s later (ttl {TTL:g} s)")


def test_master_cut_from_the_etcd_majority_stops_before_the_slave_starts(bed: Bed) -> None:
    tb = bed.tb
    with HolderSampler(tb) as smp:
        t = time.monotonic()
        bed.cut_from_etcd("h1")  # h1 still reaches h2 and the client
        bed.alone("h2", TTL + 20)
        gone, came = last_held(smp, "h1", t), first_held(smp, "h2", t)
        wait_until(lambda: tb.service_states("ip", ["h1"]) == {"h1": "FAIL"}, 10, what="h1 FAIL")
        time.sleep(2 * TTL)  # h1 stays FAIL (no reclaim while it cannot reach etcd): no handback
        assert tb.vip_holders() == ["h2"]
        tb.unblock("h1")
        bed.alone("h1", SETTLE)  # healed: h1 reclaims, h2 hands back, h1 takes the key
    no_overlap(bed, smp)
    assert gone is not None and came is not None and gone < came, (gone, came)
    log1 = bed.log("h1")
    assert "lost the arbiter" in log1 and "not reclaiming until the arbiter answers" in log1, log1[-3000:]
    print(f"\nh1 cut from etcd: h1 let go {gone - t:.2f} s after the cut, h2 held it {came - t:.2f} s after "
          f"(gap {came - gone:.2f} s, ttl {TTL:g} s)")


def test_etcd_member_then_leader_killed_the_holder_stays() -> None:
    """At ttl 8 s: a leader election (1-2 s, longer on a loaded machine) fits between two
    renewals and the loss threshold with room to spare; at 4 s it mostly does (the nemesis)."""
    with Testbed(hosts=["h1", "h2", "e2", "e3"]) as tb:
        _member_then_leader(Bed(tb, ttl=2 * TTL))


def _member_then_leader(bed: Bed) -> None:
    etcd = bed.etcd
    with HolderSampler(bed.tb) as smp:
        leader = etcd.leader("h2")
        follower = next(m for m in ("e2", "e3") if m != leader)
        etcd.kill(follower)
        time.sleep(2 * TTL)
        etcd.start_member(follower)
        wait_until(lambda: len(etcd.status("h2")) == 3, 20, interval=0.5, what="3 members answering")
        leader = etcd.leader("h2")
        assert leader is not None
        etcd.kill(leader)
        wait_until(lambda: etcd.leader("h2") not in (None, leader), 20, interval=0.3, what="a new etcd leader")
        time.sleep(TTL)
        etcd.start_member(leader)
    no_overlap(bed, smp)
    assert all(h == ("h1",) for _, h in smp.holders()), "the holder lost the VIP"
    assert "lost the arbiter" not in bed.log("h1")


def test_etcd_entirely_down_failsafe_the_holder_stays(bed: Bed) -> None:
    tb, etcd = bed.tb, bed.etcd
    with HolderSampler(tb) as smp:
        t = time.monotonic()
        for m in MEMBERS:
            etcd.kill(m)
        bed.wait_log("h1", "failsafe: etcd unreachable for every host; staying", TTL + 10)
        time.sleep(2 * TTL)
        assert tb.vip_holders() == ["h1"]
        for m in MEMBERS:
            etcd.start_member(m)
        bed.wait_log("h1", "failsafe over", 30)
        time.sleep(TTL)  # h1 renews its old lease (etcd's restart extended it) and keeps its key
    no_overlap(bed, smp)
    held = [h for _, h in smp.holders(start=t)]
    assert held and all(h == ("h1",) for h in held), "the holder lost the VIP"
    log1 = bed.log("h1")
    assert "lost the arbiter" not in log1, log1[-3000:]
    assert "failsafe over: etcd answers again" in log1, log1[-3000:]
    assert "not starting" in bed.log("h2") or "not ready while the arbiter" in bed.log("h2")
    print(f"\netcd down with the failsafe: h1 held the VIP in all {len(held)} samples")


def test_etcd_quorum_out_of_reach_failsafe_then_the_key_taken_again(bed: Bed) -> None:
    """e2 and e3 keep a quorum and let the leases expire: h1's key is gone; healed, h1 must
    take it again (a new lease, put-if-absent) before h2 could."""
    tb, etcd = bed.tb, bed.etcd
    with HolderSampler(tb) as smp:
        t = time.monotonic()
        etcd.kill("h1")
        for h in FAILSH:
            for m in ("e2", "e3"):
                tb.block(h, m)
        bed.wait_log("h1", "failsafe: etcd unreachable for every host; staying", TTL + 10)
        time.sleep(2 * TTL)  # the leases expire in e2/e3: the key is deleted there
        assert tb.vip_holders() == ["h1"]
        for h in FAILSH:
            tb.unblock(h)
        etcd.start_member("h1")
        bed.wait_log("h1", "failsafe over", 30)
        time.sleep(TTL)
    no_overlap(bed, smp)
    held = [h for _, h in smp.holders(start=t)]
    assert held and all(h == ("h1",) for h in held), "the holder lost the VIP"
    log1 = bed.log("h1")
    assert "lost the arbiter" not in log1 and "failsafe over: etcd answers again" in log1, log1[-3000:]
    assert "lease" in log1 and "expired" in log1 and log1.count("arbiter key /failover/ip held") >= 2, log1[-3000:]


def test_etcd_back_for_the_slave_only_the_holder_lets_go_first(bed: Bed) -> None:
    """In the failsafe, etcd answers h2 again but not h1: h1 waits up to 2/3 ttl for its own
    key, then stops; h2 starts only after that (the key is free: h1's lease expired)."""
    tb, etcd = bed.tb, bed.etcd
    with HolderSampler(tb) as smp:
        etcd.kill("h1")
        for h in FAILSH:
            for m in ("e2", "e3"):
                tb.block(h, m)
        bed.wait_log("h1", "failsafe: etcd unreachable for every host; staying", TTL + 10)
        time.sleep(TTL)  # the leases expire in e2/e3
        t = time.monotonic()
        tb.unblock("h2")  # h2 reaches the quorum again, h1 does not
        bed.alone("h2", TTL + 20)
        gone, came = last_held(smp, "h1", t), first_held(smp, "h2", t)
        bed.wait_log("h1", "failsafe over: h2 reaches etcd", 5)
        tb.unblock("h1")
        etcd.start_member("h1")
        bed.alone("h1", SETTLE)
    no_overlap(bed, smp)
    assert gone is not None and came is not None and gone < came, (gone, came)
    print(f"\netcd back for h2 only: h1 let go {gone - t:.2f} s later, h2 held it {came - t:.2f} s later")


def test_etcd_entirely_down_without_failsafe_nobody_new_starts() -> None:
    with Testbed(hosts=["h1", "h2", "e2", "e3"]) as tb:
        _down_without_failsafe(Bed(tb, failsafe=False))


def _down_without_failsafe(bed: Bed) -> None:
    tb, etcd = bed.tb, bed.etcd
    with HolderSampler(tb) as smp:
        t = time.monotonic()
        for m in MEMBERS:
            etcd.kill(m)
        wait_until(lambda: tb.vip_holders() == [], TTL + 5, what="the holder to stop")
        stopped = time.monotonic() - t
        time.sleep(2 * TTL)
        assert tb.vip_holders() == []
        for m in MEMBERS:
            etcd.start_member(m)
        bed.alone("h1", SETTLE)
    no_overlap(bed, smp)
    assert stopped < TTL
    assert "lost the arbiter" in bed.log("h1")
    assert "not ready while the arbiter cannot be reached (arbiter etcd: no member of" in bed.log("h2")
    print(f"\netcd down: the holder stopped {stopped:.2f} s later; nobody started for {2 * TTL:g} s")


# ----- the nemesis ------------------------------------------------------------------------

class Nemesis:
    """Random faults from a seeded generator; each is undone before the next."""

    HOSTS = ["h1", "h2", "e2", "e3"]

    def __init__(self, bed: Bed, seed: int) -> None:
        self.bed, self.rng = bed, random.Random(seed)
        self.done: list[tuple[float, str]] = []

    def once(self) -> None:
        bed, tb, rng = self.bed, self.bed.tb, self.rng
        kind = rng.choice(["partition", "kill9-etcd", "sigstop-etcd", "linkdown", "crash"])
        hold = rng.uniform(1.0, 2.5 * TTL)
        if kind == "partition":
            side = set(rng.sample(self.HOSTS, 2))
            for a in side:
                for b in self.HOSTS:
                    if b not in side:
                        tb.block(a, b)
            what, undo = f"partition {sorted(side)} | {sorted(set(self.HOSTS) - side)}", \
                lambda: [tb.unblock(h) for h in self.HOSTS]
        elif kind in ("kill9-etcd", "sigstop-etcd"):
            m = rng.choice(MEMBERS)
            if kind == "kill9-etcd":
                bed.etcd.kill(m)
                undo = lambda: bed.etcd.start_member(m)  # noqa: E731
            else:
                tb.signal(bed.etcd.procs[m], signal.SIGSTOP)
                undo = lambda: tb.signal(bed.etcd.procs[m], signal.SIGCONT)  # noqa: E731
            what = f"{kind} {m}"
        elif kind == "linkdown":
            h = rng.choice(self.HOSTS)
            tb.link_down(h)
            what, undo = f"link down {h}", lambda: tb.link_up(h)
        else:
            h = rng.choice(FAILSH)
            bed.crash(h)
            what, undo = f"crash {h}", lambda: bed.boot(h)
        self.done.append((time.monotonic(), f"{what} for {hold:.1f} s"))
        time.sleep(hold)
        undo()
        time.sleep(rng.uniform(0.5, 3.0))


def timeline(smp: HolderSampler, t0: float) -> str:
    """The holders over time, one entry per change: '+12.3 s h2'."""
    out, last = [], None
    for t, h in smp.holders():
        if h != last:
            out.append(f"+{t - t0:.1f} s {','.join(h) or '-'}")
            last = h
    return "; ".join(out)


@pytest.mark.slow
def test_nemesis_never_two_holders(bed: Bed) -> None:
    seed = int(time.time())
    nemesis = Nemesis(bed, seed)
    with HolderSampler(bed.tb) as smp:
        t0 = time.monotonic()
        end = t0 + NEMESIS
        for _ in range(int(NEMESIS)):  # a fault takes at least a second: bounded either way
            if time.monotonic() >= end:
                break
            nemesis.once()
        bed.alone("h1", SETTLE + 2 * TTL)
    both = smp.overlaps()
    samples = len(smp.holders())
    print(f"\nnemesis seed {seed}, {NEMESIS:g} s, {len(nemesis.done)} faults: "
          + "; ".join(f"+{t - t0:.1f} s {w}" for t, w in nemesis.done))
    print(f"holders over time: {timeline(smp, t0)}")
    print(f"{samples} samples every 50 ms, {len(both)} with two holders")
    assert smp.error is None
    assert samples > NEMESIS / 0.5
    if both:
        bed.fail(f"seed {seed}: {len(both)} samples with two holders, first at +{both[0][0] - t0:.2f} s")
