"""failover.announce (gratuitous ARP, unsolicited neighbour advertisements) and the Tcl helpers
that use it (fo::garp, fo::ipup, fo::ipdown), issue 14.

Frames are checked twice: as built (no root needed) and as received on the wire, by a capture
running in the client namespace of a test bed (tests/netcapture.py, an AF_PACKET listener that
sends nothing) and decoded there from the RFCs, independently of the sender.  The decisive test
is the client's neighbour table (``ip -n NS neigh``, read only): an entry that still points at
the old holder's MAC must point at the new holder's after one announcement, IPv4 and IPv6.

Every announcement and every probe runs inside a namespace of the bed; the root namespace only
runs ``ip`` to configure and read.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netcapture import decode_arp, decode_na, read

from failover.lab import testbed
from failover.lab.testbed import Testbed, TestbedError, log_tails, wait_until
from failover.shell import announce

pytestmark = pytest.mark.netns

HERE = Path(__file__).resolve().parent
NETCAPTURE = HERE / "netcapture.py"
MAC = bytes.fromhex("02aabbccddee")

_reason = testbed.available()


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed announce run (exit 1, nothing on stdout)."""
    lines = r.stderr.splitlines()
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("announce: "), r.stderr
    assert r.stdout == ""
    return lines[0]


# ----- the frames as built (no root) --------------------------------------------------------------

def test_arp_announcement_frame() -> None:
    frame = announce.garp_frame(MAC, ipaddress.IPv4Address("192.0.2.10"))
    a = decode_arp(frame)
    assert a == {"eth_dst": "ff:ff:ff:ff:ff:ff", "eth_src": "02:aa:bb:cc:dd:ee", "htype": 1, "ptype": 0x0800,
                 "hlen": 6, "plen": 4, "oper": 1, "sha": "02:aa:bb:cc:dd:ee", "spa": "192.0.2.10",
                 "tha": "00:00:00:00:00:00", "tpa": "192.0.2.10"}
    assert len(frame) == 42  # the NIC pads to 60


@pytest.mark.parametrize("addr", ["2001:db8::10", "fd99:14::100", "fe80::1", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"])
def test_neighbour_advertisement_frame(addr: str) -> None:
    frame = announce.na_frame(MAC, ipaddress.IPv6Address(addr))
    na = decode_na(frame)
    assert na["checksum_ok"], f"bad ICMPv6 checksum {na['checksum']:#06x}"
    assert (na["eth_dst"], na["eth_src"]) == ("33:33:00:00:00:01", "02:aa:bb:cc:dd:ee")
    assert (na["version"], na["next_header"], na["hop_limit"]) == (6, 58, 255)
    assert (na["src"], na["dst"]) == (str(ipaddress.IPv6Address(addr)), "ff02::1")
    assert (na["type"], na["code"]) == (136, 0)
    assert (na["override"], na["solicited"], na["router"], na["reserved"]) == (True, False, False, 0)
    assert na["target"] == str(ipaddress.IPv6Address(addr))
    assert na["options"] == [(2, "02:aa:bb:cc:dd:ee")]  # target link-layer address
    # The decoder really checks: one flipped bit anywhere in the message breaks the checksum.
    for pos in (14 + 8, 14 + 40 + 9, len(frame) - 1):
        bad = bytearray(frame)
        bad[pos] ^= 0x01
        assert not decode_na(bytes(bad))["checksum_ok"], pos


@pytest.mark.parametrize("args", [["eth0", "10.1"], ["eth0", "bogus"], ["eth0", "fe80::1%eth0"],
                                  ["eth0", "10.0.0.1", "--count", "0"], ["eth0", "10.0.0.1", "--count", "101"],
                                  ["eth0", "10.0.0.1", "--delay", "-1"], ["eth0", "::1", "--delay", "nan"],
                                  ["eth0", "10.0.0.1", "--wait", "-1"], ["eth0", "10.0.0.1", "--wait", "61"]])
def test_bad_arguments_are_one_line_and_exit_1(args: list[str]) -> None:
    """Checked before any socket is opened, so no root needed and nothing is sent."""
    r = subprocess.run([sys.executable, "-m", "failover.shell.announce", *args], capture_output=True, text=True,
                       timeout=20, stdin=subprocess.DEVNULL)
    line = one_line_error(r)
    assert "not an IP address" in line or "must be" in line


# ----- on the namespace test bed ---------------------------------------------------------------------

class Capture:
    """tests/netcapture.py in a namespace of the bed: ARP and NA frames it receives."""

    def __init__(self, tb: Testbed, host: str, count: int = 100, timeout: float = 30.0) -> None:
        self.out = tb.tmpdir / f"capture-{time.monotonic_ns()}.jsonl"
        self.proc = tb.run(host, [sys.executable, str(NETCAPTURE), "--out", str(self.out),
                                  "--count", str(count), "--timeout", str(timeout)], log_name="netcapture")
        self.tb = tb
        wait_until(lambda: read(self.out)[0] or self.proc.poll() is not None, 10, what="the capture to listen")
        if self.proc.poll() is not None:
            raise TestbedError(f"capture exited {self.proc.returncode}: {log_tails([tb.log_path(self.proc)])}")

    def frames(self) -> list[tuple[float, float, bytes]]:
        """(monotonic time, kernel receive time, frame) of each frame so far."""
        return read(self.out)[1]

    def arps(self, addr: str) -> list[tuple[float, dict]]:
        """(monotonic time, decoded) of the ARP frames about `addr`."""
        return [(t, a) for t, _, f in self.frames() if f[12:14] == b"\x08\x06"
                for a in [decode_arp(f)] if a["spa"] == addr]

    def nas(self, addr: str) -> list[tuple[float, dict]]:
        """(monotonic time, decoded) of the neighbour advertisements for `addr`."""
        return [(t, n) for t, _, f in self.frames() if f[12:14] == b"\x86\xdd"
                for n in [decode_na(f)] if n["target"] == addr]

    def spacing(self, addr: str) -> list[float]:
        """Seconds between the announcements of `addr`, by the kernel's receive times."""
        def about(f: bytes) -> bool:
            if ":" in addr:
                return f[12:14] == b"\x86\xdd" and decode_na(f)["target"] == addr
            return f[12:14] == b"\x08\x06" and decode_arp(f)["spa"] == addr
        return gaps([kt for _, kt, f in self.frames() if about(f)])

    def stop(self) -> None:
        self.tb.stop(self.proc)


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in zip(times, times[1:], strict=False)]


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    if _reason is not None:
        pytest.skip(f"netns test bed: {_reason}")
    with Testbed(hosts=["h1", "h2"]) as tb:
        for h in tb.hosts:
            tb.start_vipserver(h)
        yield tb


@pytest.fixture
def tb(bed: Testbed) -> Iterator[Testbed]:
    """The bed with neither VIP on any host and an empty client neighbour table, before and after."""
    def clean() -> None:
        for h in bed.hosts:
            bed.vip_del(h)
            bed.vip_del(h, bed.vip6_cidr)
        testbed._cmd(["ip", "-n", bed.client.ns, "neigh", "flush", "dev", "eth0"], check=False)
    clean()
    yield bed
    clean()


def run_announce(tb: Testbed, host: str, *args: str, wrapper: tuple[str, ...] = (),
                 timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return tb.exec(host, [*wrapper, sys.executable, "-m", "failover.shell.announce", *args], check=False,
                   timeout=timeout)


@pytest.mark.parametrize("family", [4, 6])
def test_announcements_on_the_wire(tb: Testbed, family: int) -> None:
    """What arrives at the client: N frames `delay` apart, each a well-formed announcement of
    the address from h1's MAC (IPv4: RFC 5227 ARP announcement; IPv6: RFC 4861 unsolicited NA)."""
    addr, cidr = (tb.vip, tb.vip_cidr) if family == 4 else (tb.vip6, tb.vip6_cidr)
    count, delay = 3, 0.3
    mac = tb.mac("h1")
    tb.vip_add("h1", garp=False, cidr=cidr)
    cap = Capture(tb, "cl")
    r = run_announce(tb, "h1", "eth0", cidr, "--count", str(count), "--delay", f"{delay:g}")
    assert r.returncode == 0 and not r.stderr, r.stderr
    def received() -> list[tuple[float, dict]]:
        return cap.arps(addr) if family == 4 else cap.nas(addr)
    wait_until(lambda: len(received()) >= count, 5, what=f"{count} announcements at the client")
    time.sleep(delay)  # nothing more comes
    got = received()
    cap.stop()
    assert len(got) == count, [d for _, d in got]
    for _, d in got:
        if family == 4:
            assert (d["eth_dst"], d["eth_src"]) == ("ff:ff:ff:ff:ff:ff", mac)
            assert (d["htype"], d["ptype"], d["hlen"], d["plen"], d["oper"]) == (1, 0x0800, 6, 4, 1)
            assert (d["sha"], d["spa"], d["tha"], d["tpa"]) == (mac, addr, "00:00:00:00:00:00", addr)
        else:
            assert d["checksum_ok"], f"bad ICMPv6 checksum {d['checksum']:#06x}"
            assert (d["eth_dst"], d["eth_src"]) == ("33:33:00:00:00:01", mac)
            assert (d["hop_limit"], d["src"], d["dst"]) == (255, addr, "ff02::1")
            assert (d["type"], d["code"], d["target"]) == (136, 0, addr)
            assert (d["override"], d["solicited"], d["router"]) == (True, False, False)
            assert d["options"] == [(2, mac)]
    spacing = cap.spacing(addr)
    print(f"\nIPv{family}: {count} announcements received, spaced {spacing} s (asked {delay} s)")
    # A lower bound only (the sender sleeps at least `delay`), with room for clock granularity.
    assert all(g >= delay - 0.02 for g in spacing), spacing


@pytest.mark.parametrize("family", [4, 6])
def test_client_follows_the_address_to_the_new_mac(tb: Testbed, family: int) -> None:
    """The client talked to h1, so its neighbour table maps the address to h1's MAC.  The
    address moves to h2 quietly: the entry still says h1.  One announcement from h2, and the
    entry says h2, and the client is served by h2."""
    addr, cidr = (tb.vip, tb.vip_cidr) if family == 4 else (tb.vip6, tb.vip6_cidr)
    mac1, mac2 = tb.mac("h1"), tb.mac("h2")
    assert mac1 != mac2
    tb.vip_add("h1", garp=False, cidr=cidr)
    tb.wait_served("cl", addr, host="h1")
    assert tb.neighbour("cl", addr)[0] == mac1
    tb.vip_del("h1", cidr)
    tb.vip_add("h2", garp=False, cidr=cidr)
    time.sleep(0.5)
    before = tb.neighbour("cl", addr)
    assert before[0] == mac1, f"the client learnt h2 on its own: {before}"  # only the announcement changes it
    t0 = time.monotonic()
    r = run_announce(tb, "h2", "eth0", addr, "--count", "1")
    assert r.returncode == 0, r.stderr
    after = wait_until(lambda: (e := tb.neighbour("cl", addr))[0] == mac2 and e, 5, interval=0.01,
                       what=f"the client's entry for {addr} to point at h2")
    t1 = time.monotonic()
    served = tb.probe("cl", addr)
    print(f"\nIPv{family}: client entry {before} -> {after} within {t1 - t0:.3f} s of starting the announcer")
    assert served.ok and served.host == "h2", served


@pytest.mark.parametrize("case", ["unknown interface", "address not held", "no CAP_NET_RAW", "not root"])
def test_errors_in_a_namespace_are_one_line_and_exit_1(tb: Testbed, case: str) -> None:
    args = ["eth0", tb.vip]
    wrapper: tuple[str, ...] = ()
    if case == "unknown interface":
        args = ["eth9", tb.vip]
        want = "interface 'eth9': No such device"
    elif case == "address not held":
        want = f"{tb.vip} is not on eth0"
    else:
        tb.vip_add("h1", garp=False)
        want = "raw packet socket not permitted (needs root or CAP_NET_RAW)"
        wrapper = ("setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw") if case == "no CAP_NET_RAW" \
            else ("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups")
    cap = Capture(tb, "cl")
    line = one_line_error(run_announce(tb, "h1", *args, wrapper=wrapper))
    assert want in line, line
    time.sleep(0.3)
    assert not cap.arps(tb.vip), "an announcement left despite the error"
    cap.stop()


def test_announcer_stops_when_the_address_goes(tb: Testbed) -> None:
    """An announcement after the address was given up would send the clients back here."""
    tb.vip_add("h1", garp=False, cidr=tb.vip6_cidr)
    cap = Capture(tb, "cl")
    p = tb.python("h1", "failover.shell.announce", "eth0", tb.vip6, "--count", "5", "--delay", "0.5")
    wait_until(lambda: cap.nas(tb.vip6), 5, what="the first NA")
    tb.vip_del("h1", tb.vip6_cidr)
    t_del = time.monotonic()
    assert p.wait(timeout=5) == 1
    out = (tb.log_path(p) or Path()).read_text()
    assert f"{tb.vip6} is no longer (after " in out and out.count("\n") == 1, out
    time.sleep(0.6)
    assert all(t < t_del for t, _ in cap.nas(tb.vip6)), "an NA left after the address was removed"
    cap.stop()


# ----- the Tcl helpers in a namespace ---------------------------------------------------------------

TCL_RUNNER = """
import logging, sys
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
from failover.shell.engine import TCL_LIBRARY
from failover.shell.policy import Policy
from failover.shell.commands import Commands
from failover.shell.tclhost import TclHost
tcl = TclHost()
Commands(tcl, Policy("h1"))
tcl.source(TCL_LIBRARY)
# fo::garp runs in the background; let its runs end (bounded) so their failures are logged
tcl.interp.eval("proc drain {} { for {set i 0} {$i < 500 && [array size ::fo::bgout]} {incr i} "
                "{ after 20; update } }")
for script in sys.argv[1:]:
    print(tcl.interp.eval(script))
tcl.interp.eval("drain")
"""


def tcl_in(tb: Testbed, host: str, *scripts: str) -> tuple[list[str], str]:
    """Evaluate `scripts` with the shipped Tcl library in `host`'s namespace: (results, log)."""
    r = tb.exec(host, [sys.executable, "-c", TCL_RUNNER, *scripts], timeout=30)
    return r.stdout.splitlines(), r.stderr


@pytest.mark.parametrize("family", [4, 6])
def test_ipup_twice_is_up_and_ipdown_leaves_nothing(tb: Testbed, family: int) -> None:
    addr, cidr = (tb.vip, tb.vip_cidr) if family == 4 else (tb.vip6, tb.vip6_cidr)
    spelled = cidr if family == 4 else cidr.replace("::", ":0:0::").upper()  # any spelling will do
    before = set(tb.addresses("h1", family))
    out, log = tcl_in(tb, "h1", "set ::fo::garpcount 1", f"fo::ipup {spelled} eth0", f"fo::ipup {cidr} eth0",
                      f"fo::hasip {addr} eth0")
    assert out[1:] == ["UP", "UP", "1"], (out, log)
    assert "WARNING" not in log and "ERROR" not in log, log  # no "address already assigned", no failed announcer
    assert tb.holders(addr) == ["h1"]
    out, log = tcl_in(tb, "h1", f"fo::ipdown {spelled} eth0", f"fo::hasip {addr} eth0", f"fo::ipdown {cidr} eth0")
    assert out == ["RECOVER", "0", "RECOVER"], (out, log)
    assert "ERROR" not in log, log
    assert set(tb.addresses("h1", family)) == before  # the host's own addresses stay, the VIP is gone
    assert tb.holders(addr) == []


@pytest.mark.parametrize("family", [4, 6])
def test_ipdown_removes_the_address_whatever_its_prefix_length(tb: Testbed, family: int) -> None:
    """An address someone added by hand without a prefix (/32, /128) is still removed by
    fo::ipdown ADDRESS/24 (/64): `ip addr del` must name the length the interface has."""
    addr, cidr = (tb.vip, tb.vip_cidr) if family == 4 else (tb.vip6, tb.vip6_cidr)
    tb.vip_add("h1", garp=False, cidr=f"{addr}/{32 if family == 4 else 128}")
    out, log = tcl_in(tb, "h1", f"fo::ipdown {cidr} eth0")
    assert out == ["RECOVER"], (out, log)
    assert "WARNING" not in log and "ERROR" not in log, log
    assert tb.holders(addr) == []


def test_garpcount_and_garpdelay_from_tcl(tb: Testbed) -> None:
    """::fo::garpcount and ::fo::garpdelay (keepalived's garp_master_repeat and the spacing)
    set how many announcements fo::ipup / fo::garp send and how far apart."""
    cap = Capture(tb, "cl")
    out, log = tcl_in(tb, "h1", "set ::fo::garpcount 4", "set ::fo::garpdelay 0.25",
                      f"fo::ipup {tb.vip_cidr} eth0", f"fo::ipup {tb.vip6_cidr} eth0")
    assert out[2:] == ["UP", "UP"], (out, log)
    wait_until(lambda: len(cap.arps(tb.vip)) >= 4 and len(cap.nas(tb.vip6)) >= 4, 5,
               what="4 ARP and 4 NA at the client")
    time.sleep(0.35)
    arps, nas = cap.arps(tb.vip), cap.nas(tb.vip6)
    spacing = {a: cap.spacing(a) for a in (tb.vip, tb.vip6)}
    cap.stop()
    assert (len(arps), len(nas)) == (4, 4)
    print(f"\ngarpcount 4, garpdelay 0.25: ARP spaced {spacing[tb.vip]}, NA spaced {spacing[tb.vip6]}")
    for gs in spacing.values():
        assert all(g >= 0.25 - 0.02 for g in gs), gs


# ----- failsh, when the announcer cannot send ---------------------------------------------------------

def test_failsh_names_a_missing_cap_net_raw_in_one_line(tb: Testbed) -> None:
    """failsh without CAP_NET_RAW (its announcer inherits the bounding set): the address is
    still added, the service UP, and the log says why no announcement left, in one line."""
    policy = tb.tmpdir / "nocap.tcl"
    policy.write_text(f"set ::fo::garpcount 1\n"
                      f"proc ipstart {{args}} {{\n"
                      f"    fo::ipup {tb.vip_cidr} eth0\n    return [fo::ipup {tb.vip6_cidr} eth0]\n}}\n"
                      f"failsvc ip interval 0.5\nfailsvc ip start ipstart\n")
    faild = tb.start_faild("h1", tag="nocap")
    failsh = tb.start_failsh("h1", policy, tag="nocap",
                             wrapper=["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw"])
    logfile = tb.log_path(failsh)
    assert logfile is not None

    def lines() -> list[str]:
        return [ln for ln in logfile.read_text(errors="replace").splitlines() if "CAP_NET_RAW" in ln]
    try:
        wait_until(lambda: len(lines()) >= 2, 20, what="failsh to log both failed announcements")
        assert tb.service_states("ip", ["h1"]) == {"h1": "UP"}
    except (TestbedError, AssertionError) as e:
        pytest.fail(f"{e}\n{log_tails([logfile])}")
    finally:
        tb.stop(failsh, timeout=10)
        tb.stop(faild, timeout=10)
    print("\n" + "\n".join(lines()))
    assert len(lines()) == 2, lines()
    for ln in lines():
        assert "announce: raw packet socket not permitted (needs root or CAP_NET_RAW)" in ln
    for addr in (tb.vip, tb.vip6):  # one line each; the two announcers run side by side, in any order
        assert sum(f"eth0 {addr} " in ln for ln in lines()) == 1, (addr, lines())
    assert tb.holders(tb.vip) == ["h1"] and tb.holders(tb.vip6) == ["h1"]
