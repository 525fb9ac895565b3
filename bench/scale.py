"""failsh at scale: CPU, memory and reaction time for many services and peers.

One local faild and failsh (node ``loc``) and ``P`` peer failds on 127.0.0.1 (``p1`` ..
``pP``, free ports, ``-P`` entries: no failsh runs there; this bench holds each peer's
lease and sets its records).  Every service ``sN`` has master ``p1`` and slaves ``p2`` ..
``pP``; ``p1`` holds them all UP, so the local failsh waits in RECOVER, polling every peer
at the services' interval.  For each services x peers x interval it prints:

* CPU: failsh (and its main thread, which runs Tcl and the service runs), the local
  faild and all peer failds together, as a share of one core (utime + stime from
  /proc/PID/stat over ``--seconds``, nothing else done meanwhile);
* RSS of failsh;
* reaction: from setting ``p1``'s record of one service to FAIL (as failc would) to the
  local failsh's start procedure running (it notes the time: "acted"), and to the local
  faild showing it UP ("written": after the transition's observers, the monitor
  snapshot among them); then the record is set UP again and the handback awaited.
  The bench also sends p1's change hint, as p1's failsh would after a change of its
  own (``failhost p1 monitor PORT``): failsh polls p1 at once, so the reaction is one
  round trip plus the run; ``--no-hints``: at the next poll (up to one interval).

    .venv-test/bin/python bench/scale.py --services 250 --peers 1,8 --interval 1,0.1 --seconds 20
    .venv-test/bin/python bench/scale.py --services 250 --peers 8 --interval 0.1 --profile /tmp/failsh.prof

``--profile FILE`` runs failsh under cProfile, timing the CPU time of its Tcl thread,
over the measuring window only (one combination; the figures then include the
profiler's overhead), and writes the statistics to FILE.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq

from failover.client import Client, ClientError
from failover.lab.loopback import free_port
from failover.observe import feed
from failover.states import State

TICKS = os.sysconf("SC_CLK_TCK")
# failsh with a profiler of its main (Tcl) thread's CPU time: SIGUSR1 starts it, SIGUSR2 writes FILE
PROFILED = """import cProfile, runpy, signal, sys, time
prof, out = cProfile.Profile(time.thread_time), sys.argv.pop(1)
signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
signal.signal(signal.SIGUSR2, lambda *_: (prof.disable(), prof.dump_stats(out)))
sys.argv[0] = "failsh"
runpy.run_module("failover.cli.failsh", run_name="__main__")
"""
POLICY = """proc up {{svc}} {{
    set f [open {started} a]; puts $f "$svc [clock microseconds]"; close $f
    return UP
}}
proc down args {{return RECOVER}}
for {{set i 0}} {{$i < {services}}} {{incr i}} {{
    failsvc s$i interval {interval}
    failsvc s$i masters {{p1}}
    failsvc s$i slaves {{{slaves}}}
    failsvc s$i start [list up s$i]
    failsvc s$i stop down
}}
failhost p1 monitor {hint_port}
"""


def cpu_seconds(pid: int, task: int | None = None) -> float:
    """utime + stime of a process (or of one of its threads), in seconds."""
    path = f"/proc/{pid}/task/{task}/stat" if task is not None else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Procs:
    """The processes of one combination; every one is killed on exit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        with open(self.directory / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env={**os.environ, "FO_NODE": name})
        self.procs.append(proc)
        return proc

    def faild(self, name: str) -> tuple[subprocess.Popen[bytes], Client]:
        port = free_port()
        proc = self.spawn(name, [sys.executable, "-m", "failover.cli.faild", "-F", "-l", "127.0.0.1", "-p", str(port),
                                 "-s", str(self.directory / f"{name}.state"),
                                 "-r", str(self.directory / f"{name}.pid"), "-N", name])
        client = Client(f"tcp://127.0.0.1:{port}", timeout=1.0, retries=2)
        wait(lambda: _pings(client), 10, f"faild {name}")
        return proc, client

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _pings(client: Client) -> bool:
    try:
        client.ping()
        return True
    except ClientError:
        return False


def wait(predicate: object, timeout: float, what: str, period: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(period)


@contextmanager
def cluster(services: int, peers: int, interval: float, profile: str | None, feed_on: bool) -> Iterator[dict]:
    with tempfile.TemporaryDirectory(prefix="fo-scale-") as tmp:
        procs = Procs(Path(tmp))
        hints = zmq.Context.instance().socket(zmq.PUB)  # p1's failsh feed, for its change hints
        hint_port = hints.bind_to_random_port("tcp://127.0.0.1")
        try:
            c = setup(procs, Path(tmp), services, peers, interval, profile, hint_port, feed_on)
            c["hints"] = hints
            yield c
        finally:
            procs.close()
            hints.close(linger=0)


def setup(procs: Procs, tmp: Path, services: int, peers: int, interval: float, profile: str | None,
          hint_port: int, feed_on: bool) -> dict:
    local, local_client = procs.faild("loc")
    names = [f"p{i}" for i in range(1, peers + 1)]
    clients = {}
    for name in names:
        _, clients[name] = procs.faild(name)
        clients[name].call("lease", ttl=3600)  # as if a failsh ran there
        for i in range(services):
            clients[name].set(f"s{i}", State.UP if name == "p1" else State.RECOVER, "bench")
    policy = tmp / "policy.tcl"
    policy.write_text(POLICY.format(services=services, interval=interval, slaves=" ".join(names[1:]),
                                    hint_port=hint_port, started=tmp / "started"))
    cmd = [sys.executable] + (["-c", PROFILED, profile] if profile else ["-m", "failover.cli.failsh"]) + [
        "-F", "-N", "loc", "-f", str(policy),
        "--faild", f"127.0.0.1:{local_client.endpoint.rpartition(':')[2]}",
        "-m", str(free_port() if feed_on else 0), "--monitor-listen", "127.0.0.1", "-D", "0",
        "-i", str(tmp / "failsh.pid"), "-l", str(tmp / "failsh.dump")]
    for name in names:
        cmd += ["-P", f"{name}={clients[name].endpoint.removeprefix('tcp://')}"]
    failsh = procs.spawn("failsh", cmd)

    def adopted() -> bool:
        if failsh.poll() is not None:
            raise SystemExit(f"failsh exited: {(tmp / 'failsh.log').read_text()[-2000:]}")
        try:
            host, records = local_client.list()
        except ClientError:
            return False
        return host.lease is not None and len(records) >= services
    wait(adopted, 60 + services * 0.05, "failsh to adopt every service and take its lease")
    time.sleep(2 + 3 * interval)  # every service ran, the start-up is over
    return {"failsh": failsh, "local": local, "local_client": local_client, "clients": clients,
            "peers": [p for p in procs.procs if p not in (failsh, local)], "started": tmp / "started"}


def measure_cpu(c: dict, seconds: float, profile: bool) -> dict[str, float]:
    pids = {"failsh": [c["failsh"].pid], "faild": [c["local"].pid], "peers": [p.pid for p in c["peers"]]}
    before = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
    tcl_before = cpu_seconds(c["failsh"].pid, c["failsh"].pid)  # its main thread runs Tcl and the runs
    t0 = time.monotonic()
    if profile:
        c["failsh"].send_signal(signal.SIGUSR1)
    time.sleep(seconds)
    if profile:
        c["failsh"].send_signal(signal.SIGUSR2)
    elapsed = time.monotonic() - t0
    out = {k: 100 * (sum(cpu_seconds(p) for p in v) - before[k]) / elapsed for k, v in pids.items()}
    out["tcl"] = 100 * (cpu_seconds(c["failsh"].pid, c["failsh"].pid) - tcl_before) / elapsed
    out["rss"] = rss_mb(c["failsh"].pid)
    out["faild_rss"] = rss_mb(c["local"].pid)
    return out


def measure_reaction(c: dict, services: int, interval: float, trials: int, hint: bool) -> list[tuple[float, float]]:
    """(acted, written) seconds after the master's record changed, per trial."""
    p1: Client = c["clients"]["p1"]
    local: Client = c["local_client"]
    times = []
    for k in range(trials):
        svc = f"s{(k * 7919) % services}"
        time.sleep(random.uniform(0, interval))  # a random phase of the poll
        t0, w0 = time.monotonic(), time.time()
        p1.set(svc, State.FAIL, "bench: master down")
        half = (time.monotonic() - t0) / 2  # the change happened within the set's round trip
        if hint:
            c["hints"].send(feed.encode_change("p1"))
        wait(lambda svc=svc: local.get(svc).state is State.UP, 10 + 5 * interval, f"{svc} UP here", period=0.002)
        written = time.monotonic() - t0 - half
        lines = c["started"].read_text().split("\n")
        acted = max(int(line.split()[1]) for line in lines if line.startswith(f"{svc} ")) / 1e6 - w0 - half
        times.append((acted, written))
        p1.set(svc, State.UP, "bench: master back")
        if hint:
            c["hints"].send(feed.encode_change("p1"))
        wait(lambda svc=svc: local.get(svc).state is State.RECOVER, 10 + 5 * interval, f"{svc} handed back",
             period=0.01)
    return times


def parse_list(text: str, kind: type) -> list:
    return [kind(x) for x in text.split(",") if x]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", default="250", help="comma-separated service counts (default 250)")
    ap.add_argument("--peers", default="1,8", help="comma-separated peer counts (default 1,8)")
    ap.add_argument("--interval", default="1,0.1", help="comma-separated service intervals, s (default 1,0.1)")
    ap.add_argument("--seconds", type=float, default=20.0, help="CPU measuring window (default 20)")
    ap.add_argument("--trials", type=int, default=5, help="reaction trials per combination (default 5)")
    ap.add_argument("--no-hints", action="store_true", help="no change hint from p1: failsh sees a change "
                    "at its next poll")
    ap.add_argument("--no-feed", action="store_true", help="failsh -m 0: no failmon feed (no snapshot a second)")
    ap.add_argument("--profile", metavar="FILE", help="run failsh under cProfile, statistics to FILE")
    args = ap.parse_args()
    combos = [(s, p, i) for s in parse_list(args.services, int) for p in parse_list(args.peers, int)
              for i in parse_list(args.interval, float)]
    if args.profile and len(combos) != 1:
        ap.error("--profile needs exactly one combination")
    print(f"{'services':>8} {'peers':>5} {'interval':>8} {'failsh%':>8} {'(tcl%)':>7} {'faild%':>7} {'peers%':>7} "
          f"{'RSS MB':>7} {'acted ms med/max':>16} {'written ms med/max':>18}", flush=True)
    for services, peers, interval in combos:
        with cluster(services, peers, interval, args.profile, not args.no_feed) as c:
            cpu = measure_cpu(c, args.seconds, bool(args.profile))
            react = [(float("nan"), float("nan"))]
            if args.trials:
                react = measure_reaction(c, services, interval, args.trials, not args.no_hints)
        acted, written = (f"{1000 * statistics.median(x):.0f} / {1000 * max(x):.0f}" for x in zip(*react, strict=True))
        print(f"{services:>8} {peers:>5} {interval:>8g} {cpu['failsh']:>8.1f} {cpu['tcl']:>7.1f} {cpu['faild']:>7.1f} "
              f"{cpu['peers']:>7.1f} {cpu['rss']:>7.1f} {acted:>16} {written:>18}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
