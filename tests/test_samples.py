"""End-to-end: the shipped samples on the network-namespace test bed (issue #4).

Each host runs the real faild and failsh (``testbed.FailoverHosts``) and vipserver; the
client namespace runs vipclient against the virtual address all the time, so "served"
below means "a TCP connection from the client got an answer from that host's vipserver".
Nothing connects from the root namespace; the only root-namespace commands are ``ip``/
``nft`` configuration and ``ip addr show`` (which hosts hold the VIP).

samples/ipfailover-linux (policy generated with its setup.sh, interval 0.5 s, failsh's
default dead factor 2.5, so a silent peer counts FAIL after DEAD = 1.25 s and a failsh's
lease lasts as long), h1 master, h2 slave, faults on h1:

============  =============================================  ====================================
fault         may h1 still hold the VIP after h2 took it?    restore, and the overlap it ends
============  =============================================  ====================================
kill9-failsh  yes: nothing on h1 is left to remove it        restart failsh: at start-up it stops
                                                             the stale UP (ip addr del) first
kill9-faild   only in the detection window: h1's failsh      restart faild (no overlap left)
              removes it once its faild has been silent
              for DEAD, as h2 takes over after DEAD
sigstop       yes: h1 hangs (faild and failsh frozen)         SIGCONT: h2 sees h1 UP again and
                                                             hands back at once
linkdown      yes: h1 cannot tell it is cut off (no           link up: as for sigstop
              client can reach it meanwhile)
graceful      never: h1 removes the VIP before it gives up    restart failsh (no overlap left)
              its lease (SIGTERM)
============  =============================================  ====================================

After the restore the overlap the fault left must end within ``RESTORE_OVERLAP[fault]``;
from then on, through the whole handback (h1 RECOVER, h2 stops, h1 starts), no sample
(every 50 ms) may show two holders.  And the client must be served by h1 again within
``SERVED_AFTER_RELEASE`` s of h2 letting go: where h1 kept the address (sigstop, linkdown,
kill9-faild when h1 was slow to notice), clients still send to h2's MAC until h1
re-announces the address (the service's ``announce`` script, fo::garp); without that they
wait 30-50 s for their ARP entry to expire.

Every fault runs twice: with the IPv4 VIP and an IPv4 client, and with the IPv6 VIP
(fd99:N::100/64, added with nodad, announced by unsolicited neighbour advertisements) and
an IPv6 client; the checks are the same.  ``test_ipfailover_needs_no_arping`` runs the sample
with both addresses and failsh's PATH stripped of every arping: failover sends its
announcements itself (failover.announce), so no test here needs arping of either flavour.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from failover.lab import testbed
from failover.lab.testbed import FAULTS, FailoverHosts, HolderSampler, Testbed, TestbedError, log_tails, wait_until
from failover.lab.vipclient import Result, Tail, first_ok, longest_gap


def _unavailable() -> str | None:
    return testbed.available()  # no arping: failover announces addresses itself (failover.announce)


_reason = _unavailable()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_reason is not None, reason=f"netns test bed: {_reason}")]

REPO = Path(__file__).resolve().parent.parent
IPFAILOVER = REPO / "samples" / "ipfailover-linux"
SYMMETRIC = REPO / "samples" / "symmetric" / "failover.tcl"

INTERVAL = 0.5
DEAD = 2.5 * INTERVAL       # failsh's default dead factor: silence before a peer counts FAIL; lease ttl
STABLE = 1.0                # "serving" = every reply of the last STABLE s came from that host
TAKEOVER_LIMIT = DEAD + 4 * INTERVAL + 4.0   # fault -> the client served by the backup
HANDBACK_LIMIT = 15.0       # restore -> the master alone holds the VIP and serves for STABLE s
SERVED_AFTER_RELEASE = 3.0  # the backup let go -> the client served by the master
FAULT_HOLD = DEAD + 2 * INTERVAL  # the fault lasts this long after the takeover (lets h1 notice)

# How long after the restore h1 may still hold the address together with h2 (see the table above).
RESTORE_OVERLAP = {
    "kill9-failsh": 8.0,                  # the new failsh's start-up (Python, Tcl, the policy) + its stop
    "kill9-faild": 0.0,
    "sigstop": DEAD + 3 * INTERVAL + 1.0,  # h2 polls h1 again and hands back
    "linkdown": DEAD + 3 * INTERVAL + 2.0,  # the same, plus ZeroMQ's reconnect
    "graceful": 0.0,
}
# Overlap allowed while the fault lasts (from the fault until the restore), in seconds of samples.
FAULT_OVERLAP: dict[str, float | None] = {
    "kill9-failsh": None, "sigstop": None, "linkdown": None,  # unbounded: see the table
    "kill9-faild": DEAD,   # both sides count the same dead time; they act within about a poll
    "graceful": 0.0,
}


# ----- helpers (test_partition.py uses them too) -----------------------------------------------

def gen_policy(out: Path, master: str, slave: str, vip_cidr: str | Sequence[str], interval: float = INTERVAL) -> Path:
    """samples/ipfailover-linux/setup.sh, as an administrator runs it (sed only, no traffic);
    `vip_cidr` is one address or several (IPv4 and/or IPv6), each one ``-a``."""
    cidrs = [vip_cidr] if isinstance(vip_cidr, str) else list(vip_cidr)
    r = subprocess.run(["sh", str(IPFAILOVER / "setup.sh"), "-m", master, "-s", slave,
                        *[a for c in cidrs for a in ("-a", c)], "-d", "eth0", "-i", f"{interval:g}", "-o", str(out)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return out


def assert_states(tb: Testbed, service: str, expected: dict[str, str | None], timeout: float = 5.0) -> None:
    """The hosts' faild hold `expected` for `service` within `timeout` s (None: faild does not
    answer).  A start procedure records UP when it returns, after adding the address and
    starting its announcements, so the client may be served a moment before faild says UP."""
    got: dict[str, str | None] = {}

    def ok() -> bool:
        got.update(tb.service_states(service, list(expected)))
        return got == expected
    try:
        wait_until(ok, timeout, interval=0.2, what=f"{service} states {expected}")
    except TestbedError:
        pytest.fail(f"{service}: faild states {got}, want {expected}")


def holders(tb: Testbed, addr: str) -> list[str]:
    return tb.holders(addr)  # IPv4 or IPv6


def wait_served(tail: Tail, host: str, after: float, timeout: float, what: str = "") -> Result:
    """The first reply from `host` completed after `after` (waits up to `timeout` s from now)."""
    return wait_until(lambda: first_ok(tail.since(after), after, host=host), timeout, interval=0.02,
                      what=what or f"the client served by {host}")


def wait_alone(tb: Testbed, tail: Tail, host: str, timeout: float, addr: str | None = None) -> float:
    """Until `host` alone holds `addr` and every reply of the last STABLE s is its; returns when."""
    addr = addr or tb.vip

    def good() -> bool:
        if holders(tb, addr) != [host]:
            return False
        recent = tail.since(time.monotonic() - STABLE)
        return len(recent) >= 20 and all(r.ok and r.host == host for r in recent)
    wait_until(good, timeout, interval=0.05, what=f"{host} alone holding {addr} and serving")
    return time.monotonic()


def release_time(smp: HolderSampler, host: str, start: float, addr: str | None = None) -> float:
    """The first sample after `start` from which on `host` never held `addr` again."""
    t_rel = start
    for t, h in smp.holders(addr, start):
        if host in h:
            t_rel = t
    later = [t for t, h in smp.holders(addr, t_rel) if t > t_rel]
    return later[0] if later else t_rel


def overlap_span(samples: list[tuple[float, tuple[str, ...]]]) -> float:
    """Seconds from the first to the last sample with two holders (0 if none)."""
    return samples[-1][0] - samples[0][0] if samples else 0.0


def symmetric_setup(tb: Testbed) -> tuple[str, str, dict[str, str]]:
    """samples/symmetric on h1 (alpha, web) and h2 (beta, mail): the two service addresses
    and the environment its policy reads."""
    web, mail = tb.vip, f"{tb.vip.rsplit('.', 1)[0]}.101"
    env = {"FO_ALPHA": "h1", "FO_BETA": "h2", "FO_DEV": "eth0", "FO_VIP_WEB": tb.vip_cidr,
           "FO_VIP_MAIL": f"{mail}/{tb.prefixlen}", "FO_INTERVAL": f"{INTERVAL:g}"}
    return web, mail, env


# ----- samples/ipfailover-linux: the five faults on h1 -------------------------------------------

class IpPair(FailoverHosts):
    """h1 (master) and h2 (slave) running samples/ipfailover-linux for `cidrs` (IPv4 and/or
    IPv6), with one vipclient per address in the client namespace (`tails`: address -> its
    results)."""

    master, backup = "h1", "h2"

    def __init__(self, tb: Testbed, tails: dict[str, Tail], cidrs: Sequence[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.cidrs = list(cidrs or [tb.vip_cidr])
        policy = gen_policy(tb.tmpdir / f"ipfailover-{time.monotonic_ns()}.tcl", self.master, self.backup, self.cidrs)
        # every fault here is a takeover and a handback of the same failsh processes, a dozen
        # within minutes: flap protection (6 in 5 min, tests/test_maintenance.py) would hold it
        policy.write_text(policy.read_text() + "failsvc ip flap off\n")
        super().__init__(tb, {self.master: policy, self.backup: policy}, env=env)
        self.tails = tails

    @property
    def tail(self) -> Tail:
        return next(iter(self.tails.values()))

    def wait_alone(self, host: str, timeout: float) -> None:
        """`host` alone holds every address and serves each to the client (STABLE s)."""
        end = time.monotonic() + timeout
        for addr, tail in self.tails.items():
            wait_alone(self.tb, tail, host, max(1.0, end - time.monotonic()), addr)

    def reset(self) -> None:
        """Back to a clean start: every daemon restarted, links up, no VIP anywhere."""
        self.stop()
        for h in (self.master, self.backup):
            self.tb.link_up(h)
            for cidr in self.cidrs:
                self.tb.vip_del(h, cidr)
        self.start()


def start_clients(tb: Testbed, addrs: Sequence[str]) -> dict[str, Tail]:
    return {a: Tail(tb.start_vipclient(duration=900, addr=a)[1]) for a in addrs}


@pytest.fixture(scope="module", params=[4, 6], ids=["ipv4", "ipv6"])
def ip_pair(request: pytest.FixtureRequest):
    """The IPv4 VIP (10.99.N.100/24) or the IPv6 VIP (fd99:N::100/64) alone, each with its
    own client; one bed at a time (pytest runs every test of one before making the other)."""
    with Testbed(hosts=["h1", "h2"]) as tb:
        for h in tb.hosts:
            tb.start_vipserver(h)
        vip, cidr = (tb.vip, tb.vip_cidr) if request.param == 4 else (tb.vip6, tb.vip6_cidr)
        pair = IpPair(tb, start_clients(tb, [vip]), [cidr])
        pair.start()
        pair.wait_alone("h1", 30)
        yield pair
        pair.stop()


def fault_cycle(pair: IpPair, fault: str) -> None:
    """`fault` on the master, the backup takes over every address, the fault is undone, the
    master takes them back; the checks of the module docstring, for each address."""
    tb, m, b = pair.tb, pair.master, pair.backup
    addrs = list(pair.tails)
    try:
        pair.wait_alone(m, 20)
    except TestbedError:  # an earlier test left a mess: start over
        pair.reset()
        pair.wait_alone(m, 30)
    with HolderSampler(tb, addrs) as smp:
        t_fault = time.monotonic()
        pair.inject(m, fault)
        try:
            served = {a: wait_served(tail, b, t_fault, TAKEOVER_LIMIT, f"{b} serving {a} after {fault}")
                      for a, tail in pair.tails.items()}
            time.sleep(FAULT_HOLD)
            t_restore = time.monotonic()
            pair.restore(m, fault)
            pair.wait_alone(m, HANDBACK_LIMIT)
        except TestbedError as e:
            pytest.fail(f"{fault}: {e}\nholders now {({a: tb.holders(a) for a in addrs})}\n{log_tails(pair.logs())}")
    reannounced = "re-announcing" in (tb.log_path(pair.failsh[m]) or Path("/nonexistent")).read_text()
    for addr, tail in pair.tails.items():
        r = served[addr]
        takeover = r.t1 - t_fault
        t_release = release_time(smp, b, t_restore, addr)
        back = first_ok(tail.since(t_release), t_release, host=m)
        assert back is not None
        during = smp.overlaps(addr, t_fault, t_restore)
        after = smp.overlaps(addr, t_restore)
        print(f"\n{fault} {addr}: takeover {takeover:.2f} s (outage "
              f"{longest_gap(tail.since(t_fault), t_fault, r.t1):.2f} s), two holders in {len(during)} samples "
              f"({overlap_span(during):.2f} s) during the fault and "
              f"{f'until {after[-1][0] - t_restore:.2f} s after' if after else 'none after'} the restore; {b} let "
              f"go {t_release - t_restore:.2f} s after the restore, the client served by {m} "
              f"{back.t1 - t_release:.2f} s later{' (re-announced)' if reannounced else ''}")

        # During the fault: the old master keeps the VIP only where it cannot help it.
        limit = FAULT_OVERLAP[fault]
        if limit == 0:
            assert not during, f"{fault} {addr}: two holders during the fault: {during[:5]}"
        elif limit is not None:
            assert overlap_span(during) <= limit, f"{fault} {addr}: two holders during the fault: {during[:5]}..."
        # After the restore: the overlap the fault left ends in time, and the handback adds none.
        if after:
            assert after[-1][0] - t_restore <= RESTORE_OVERLAP[fault], \
                f"{fault} {addr}: two holders {after[-1][0] - t_restore:.2f} s after the restore"
            first_single = next(t for t, h in smp.holders(addr, t_restore) if len(h) <= 1)
            assert after[-1][0] < first_single, f"{fault} {addr}: two holders again during the handback"
        # The client follows the handback within seconds (the re-announcement), not after ARP expiry.
        assert back.t1 - t_release <= SERVED_AFTER_RELEASE, \
            f"{fault} {addr}: client served by {m} only {back.t1 - t_release:.1f} s after {b} let go"
    assert_states(tb, "ip", {m: "UP", b: "RECOVER"})


@pytest.mark.parametrize("fault", FAULTS)
def test_ipfailover_fault_takeover_and_handback(ip_pair: IpPair, fault: str) -> None:
    """The five faults, IPv4 and IPv6: with IPv6, fo::ipup adds the address with nodad and
    announces it with unsolicited neighbour advertisements, fo::ipdown removes it for good,
    and the IPv6 client follows every move as the IPv4 one does."""
    fault_cycle(ip_pair, fault)


# ----- samples/ipfailover-linux without any arping --------------------------------------------------

def stripped_path(bindir: Path, drop: str = "arping") -> str:
    """A PATH of one directory holding a link to every program the current PATH finds, except
    those whose name starts with `drop`."""
    bindir.mkdir()
    for d in os.get_exec_path():
        if not os.path.isdir(d):
            continue
        for e in os.scandir(d):
            if e.name.startswith(drop) or os.path.lexists(bindir / e.name):
                continue
            if e.is_file() and os.access(e.path, os.X_OK):
                (bindir / e.name).symlink_to(e.path)
    return str(bindir)


@pytest.mark.parametrize("variant", ["no arping", "trap arping"])
def test_ipfailover_needs_no_arping(tmp_path: Path, variant: str) -> None:
    """The sample with an IPv4 and an IPv6 VIP, failsh's PATH stripped of every arping: the
    graceful takeover and the handback work, both clients follow (they would wait 15-45 s for
    their neighbour entries without announcements).  With "trap arping" an arping that logs
    its call and fails is first on the PATH: it is never called."""
    path = stripped_path(tmp_path / "bin")
    trap, ran = tmp_path / "trap" / "arping", tmp_path / "arping-ran"
    if variant == "trap arping":
        trap.parent.mkdir()
        trap.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {ran}\nexit 1\n")
        trap.chmod(0o755)
        path = f"{trap.parent}:{path}"
    with Testbed(hosts=["h1", "h2"]) as tb:
        found = tb.exec("h1", ["env", f"PATH={path}", "sh", "-c", "command -v arping || echo none"]).stdout.strip()
        assert found == (str(trap) if variant == "trap arping" else "none")
        for h in tb.hosts:
            tb.start_vipserver(h)
        pair = IpPair(tb, start_clients(tb, [tb.vip, tb.vip6]), [tb.vip_cidr, tb.vip6_cidr], env={"PATH": path})
        pair.start()
        try:
            pair.wait_alone("h1", 30)
        except TestbedError as e:
            pytest.fail(f"{e}\n{log_tails(pair.logs())}")
        fault_cycle(pair, "graceful")
        logs = {p.name: p.read_text(errors="replace") for p in pair.logs()}
        pair.stop()
    assert not ran.exists(), f"arping was run: {ran.read_text()}"
    assert not [n for n, text in logs.items() if "arping" in text], "arping in the logs"


# ----- samples/ipfailover-linux: three hosts in a chain ------------------------------------------

def test_ipfailover_chain_of_three_hosts() -> None:
    """h1 > h2 > h3: h2 takes over from h1 (h3 waits for h2), h3 only when both are gone;
    each host that comes back takes the address back from the one below it.

    setup.sh knows one master and one slave, so each host gets the file written from its own
    point of view (the hosts before it masters, those after it slaves; failsh drops itself
    from the lists): h1 ``-m h1 -s 'h2 h3'``, h2 ``-m h1 -s h3``, h3 ``-m 'h1 h2' -s h3``.
    A crash is kill -9 of both daemons and the address gone (as after a reboot); the
    crashed host's vipserver stays up, so only the VIP decides who answers.
    """
    with Testbed(hosts=["h1", "h2", "h3"]) as tb:
        views = {"h1": ("h1", "h2 h3"), "h2": ("h1", "h3"), "h3": ("h1 h2", "h3")}
        policies = {h: gen_policy(tb.tmpdir / f"ipfailover-{h}.tcl", m, s, tb.vip_cidr) for h, (m, s) in views.items()}
        for h in tb.hosts:
            tb.start_vipserver(h)
        _, results = tb.start_vipclient(duration=300)
        tail = Tail(results)
        fo = FailoverHosts(tb, policies)
        fo.start()

        def crash(h: str) -> None:
            fo.kill(h, "failsh")
            fo.kill(h, "faild")
            tb.vip_del(h)

        def boot(h: str) -> None:
            fo.restart(h, "faild")
            fo.restart(h, "failsh")

        try:
            wait_alone(tb, tail, "h1", 30)
            with HolderSampler(tb) as smp:
                t1 = time.monotonic()
                crash("h1")
                wait_served(tail, "h2", t1, TAKEOVER_LIMIT)
                wait_alone(tb, tail, "h2", 10)
                time.sleep(DEAD + 2 * INTERVAL)  # h3 has had time to (wrongly) start too
                assert holders(tb, tb.vip) == ["h2"]
                assert_states(tb, "ip", {"h1": None, "h2": "UP", "h3": "RECOVER"})
                t2 = time.monotonic()
                crash("h2")
                wait_served(tail, "h3", t2, TAKEOVER_LIMIT)
                wait_alone(tb, tail, "h3", 10)
                t3 = time.monotonic()
                boot("h2")
                wait_alone(tb, tail, "h2", HANDBACK_LIMIT)
                t4 = time.monotonic()
                boot("h1")
                wait_alone(tb, tail, "h1", HANDBACK_LIMIT)
        except TestbedError as e:
            pytest.fail(f"chain: {e}\nVIP holders {tb.vip_holders()}\n{log_tails(fo.logs())}")
        assert not smp.overlaps(), smp.overlaps()[:5]
        assert all("h3" not in h for t, h in smp.holders() if t < t2), "h3 took over while h2 was there"
        assert all("h3" not in h for t, h in smp.holders() if t > t4), "h3 still held the VIP after h2 was back"
        assert_states(tb, "ip", {"h1": "UP", "h2": "RECOVER", "h3": "RECOVER"})
        print(f"\nchain: h3 -> h2 handback {t4 - t3:.2f} s, h2 -> h1 {time.monotonic() - t4:.2f} s")
        fo.stop()


# ----- samples/symmetric ---------------------------------------------------------------------------

def test_symmetric_each_host_serves_its_own_and_takes_over_the_other() -> None:
    """alpha = h1 masters web, beta = h2 masters mail; kill -9 of h2's failsh gives h1 both
    services, restarting it gives mail back to h2.  web never moves.

    After kill -9 of its failsh h2 keeps the mail address (nothing is left on h2 to remove
    it) until the restarted failsh stops that stale UP at start-up; from then on, through
    the handback, mail never has two holders.
    """
    with Testbed(hosts=["h1", "h2"]) as tb:
        web, mail, env = symmetric_setup(tb)
        for h in tb.hosts:
            tb.start_vipserver(h)
        _, web_results = tb.start_vipclient(duration=300)
        _, mail_results = tb.start_vipclient(duration=300, addr=mail)
        web_tail, mail_tail = Tail(web_results), Tail(mail_results)
        fo = FailoverHosts(tb, {"h1": SYMMETRIC, "h2": SYMMETRIC}, env=env)
        fo.start()
        try:
            wait_alone(tb, web_tail, "h1", 30, web)
            wait_alone(tb, mail_tail, "h2", 10, mail)
            with HolderSampler(tb, [web, mail]) as smp:
                t_fault = time.monotonic()
                fo.kill("h2", "failsh")
                r = wait_served(mail_tail, "h1", t_fault, TAKEOVER_LIMIT, "mail served by h1")
                assert "h1" in holders(tb, mail) and holders(tb, web) == ["h1"]
                # h1 records UP once fo::ipup returns; h2's faild
                # still says UP for mail (kill -9 left it there), but h2 holds no lease any more.
                assert_states(tb, "mail", {"h1": "UP"})
                assert_states(tb, "web", {"h1": "UP", "h2": "RECOVER"})
                t_restore = time.monotonic()
                fo.restart("h2", "failsh")
                wait_alone(tb, mail_tail, "h2", HANDBACK_LIMIT, mail)
                wait_alone(tb, web_tail, "h1", 1, web)
        except TestbedError as e:
            pytest.fail(f"symmetric: {e}\n{log_tails(fo.logs())}")
        assert all(h == ("h1",) for _, h in smp.holders(web)), "web moved"
        after = smp.overlaps(mail, t_restore)
        if after:
            assert after[-1][0] - t_restore <= RESTORE_OVERLAP["kill9-failsh"]
            first_single = next(t for t, h in smp.holders(mail, t_restore) if len(h) <= 1)
            assert after[-1][0] < first_single, "mail on both hosts again during the handback"
        assert_states(tb, "web", {"h1": "UP", "h2": "RECOVER"})
        assert_states(tb, "mail", {"h1": "RECOVER", "h2": "UP"})
        print(f"\nsymmetric: mail taken over by h1 {r.t1 - t_fault:.2f} s after the kill, back on h2 "
              f"{time.monotonic() - t_restore:.2f} s after the restart")
        fo.stop()
