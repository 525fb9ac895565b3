"""Heartbeats between real failsh processes on the namespace test bed (issue 15): liveness
that does not ride on the polls (docs/failsh.md, "Liveness: polls and heartbeats").

* h2's polls of h1's faild are dropped (nftables in h2's namespace drops TCP to h1's port
  1847, nothing else): with heartbeats h2 keeps counting the live h1 alive and does not take
  over; without them it does, after one dead time.
* Datagrams crafted by the test and sent to h1's heartbeat port from the client namespace
  (garbage, 60 KB, another key, a host h1 does not serve with, and a real heartbeat of h2
  captured on h1's interface and sent again) are dropped, counted in h1's /metrics and
  logged; nothing changes.
* A change on h1 (``failc web FAIL`` in its faild) at interval 60, with h1's change hints
  off (``-m 0``): h2 hears of it by heartbeat, polls at once, and takes the service over;
  its log shows the heartbeat's announcement before the takeover, long before its next
  regular poll.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from failover import heartbeat, ports
from failover.lab import testbed
from failover.lab.testbed import Testbed, TestbedError, log_tails, wait_until

_why = testbed.available() or (None if shutil.which("nft") else "nft not installed (apt-get install nftables)")
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_why is not None, reason=f"netns test bed: {_why}")]

POLICY = """failsvc web interval {interval}
failsvc web masters {{h1}}
failsvc web slaves {{h2}}
failsvc web start {{return UP}}
failsvc web stop {{return RECOVER}}
"""
HTTP = 8848
CUT = "fo_hbtest"


class Bed:
    def __init__(self, tb: Testbed) -> None:
        self.tb = tb
        self.key = tb.tmpdir / "heartbeat.key"
        heartbeat.write_key(self.key)
        self.faild = {h.name: tb.start_faild(h) for h in tb.hosts}
        self.failsh: dict[str, subprocess.Popen[Any]] = {}

    def start(self, interval: float, keyed: bool = True, args: dict[str, list[str]] | None = None) -> None:
        policy = self.tb.tmpdir / f"web-{time.monotonic_ns()}.tcl"
        policy.write_text(POLICY.format(interval=interval))
        key = ["--heartbeat-key", str(self.key)] if keyed else []
        for h in ("h1", "h2"):
            self.failsh[h] = self.tb.start_failsh(h, policy, args=[*key, *(args or {}).get(h, [])])
        self.wait({"h1": "UP", "h2": "RECOVER"}, 30)

    def states(self) -> dict[str, str | None]:
        return self.tb.service_states("web")

    def wait(self, want: dict[str, str], timeout: float) -> None:
        try:
            wait_until(lambda: self.states() == want, timeout, interval=0.1, what=f"states {want}")
        except TestbedError as e:
            self.fail(str(e))

    def log(self, host: str) -> str:
        path = self.tb.log_path(self.failsh[host])
        return path.read_text(errors="replace") if path else ""

    def fail(self, what: str) -> None:
        paths = [p for p in map(self.tb.log_path, self.failsh.values()) if p]
        pytest.fail(f"{what}\n{log_tails(paths, 40)}")

    def cut_polls(self, frm: str, to: str) -> None:
        """Drop TCP from ``frm`` to ``to``'s faild port, in ``frm``'s namespace: its polls of
        ``to`` get lost (and ``to``'s polls of it still pass, as do the heartbeats)."""
        addr = self.tb.host(to).addr
        self.tb.exec(frm, ["nft", "-f", "-"], input=(
            f"table inet {CUT} {{\n  chain out {{\n    type filter hook output priority 0;\n"
            f"    ip daddr {addr} tcp dport {ports.FAILD} counter drop\n  }}\n}}\n"))

    def heal(self) -> None:
        for h in ("h1", "h2"):
            self.tb.exec(h, ["nft", "delete", "table", "inet", CUT], check=False)

    def metrics(self, host: str) -> str:
        code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{HTTP}/metrics').read().decode())"
        return self.tb.exec(host, [sys.executable, "-c", code]).stdout

    def cleanup(self) -> None:
        self.heal()
        for p in self.failsh.values():
            self.tb.stop(p, timeout=10)
        self.failsh.clear()


@pytest.fixture(scope="module")
def bed_module() -> Iterator[Bed]:
    with Testbed(hosts=["h1", "h2"]) as tb:
        yield Bed(tb)


@pytest.fixture
def bed(bed_module: Bed) -> Iterator[Bed]:
    yield bed_module
    bed_module.cleanup()


@pytest.mark.parametrize("keyed", [True, False], ids=["heartbeats", "polls-only"])
def test_heartbeats_keep_a_peer_alive_while_its_polls_are_dropped(bed: Bed, keyed: bool) -> None:
    interval = 0.1  # dead time 0.25 s: a few lost polls in a row are far more than that
    bed.start(interval, keyed)
    start_line = "heartbeats to and from the peers on udp port 1851" if keyed else "no --heartbeat-key"
    assert start_line in bed.log("h1") and start_line in bed.log("h2")
    bed.cut_polls("h2", "h1")
    t_cut = time.monotonic()
    if keyed:
        time.sleep(30 * interval)
        assert bed.states() == {"h1": "UP", "h2": "RECOVER"}, "h2 took over from a live h1"
        assert "h1 did not answer" not in bed.log("h2")
        counted = bed.tb.exec("h2", ["nft", "list", "table", "inet", CUT]).stdout
        assert "counter packets 0 " not in counted, counted  # the polls were dropped indeed
    else:
        bed.wait({"h1": "UP", "h2": "UP"}, 5)  # split brain: h2 counts the live h1 FAIL
        took = time.monotonic() - t_cut
        assert "h1 did not answer for" in bed.log("h2")
        print(f"\nwithout heartbeats h2 took over {took:.2f} s after its polls were cut")
    bed.heal()
    bed.wait({"h1": "UP", "h2": "RECOVER"}, 10)


_CAPTURE = r"""
import socket, struct, sys, time
# one UDP datagram from SRC to port PORT, as eth0 carries it (AF_PACKET: listen only)
src, port = socket.inet_aton(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(("eth0", 0))
s.settimeout(5)
end = time.monotonic() + 5
while time.monotonic() < end:
    frame = s.recv(65535)
    ip = frame[14:]
    if len(ip) < 28 or ip[9] != 17 or ip[12:16] != src:
        continue
    udp = ip[(ip[0] & 15) * 4:]
    if struct.unpack("!H", udp[2:4])[0] == port:
        print(udp[8:].hex())
        break
"""

_SEND = r"""
import os, socket, sys, time
from pathlib import Path
from failover import heartbeat
from failover.heartbeat import Heartbeat
key = heartbeat.load_key(Path(sys.argv[1]))
to = (sys.argv[2], int(sys.argv[3]))
replayed = bytes.fromhex(sys.argv[4])
beat = Heartbeat("h2", time.time_ns(), 1.7e9, 2.0, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for data in (b"garbage", b"", os.urandom(60000),
             heartbeat.encode(os.urandom(heartbeat.KEY_BYTES), beat),  # forged: another key
             heartbeat.encode(key, Heartbeat("h9", time.time_ns(), 1.7e9, 2.0, 1)),  # a host h1 does not know
             replayed, replayed):
    s.sendto(data, to)
    time.sleep(0.05)
"""


def _sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_forged_and_replayed_heartbeats_are_dropped_and_counted(bed: Bed) -> None:
    bed.start(1.0, args={"h1": ["--http", f"127.0.0.1:{HTTP}"]})
    tb = bed.tb
    h1, h2 = tb.host("h1").addr, tb.host("h2").addr
    captured = tb.exec("h1", [sys.executable, "-c", _CAPTURE, h2, str(ports.HEARTBEAT)], timeout=15).stdout.strip()
    assert captured, "no heartbeat of h2 seen on h1's eth0"
    real = heartbeat.decode(heartbeat.load_key(bed.key), bytes.fromhex(captured))
    assert real.node == "h2" and real.lease is not None
    time.sleep(0.5)  # h2 has sent newer ones since: the captured one is old news
    before = bed.metrics("h1")
    tb.exec("cl", [sys.executable, "-c", _SEND, str(bed.key), h1, str(ports.HEARTBEAT), captured], timeout=15)
    want = {"malformed": 3, "signature": 1, "unknown-host": 1, "replay": 2}

    def counted() -> dict[str, float] | None:
        after = bed.metrics("h1")
        got = {r: _sample(after, "failover_heartbeats_dropped_total", reason=r)
               - _sample(before, "failover_heartbeats_dropped_total", reason=r) for r in want}
        return got if got == want else None
    try:
        wait_until(counted, 5, interval=0.2, what=f"h1 to count the dropped datagrams {want}")
    except TestbedError as e:
        bed.fail(f"{e}: {bed.metrics('h1')}")
    after = bed.metrics("h1")
    assert _sample(after, "failover_heartbeats_received_total", host="h2") > \
        _sample(before, "failover_heartbeats_received_total", host="h2")  # h2's own ones still count
    log = bed.log("h1")
    client = tb.client.addr
    assert f"dropped a heartbeat from {client}" in log
    assert log.count(f"dropped a heartbeat from {client}") == 1, "not rate-limited"  # one line per 10 s and sender
    assert all(p.poll() is None for p in bed.failsh.values())
    assert bed.states() == {"h1": "UP", "h2": "RECOVER"}
    assert "did not answer" not in log + bed.log("h2")


def test_a_change_announced_by_heartbeat_is_polled_at_once(bed: Bed) -> None:
    """Interval 60: h2's next regular poll of h1 is a minute after its first, and h1 sends no
    change hints (-m 0); only a heartbeat can tell h2 of h1's change in time."""
    bed.start(60, args={"h1": ["-m", "0"], "h2": ["-d", "peers"]})
    mark = len(bed.log("h2"))
    t0 = time.monotonic()
    r = bed.tb.exec("h1", [sys.executable, "-m", "failover.cli.failc", "-h", "127.0.0.1", "-m", "test", "web", "FAIL"])
    assert r.returncode == 0, r.stderr
    bed.wait({"h1": "FAIL", "h2": "UP"}, 30)
    took = time.monotonic() - t0
    log = bed.log("h2")[mark:]
    announced = log.find("h1's heartbeat announces a change")
    takeover = log.find("web: RECOVER -> UP")
    assert 0 <= announced < takeover, log
    assert "master h1" in log[takeover:].splitlines()[0]
    print(f"\nh2 took over {took:.2f} s after failc on h1 (interval 60 s, no change hints)")

