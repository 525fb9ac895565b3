#!/usr/bin/env python3
"""Failover time: from a fault on the master to the client being served by the backup.

Run as root with the project's virtualenv:  .venv/bin/python bench/failover_time.py [--quick]

One network-namespace test bed (failover.lab.testbed) for the whole run: hosts h1 (master) and
h2 (backup) each run vipserver (answers with its node name on 0.0.0.0:18080), and a client
namespace runs vipclient against the VIP, opening a connection every 10 ms (200 ms timeout)
and logging which host answered.  Each contender manages the VIP in turn:

* failover: faild + failsh on each host with the samples/ipfailover-linux policy
  (ip addr add/del + gratuitous ARP), service interval 1 s ("default"), 0.1 s ("fast") or
  0.02 s ("20ms"); in the profiles below 1 s failsh also sends heartbeats (failsh
  --heartbeat-key, a key made for the run), as a fast interval on a real network needs;
* failover-etcd (the arbitrated profile): the same at 1 s, with the service under the etcd
  arbiter (docs/arbiter.md: ``failarbiter etcd ... -ttl 3``, ``failsvc ip arbiter etcd``),
  one etcd member in the client namespace;
* keepalived: VRRPv3 on the same bridge (multicast; the contender "keepalived-unicast" uses
  unicast), priorities 150/100, preemption on, advert_int = the profile's interval (1 s,
  0.1 s, 0.02 s).

Per fault kind and trial: wait until the master alone holds the VIP and every reply of the
last second came from it; wait a random fraction of one interval (so the fault lands at a
random phase of the heartbeat; --seed); inject the fault on the master.  The **takeover
time** is from the fault to the first reply the client gets from the backup.  The **outage** is the longest
stretch in that interval without any successful reply (after kill -9 or SIGSTOP the old
master still holds the VIP and its vipserver still answers, so the outage can be ~0 while the
takeover takes seconds).  Then the fault is undone and the master must take the VIP back and
serve alone within 15 s + 20 intervals (the **restore** column); if not, the trial's takeover
still counts, the handback is reported as not done, and the contender is restarted cleanly.

Fault kinds (on the master): kill -9 of failsh, kill -9 of faild, SIGSTOP (of every HA
daemon on the host), link down (the switch port; the host loses carrier), graceful stop
(SIGTERM).  keepalived has one daemon, so both kill -9 kinds map to kill -9 of keepalived
(its whole process group: the parent and the VRRP child).

Printed: median and p99 (nearest rank, so with fewer than 100 trials it is the maximum) per
contender, profile and fault kind, then the tracked figure failover/keepalived per fault
kind.  --json FILE writes every trial.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from failover import heartbeat
from failover.lab import etcdbed
from failover.lab.testbed import FAULTS, FailoverHosts, Testbed, TestbedError, available, log_tails, wait_until
from failover.lab.vipclient import Tail, first_ok, longest_gap

FAULT_KINDS = FAULTS
PROFILES = {"default": 1.0, "fast": 0.1, "20ms": 0.02}
HEARTBEATS_BELOW = 1.0  # s: failsh runs with --heartbeat-key at intervals below this (the fast profiles)
# failsh --dead-factor per profile (default 2.5): with heartbeats vouching for a peer ten times
# per dead time, 0.1 s runs at 1.5 (docs/tuning.md; bench/soak.py measures that it holds at 5 % loss)
DEAD_FACTORS = {"fast": 1.5}
CLIENT_INTERVAL_MS = 10.0
CLIENT_TIMEOUT_MS = 200.0
STABLE = 1.0  # seconds of replies only from the master before a fault is injected
RESTORE_LIMIT = 15.0  # + 20 intervals: the handback must be complete by then, else reset
REPO = Path(__file__).resolve().parent.parent


# ----- contenders ----------------------------------------------------------------------------

class Contender:
    """One HA implementation on the test bed.  The runner only calls these methods.

    `faults` maps each tracked fault kind to this contender's own fault name (the same fault
    may serve several kinds, as keepalived's kill -9 does).  h1 is the master, h2 the backup.
    """

    name = "?"
    faults: dict[str, str] = {}
    master = "h1"
    backup = "h2"

    def __init__(self, tb: Testbed, interval: float) -> None:
        self.tb = tb
        self.interval = interval

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this contender cannot run here, or None."""
        return None

    def start(self) -> None:
        """Start the HA daemons on both hosts; the runner then waits for the master to serve."""
        raise NotImplementedError

    def inject(self, fault: str) -> None:
        """Apply `fault` (a value of `faults`) to the master, and return at once."""
        raise NotImplementedError

    def restore(self, fault: str) -> None:
        """Undo `fault` so the master can take the VIP back (the runner waits for that)."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Extra readiness beyond "the master alone holds the VIP and serves"."""
        return True

    def stop(self) -> None:
        """Stop everything this contender started and remove the VIP everywhere."""
        raise NotImplementedError

    def logs(self) -> list[Path]:
        """Log files worth showing when a trial fails."""
        return []


class Keepalived(Contender):
    name = "keepalived"
    faults = {"kill9-failsh": "kill9", "kill9-faild": "kill9", "sigstop": "sigstop",
              "linkdown": "linkdown", "graceful": "graceful"}
    unicast = False

    def __init__(self, tb: Testbed, interval: float) -> None:
        super().__init__(tb, interval)
        self.procs: dict[str, subprocess.Popen[Any]] = {}

    @classmethod
    def unavailable(cls) -> str | None:
        return None if shutil.which("keepalived") else "keepalived not installed (apt-get install keepalived)"

    def _start(self, host: str) -> None:
        self.procs[host] = self.tb.start_keepalived(host, priority=150 if host == self.master else 100,
                                                    advert_int=self.interval, unicast=self.unicast)

    def start(self) -> None:
        for h in (self.master, self.backup):
            self._start(h)

    def inject(self, fault: str) -> None:
        p = self.procs[self.master]
        if fault == "kill9":
            self.tb.signal(p, signal.SIGKILL)  # parent and VRRP child together, as a crash would
        elif fault == "sigstop":
            self.tb.signal(p, signal.SIGSTOP)
        elif fault == "linkdown":
            self.tb.link_down(self.master)
        elif fault == "graceful":
            self.tb.signal(p, signal.SIGTERM, group=False)  # like systemctl stop: the main pid
        else:
            raise ValueError(fault)

    def restore(self, fault: str) -> None:
        p = self.procs[self.master]
        if fault in ("kill9", "graceful"):
            self.tb.stop(p, timeout=5)
            self.tb.vip_del(self.master)  # left behind by kill -9; keepalived removes it too
            self._start(self.master)
        elif fault == "sigstop":
            self.tb.signal(p, signal.SIGCONT)
        elif fault == "linkdown":
            self.tb.link_up(self.master)

    def stop(self) -> None:
        for p in self.procs.values():
            self.tb.stop(p, timeout=5)
        for h in (self.master, self.backup):
            self.tb.link_up(h)
            self.tb.vip_del(h)

    def logs(self) -> list[Path]:
        return [p for p in (self.tb.log_path(x) for x in self.procs.values()) if p]


class KeepalivedUnicast(Keepalived):
    name = "keepalived-unicast"
    unicast = True


class Failover(Contender):
    """faild + failsh per host running samples/ipfailover-linux (fo::ipup = ip addr add +
    gratuitous ARP from failover.announce, fo::ipdown = ip addr del) with master h1 and slave h2, started and faulted by
    the test bed's FailoverHosts, as tests/test_samples.py does."""

    name = "failover"
    faults = {k: k for k in FAULT_KINDS}
    template = REPO / "samples" / "ipfailover-linux" / "failover.tcl.in"

    def __init__(self, tb: Testbed, interval: float) -> None:
        super().__init__(tb, interval)
        tag = f"failover-{interval:g}"
        self.policy = tb.tmpdir / tag / "ipfailover.tcl"
        self.policy.parent.mkdir(exist_ok=True)
        args = []
        if interval < HEARTBEATS_BELOW:  # liveness that does not ride on the polls (docs/tuning.md)
            key = tb.tmpdir / "heartbeat.key"
            if not key.exists():
                heartbeat.write_key(key)
            args = ["--heartbeat-key", str(key)]
        factor = DEAD_FACTORS.get(next((p for p, i in PROFILES.items() if i == interval), ""))
        if factor:
            args += ["--dead-factor", f"{factor:g}"]
        self.hosts = _Hosts(tb, {self.master: self.policy, self.backup: self.policy}, tag=tag, failsh_args=args)

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            import failover.cli.failsh  # noqa: F401
        except ImportError as e:
            return f"failsh not importable yet: {e}"
        if not cls.template.exists():
            return f"{cls.template} missing"
        return None

    def start(self) -> None:
        text = self.template.read_text()
        for k, v in {"@VIPS@": self.tb.vip_cidr, "@DEV@": "eth0", "@INTERVAL@": f"{self.interval:g}",
                     "@MASTER@": self.master, "@SLAVE@": self.backup}.items():
            text = text.replace(k, v)
        # the trials move the service back and forth far more often than flap protection allows
        # (6 holder changes in 5 min): it would hold it on the backup and fail the handbacks
        self.policy.write_text(text + "failsvc ip flap off\n" + self.policy_tail())
        self.hosts.start()

    def policy_tail(self) -> str:
        """More policy, after the sample's."""
        return ""

    def inject(self, fault: str) -> None:
        self.hosts.inject(self.master, fault)

    def restore(self, fault: str) -> None:
        self.hosts.restore(self.master, fault)

    def stop(self) -> None:
        self.hosts.stop()
        for h in (self.master, self.backup):
            self.tb.link_up(h)
            self.tb.vip_del(h)

    def logs(self) -> list[Path]:
        return self.hosts.logs()


class _Hosts(FailoverHosts):
    """FailoverHosts whose failsh get extra arguments (the heartbeat key)."""

    def __init__(self, tb: Testbed, policies: dict[str, Path], *, tag: str, failsh_args: list[str]) -> None:
        super().__init__(tb, policies, tag=tag)
        self.failsh_args = failsh_args

    def start_failsh(self, host: str) -> None:
        self.failsh[host] = self.tb.start_failsh(host, self.policies[host], env=self.env, tag=self.tag,
                                                 args=self.failsh_args)




class FailoverArbitrated(Failover):
    """The arbitrated profile: Failover with the service under the etcd arbiter, ttl ARBITER_TTL
    (one etcd member in the client namespace, reachable from both hosts)."""

    name = "failover-etcd"

    @classmethod
    def unavailable(cls) -> str | None:
        return etcdbed.available() or super().unavailable()

    def start(self) -> None:
        self.etcd = etcdbed.EtcdCluster(self.tb, [self.tb.client.name]).start()
        super().start()

    def policy_tail(self) -> str:
        return f"failarbiter etcd {self.etcd.endpoints[0]} -ttl {ARBITER_TTL:g}\nfailsvc ip arbiter etcd\n"

    def stop(self) -> None:
        super().stop()
        self.etcd.stop()


ARBITER_TTL = 3.0
CONTENDERS: dict[str, type[Contender]] = {c.name: c for c in (Failover, FailoverArbitrated, Keepalived,
                                                              KeepalivedUnicast)}


# ----- measuring -----------------------------------------------------------------------------

@attrs.define
class Trial:
    contender: str
    profile: str
    interval: float
    fault: str  # the contender's own fault name
    takeover: float | None = None  # fault -> first reply from the backup (s)
    outage: float | None = None  # longest gap without a successful reply in that time (s)
    restore: float | None = None  # undo -> master alone serving again, incl. STABLE (s)
    error: str | None = None  # no takeover within the limit
    restore_error: str | None = None  # no clean handback within the limit (contender was reset)


def wait_master_serving(tb: Testbed, tail: Tail, c: Contender, timeout: float) -> None:
    """Until the master alone holds the VIP and every reply of the last STABLE s is its."""
    per_window = STABLE * 1000 / CLIENT_INTERVAL_MS

    def good() -> bool:
        if tb.vip_holders() != [c.master] or not c.ready():
            return False
        now = time.monotonic()
        recent = tail.since(now - STABLE)
        return len(recent) >= per_window / 2 and all(r.ok and r.host == c.master for r in recent)

    wait_until(good, timeout, interval=0.05, what=f"{c.name}: {c.master} alone serving the VIP")


def run_trial(tb: Testbed, tail: Tail, c: Contender, profile: str, fault: str, rng: random.Random) -> Trial:
    trial = Trial(c.name, profile, c.interval, fault)
    # A fault at a random phase of the heartbeat: the waits above end in step with the
    # protocol's own timers, which would otherwise put every fault at the same phase.
    time.sleep(rng.uniform(0, c.interval))
    t_fault = time.monotonic()
    c.inject(fault)
    try:
        r = wait_until(lambda: first_ok(tail.since(t_fault), t_fault, exclude=c.master),
                       10 + 20 * c.interval, interval=0.01, what=f"{c.backup} serving after {fault}")
        trial.takeover = r.t1 - t_fault
        trial.outage = longest_gap(tail.since(t_fault), t_fault, r.t1)
    except TestbedError as e:
        trial.error = str(e)
    t_restore = time.monotonic()
    c.restore(fault)
    try:
        # Generous for a handback, but bounded: a client stuck on a stale ARP entry takes 30-50 s,
        # and resetting the contender is cheaper than waiting that out every trial.
        wait_master_serving(tb, tail, c, RESTORE_LIMIT + 20 * c.interval)
        trial.restore = time.monotonic() - t_restore
    except TestbedError as e:
        trial.restore_error = str(e)
    return trial


def _show_logs(c: Contender) -> None:
    print(log_tails(c.logs(), 15), flush=True)


def measure(tb: Testbed, tail: Tail, cls: type[Contender], profile: str, trials: int,
            faults: list[str], verbose: bool, rng: random.Random) -> list[Trial]:
    """All trials of one contender at one profile; a contender that cannot recover is reset."""
    c = cls(tb, PROFILES[profile])
    own = list(dict.fromkeys(c.faults[k] for k in faults if k in c.faults))
    out: list[Trial] = []
    c.start()
    try:
        wait_master_serving(tb, tail, c, 30 + 20 * c.interval)
        for fault in own:
            for i in range(trials):
                t = run_trial(tb, tail, c, profile, fault, rng)
                out.append(t)
                if verbose or t.error or t.restore_error:
                    print(f"  {c.name:<10} {profile:<7} {fault:<13} #{i + 1}: takeover {_fmt(t.takeover)} "
                          f"outage {_fmt(t.outage)} restore {_fmt(t.restore)}"
                          + (f"  ERROR {t.error}" if t.error else "")
                          + (f"  RESTORE FAILED ({t.restore_error}); resetting {c.name}" if t.restore_error else ""),
                          flush=True)
                if t.restore_error:  # start over from a clean state
                    if verbose:
                        _show_logs(c)
                    c.stop()
                    c = cls(tb, PROFILES[profile])
                    c.start()
                    wait_master_serving(tb, tail, c, 30 + 20 * c.interval)
    except TestbedError as e:
        print(f"  {c.name} {profile}: giving up: {e}", flush=True)
        _show_logs(c)
    finally:
        c.stop()
    return out


# ----- reporting -----------------------------------------------------------------------------

def p99(xs: list[float]) -> float:
    """Nearest-rank 99th percentile (the maximum for fewer than 100 samples)."""
    s = sorted(xs)
    return s[max(0, math.ceil(0.99 * len(s)) - 1)]


def _fmt(x: float | None) -> str:
    return f"{'-':>7}" if x is None else f"{x:7.3f}"


def summarize(trials: list[Trial]) -> dict[tuple[str, str, str], dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.contender, t.profile, t.fault), []).append(t)
    summary = {}
    for key, ts in groups.items():
        tk = [t.takeover for t in ts if t.takeover is not None]
        og = [t.outage for t in ts if t.outage is not None]
        rs = [t.restore for t in ts if t.restore is not None]
        summary[key] = {
            "n": len(tk), "failed": len(ts) - len(tk),
            "median": statistics.median(tk) if tk else None, "p99": p99(tk) if tk else None,
            "outage_median": statistics.median(og) if og else None, "outage_p99": p99(og) if og else None,
            "restore_median": statistics.median(rs) if rs else None,
            "restore_p99": p99(rs) if rs else None,
            "restore_failed": sum(t.restore_error is not None for t in ts),
        }
    return summary


def report(summary: dict[tuple[str, str, str], dict[str, Any]], contenders: list[type[Contender]],
           profiles: list[str], faults: list[str]) -> None:
    print("\ntakeover = fault on the master -> first reply from the backup; outage = longest time "
          "without any reply in it;\nrestore = fault undone -> master alone serving for 1 s (seconds; "
          "p99 is nearest-rank, i.e. the maximum below 100 trials)")
    print(f"{'contender':<19} {'profile':<13} {'fault':<13} {'n':>3} {'median':>7} {'p99':>7} "
          f"{'outage':>7} {'(p99)':>7} {'restore':>7} {'(p99)':>7}")
    for cls in contenders:
        for prof in profiles:
            seen = []
            for k in faults:
                f = cls.faults.get(k)
                if f is None or f in seen or (cls.name, prof, f) not in summary:
                    continue
                seen.append(f)
                s = summary[(cls.name, prof, f)]
                notes = []
                if s["failed"]:
                    notes.append(f"{s['failed']} without takeover")
                if s["restore_failed"]:
                    notes.append(f"{s['restore_failed']} handbacks not done within the limit")
                label = f"{prof} ({PROFILES[prof]:g} s)"
                print(f"{cls.name:<19} {label:<13} {f:<13} {s['n']:>3} {_fmt(s['median'])} {_fmt(s['p99'])} "
                      f"{_fmt(s['outage_median'])} {_fmt(s['outage_p99'])} {_fmt(s['restore_median'])} "
                      f"{_fmt(s['restore_p99'])}" + (f"  ({'; '.join(notes)})" if notes else ""))
    base = next((c for c in contenders if not issubclass(c, Failover)), None)
    if Failover not in contenders or base is None:
        return
    print(f"\ntracked figure: failover / {base.name}, median takeover per fault kind (seconds)")
    print(f"{'fault kind':<13}" + "".join(f" {p + ' (' + format(PROFILES[p], 'g') + ' s)':>24}" for p in profiles))
    for k in faults:
        cells = []
        for prof in profiles:
            a = summary.get((Failover.name, prof, Failover.faults[k]))
            b = summary.get((base.name, prof, base.faults[k]))
            if a and b and a["median"] and b["median"]:
                cells.append(f"{a['median']:.3f}/{b['median']:.3f} = {a['median'] / b['median']:.2f}")
            else:
                cells.append("-")
        print(f"{k:<13}" + "".join(f" {c:>24}" for c in cells))


# ----- main ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 trials per fault (development)")
    ap.add_argument("--trials", type=int, help="trials per fault kind (default 10, --quick 3)")
    ap.add_argument("--profiles", default="default,fast", help="comma list of: " + ", ".join(PROFILES))
    ap.add_argument("--contenders", default="failover,keepalived",
                    help="comma list of: " + ", ".join(CONTENDERS))
    ap.add_argument("--faults", default=",".join(FAULT_KINDS), help="comma list of: " + ", ".join(FAULT_KINDS))
    ap.add_argument("--json", type=Path, help="write every trial and the summary here")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the test bed's temp dir (logs)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random fault phase")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every trial")
    args = ap.parse_args(argv)
    trials = args.trials or (3 if args.quick else 10)
    if not 1 <= trials <= 1000:
        ap.error("--trials must be 1..1000")
    profiles = [p for p in args.profiles.split(",") if p]
    faults = [f for f in args.faults.split(",") if f]
    names = [n for n in args.contenders.split(",") if n]
    for bad in [p for p in profiles if p not in PROFILES] + [f for f in faults if f not in FAULT_KINDS] + \
            [n for n in names if n not in CONTENDERS]:
        ap.error(f"unknown {bad!r}")
    reason = available()
    if reason:
        print(f"failover_time: cannot build the test bed: {reason}", file=sys.stderr)
        return 2
    contenders = []
    for n in names:
        why = CONTENDERS[n].unavailable()
        if why:
            print(f"failover_time: skipping {n}: {why}", file=sys.stderr)
        else:
            contenders.append(CONTENDERS[n])
    if not contenders:
        return 2

    all_trials: list[Trial] = []
    rng = random.Random(args.seed)
    t_start = time.monotonic()
    with Testbed(hosts=["h1", "h2"], keep_tmp=args.keep_tmp) as tb:
        print(f"test bed {tb.prefix}: {tb.subnet}, VIP {tb.vip}, {trials} trials per fault; "
              f"client every {CLIENT_INTERVAL_MS:g} ms, timeout {CLIENT_TIMEOUT_MS:g} ms", flush=True)
        for h in tb.hosts:
            tb.start_vipserver(h)
        _, results = tb.start_vipclient(interval_ms=CLIENT_INTERVAL_MS, timeout_ms=CLIENT_TIMEOUT_MS,
                                        duration=6 * 3600)
        tail = Tail(results)
        for prof in profiles:
            for cls in contenders:
                t0 = time.monotonic()
                print(f"{cls.name}, {prof} profile ({PROFILES[prof]:g} s) ...", flush=True)
                all_trials += measure(tb, tail, cls, prof, trials, faults, args.verbose, rng)
                print(f"  done in {time.monotonic() - t0:.0f} s", flush=True)
                tail.results.clear()  # the analysis only looks forward; keep memory flat
        if args.keep_tmp:
            print(f"logs in {tb.tmpdir}")
    summary = summarize(all_trials)
    report(summary, contenders, profiles, faults)
    print(f"\ntotal {time.monotonic() - t_start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "trials": [attrs.asdict(t) for t in all_trials],
            "summary": [{"contender": k[0], "profile": k[1], "fault": k[2], **v} for k, v in summary.items()],
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
