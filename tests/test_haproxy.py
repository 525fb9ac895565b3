"""A real HAProxy in front of two hosts follows the service's holder through failsh's
``/health/SERVICE`` (docs/operations.md, "Load balancers"), also across a failover.

Namespaces: h1 (master) and h2 (slave) run faild, failsh with ``--http`` and a vipserver
(it answers every connection with its host name, on both hosts all the time: only the
health check decides); lb runs HAProxy (tcp mode, an HTTP check of ``/health/web`` on
failsh's port every 100 ms); the client namespace connects to lb every 10 ms.  Every reply
must come from a host that held the service at most one check period (plus a margin)
before: a load balancer never sends clients to the host that does not hold it.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time

import pytest

from failover.lab import testbed
from failover.lab.testbed import Testbed, TestbedError, log_tails, wait_until
from failover.lab.vipclient import Tail

_reason = testbed.available() or (None if shutil.which("haproxy") else
                                  "haproxy not installed (apt-get install haproxy)")
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_reason is not None, reason=f"netns test bed: {_reason}")]

HTTP_PORT, LB_PORT = 8081, 8080
CHECK_MS = 100
TOLERANCE = 1.0  # s: a health check notices (CHECK_MS) plus failsh's own publication (every second at most)
POLICY = """
failsvc web interval 0.5
failsvc web masters {h1}
failsvc web slaves {h2}
failsvc web start {return UP}
failsvc web stop {return RECOVER}
"""


def haproxy_conf(tb: Testbed) -> str:
    servers = "\n".join(f"  server {h} {tb.host(h).addr}:18080 check port {HTTP_PORT}" for h in ("h1", "h2"))
    return f"""
global
  maxconn 2000
defaults
  mode tcp
  timeout connect 300ms
  timeout client 2s
  timeout server 2s
frontend web
  bind {tb.host("lb").addr}:{LB_PORT}
  default_backend servers
backend servers
  option httpchk GET /health/web
  http-check expect status 200
  default-server inter {CHECK_MS}ms fall 1 rise 1
{servers}
"""


class Holders(threading.Thread):
    """Which host holds web (UP in its faild, with a failsh lease), sampled until stopped."""

    def __init__(self, tb: Testbed) -> None:
        super().__init__(daemon=True)
        self.tb = tb
        self.samples: list[tuple[float, str | None]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        for _ in range(3000):  # bounded: a few minutes at most
            if self.halt.is_set():
                return
            t = time.monotonic()
            try:
                recs = self.tb.failstat(["h1", "h2"], timeout=0.3)
            except TestbedError:
                continue
            up = [h for h, r in recs.items()
                  if r.get("lease") is not None and any(s["name"] == "web" and s["state"] == "UP"
                                                       for s in r.get("services", []))]
            self.samples.append((t, up[0] if len(up) == 1 else None))

    def held_by(self, host: str, t: float) -> bool:
        """``host`` held web at some sample in [t - TOLERANCE, t]."""
        return any(h == host and t - TOLERANCE - 0.3 <= ts <= t for ts, h in self.samples)


def test_haproxy_sends_clients_to_the_holder_across_a_failover() -> None:
    with Testbed(hosts=["h1", "h2", "lb"]) as tb:
        policy = tb.tmpdir / "web.tcl"
        policy.write_text(POLICY)
        procs = {}
        try:
            for h in ("h1", "h2"):
                tb.start_faild(h)
                tb.start_vipserver(h)
            procs["h1"] = tb.start_failsh("h1", policy, args=["--http", f"0.0.0.0:{HTTP_PORT}"])
            wait_until(lambda: tb.service_states("web", ["h1"]) == {"h1": "UP"}, 20, what="h1 UP")
            procs["h2"] = tb.start_failsh("h2", policy, args=["--http", f"0.0.0.0:{HTTP_PORT}"])
            wait_until(lambda: tb.service_states("web", ["h1", "h2"]) == {"h1": "UP", "h2": "RECOVER"}, 20,
                       what="h2 waiting")
            conf = tb.tmpdir / "haproxy.cfg"
            conf.write_text(haproxy_conf(tb))
            tb.run("lb", ["haproxy", "-db", "-f", str(conf)], log_name="haproxy")
            _, out = tb.start_vipclient(addr=tb.host("lb").addr, port=LB_PORT, duration=120)
            tail = Tail(out)
            wait_until(lambda: any(r.ok and r.host == "h1" for r in tail.poll()), 20, what="served through HAProxy")
            holders = Holders(tb)
            holders.start()
            time.sleep(2)
            t_fault = time.monotonic()
            tb.signal(procs["h1"], signal.SIGKILL)  # the master's failsh dies; its service keeps running
            wait_until(lambda: any(r.ok and r.host == "h2" and r.t1 > t_fault for r in tail.poll()), 20,
                       what="h2 serving through HAProxy")
            time.sleep(2)
            t_back = time.monotonic()
            procs["h1"] = tb.start_failsh("h1", policy, args=["--http", f"0.0.0.0:{HTTP_PORT}"])
            wait_until(lambda: any(r.ok and r.host == "h1" and r.t1 > t_back for r in tail.poll()), 30,
                       what="h1 serving again after the handback")
            time.sleep(2)
            holders.halt.set()
            holders.join(10)
            tail.poll()
        except TestbedError as e:
            pytest.fail(f"{e}\n{log_tails([p for p in map(tb.log_path, procs.values()) if p])}")
    start = holders.samples[0][0] + TOLERANCE + 0.3
    checked = [r for r in tail.results if r.ok and start <= r.t1 <= holders.samples[-1][0]]
    wrong = [r for r in checked if not holders.held_by(r.host or "", r.t1)]
    print(f"\n{len(checked)} replies through HAProxy checked against {len(holders.samples)} holder samples; "
          f"{len(wrong)} from a host that did not hold web")
    assert len(checked) > 300
    assert {r.host for r in checked} == {"h1", "h2"}
    assert not wrong, [(round(r.t1 - start, 2), r.host) for r in wrong[:10]]
