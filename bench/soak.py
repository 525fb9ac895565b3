#!/usr/bin/env python3
"""Soak under packet loss: spurious takeovers and client errors of a healthy pair.

Run as root with the project's virtualenv:  .venv/bin/python bench/soak.py [--minutes 5]

One network-namespace test bed (failover.lab.testbed): h1 (master) and h2 (slave) run faild,
failsh with samples/ipfailover-linux (setup.sh, service interval --interval, default 1 s,
failsh's --dead-factor, default 2.5) and vipserver; the client namespace runs vipclient
against the VIP (a new connection every 50 ms, --client-timeout-ms 3000 by default, so a
lost SYN that TCP retransmits after 1 s still counts as served).  Once h1 alone serves,
every host's eth0 drops --loss % of its packets in each direction (``Testbed.netem``: an
nftables netdev table, ingress and egress, ``numgen random``), so a poll between h1 and
h2 crosses two lossy interfaces and a client request one.  Nothing is faulted otherwise:
h1 stays healthy the whole time, so **every** takeover by h2 is spurious.

Contenders, one after the other on the same bed (``--contenders``): failover (failsh with
a heartbeat key made for the run: liveness from heartbeats and polls, docs/tuning.md),
failover-polls (the same without heartbeats: liveness from the polls alone, as before
issue 15), and keepalived (VRRP, priorities 150/100, advert_int = the interval) as the
anchor.

Printed at the end, per contender:

* spurious takeovers: h2 going UP (failsh's log; keepalived's "Entering MASTER STATE"),
  the times h2 gained the VIP, the time h2 held it and the time both held it (sampled
  every 0.2 s); for failover also h1 leaving UP and how often each failsh counted its
  peer FAIL ("did not answer for ...");
* client: requests, errors (no answer within the timeout), error rate, replies from h2,
  the longest stretch without any reply;
* loss check: packets nft dropped per host and the packets its eth0 passed.

--json FILE writes the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from failover import heartbeat
from failover.lab.testbed import Testbed, TestbedError, available, wait_until
from failover.lab.vipclient import Tail, longest_gap

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "samples" / "ipfailover-linux" / "setup.sh"
CLIENT_INTERVAL_MS = 50.0
SAMPLE = 0.2  # seconds between two looks at who holds the VIP


def gen_policy(tb: Testbed, interval: float) -> Path:
    out = tb.tmpdir / "ipfailover.tcl"
    subprocess.run(["sh", str(SETUP), "-m", "h1", "-s", "h2", "-a", tb.vip_cidr, "-d", "eth0",
                    "-i", f"{interval:g}", "-o", str(out)], check=True, capture_output=True, timeout=10)
    return out


def link_packets(tb: Testbed, host: str) -> int:
    """rx + tx packets of `host`'s eth0 (``ip -s``: reads counters, sends nothing)."""
    r = subprocess.run(["ip", "-n", tb.host(host).ns, "-j", "-s", "link", "show", "eth0"],
                       capture_output=True, text=True, timeout=10, check=True)
    st = json.loads(r.stdout)[0]["stats64"]
    return st["rx"]["packets"] + st["tx"]["packets"]


def count(path: Path | None, pattern: str) -> int:
    if path is None or not path.exists():
        return 0
    return len(re.findall(pattern, path.read_text(errors="replace")))


def soak(tb: Testbed, start: Any, serving_host: Callable[[], list[str]], up_count: Callable[[], int],
         args: argparse.Namespace, label: str,
         extra: Callable[[], dict[str, Any]] = dict) -> dict[str, Any]:
    """Once h1 alone serves (`start` launched the contender), loss on every host for the soak's
    duration, sampling who holds the VIP; the figures of one contender (and ``extra()``'s,
    taken before the contender is stopped)."""
    duration = args.minutes * 60
    procs = start()
    _, results = tb.start_vipclient(interval_ms=CLIENT_INTERVAL_MS, timeout_ms=args.client_timeout_ms,
                                    duration=duration + 600)
    tail = Tail(results)

    def h1_serving() -> bool:
        recent = tail.since(time.monotonic() - 1.0)
        return serving_host() == ["h1"] and len(recent) >= 10 and all(r.ok and r.host == "h1" for r in recent)
    wait_until(h1_serving, 30 + 20 * args.interval, what=f"{label}: h1 alone serving the VIP")
    packets0 = {h.name: link_packets(tb, h.name) for h in tb.hosts}
    up0 = up_count()
    for h in tb.hosts:
        tb.netem(h, loss=args.loss)
    t0 = time.monotonic()
    end = t0 + duration
    held = {"h2": 0.0, "both": 0.0, "none": 0.0}
    gained = 0  # times h2 went from not holding to holding the VIP
    had, last, next_report = False, t0, t0 + 60
    for _ in range(int(duration / SAMPLE) + 100):
        now = time.monotonic()
        if now >= end:
            break
        who = tb.vip_holders()
        dt, last = now - last, now
        gained += "h2" in who and not had
        had = "h2" in who
        if "h2" in who:
            held["h2"] += dt
        if len(who) > 1:
            held["both"] += dt
        if not who:
            held["none"] += dt
        if now >= next_report:
            next_report += 60
            done = tail.since(t0)
            print(f"  {label} {now - t0:5.0f} s: {sum(not r.ok for r in done)} client errors of {len(done)}, "
                  f"h2 took over {up_count() - up0} times", flush=True)
        time.sleep(max(0.0, min(SAMPLE, end - time.monotonic())))
    t_end = time.monotonic()
    drops = {h.name: tb.loss_drops(h) for h in tb.hosts}
    passed = {h.name: link_packets(tb, h.name) - packets0[h.name] for h in tb.hosts}
    for h in tb.hosts:
        tb.netem_clear(h)
    done = [r for r in tail.since(t0) if r.t0 <= t_end]
    fig: dict[str, Any] = {
        "contender": label, "minutes": (t_end - t0) / 60, "interval": args.interval, "loss_pct": args.loss,
        "client_timeout_ms": args.client_timeout_ms,
        "h2_takeovers": up_count() - up0, "h2_gained_vip": gained,
        "h2_held_s": held["h2"], "both_held_s": held["both"], "none_held_s": held["none"],
        "requests": len(done), "errors": sum(not r.ok for r in done),
        "from_h2": sum(r.ok and r.host == "h2" for r in done),
        "longest_gap_s": longest_gap(done, t0, t_end) if done else None,
        "nft_dropped": drops, "eth0_packets": passed,
        "daemons_alive": all(p.poll() is None for p in procs), **extra(),
    }
    for p in procs:
        tb.stop(p, timeout=10)
    for h in tb.hosts:
        tb.vip_del(h)
    return fig


def run_failover(tb: Testbed, args: argparse.Namespace, heartbeats: bool = True) -> dict[str, Any]:
    policy = gen_policy(tb, args.interval)
    extra = ["--dead-factor", f"{args.dead_factor:g}"] if args.dead_factor else []
    if heartbeats:
        key = tb.tmpdir / "heartbeat.key"
        if not key.exists():
            heartbeat.write_key(key)
        extra += ["--heartbeat-key", str(key)]
    label = "failover" if heartbeats else "failover-polls"
    started: dict[str, Any] = {}

    def start() -> list[Any]:
        started["faild"] = {h.name: tb.start_faild(h) for h in tb.hosts}
        started["failsh"] = {h.name: tb.start_failsh(h, policy, args=extra) for h in tb.hosts}
        return [*started["faild"].values(), *started["failsh"].values()]

    def ups() -> int:
        return count(tb.log_path(started["failsh"]["h2"]), r"ip: RECOVER -> UP") if started else 0
    def counts() -> dict[str, Any]:
        logs = {h: tb.log_path(p) for h, p in started["failsh"].items()}
        return {"dead_factor": args.dead_factor or 2.5, "heartbeats": heartbeats,
                "h1_left_up": count(logs["h1"], r"ip: UP -> "),
                "h2_counted_h1_fail": count(logs["h2"], r"h1 did not answer for"),
                "h1_counted_h2_fail": count(logs["h1"], r"h2 did not answer for")}
    return soak(tb, start, tb.vip_holders, ups, args, label, counts)


def run_failover_polls(tb: Testbed, args: argparse.Namespace) -> dict[str, Any]:
    return run_failover(tb, args, heartbeats=False)


def run_keepalived(tb: Testbed, args: argparse.Namespace) -> dict[str, Any]:
    procs: dict[str, Any] = {}

    def start() -> list[Any]:
        for h, prio in (("h1", 150), ("h2", 100)):
            procs[h] = tb.start_keepalived(h, priority=prio, advert_int=args.interval)
        return list(procs.values())

    def ups() -> int:
        return count(tb.log_path(procs["h2"]), r"Entering MASTER STATE") if procs else 0
    return soak(tb, start, tb.vip_holders, ups, args, "keepalived")


def report(fig: dict[str, Any], args: argparse.Namespace) -> None:
    rate = 100 * fig["errors"] / fig["requests"] if fig["requests"] else 0.0
    print(f"\n{fig['contender']}: soak {fig['minutes']:.1f} min, interval {args.interval:g} s, "
          f"{args.loss:g} % loss on every host:")
    print(f"  spurious takeovers: h2 took over {fig['h2_takeovers']} times (gained the VIP {fig['h2_gained_vip']} "
          f"times); h2 held the VIP {fig['h2_held_s']:.1f} s, both {fig['both_held_s']:.1f} s, nobody "
          f"{fig['none_held_s']:.1f} s")
    if "h2_counted_h1_fail" in fig:
        print(f"  dead factor {fig['dead_factor']:g}, heartbeats {'on' if fig['heartbeats'] else 'off'}; "
              f"peer counted FAIL: by h2 {fig['h2_counted_h1_fail']} times, "
              f"by h1 {fig['h1_counted_h2_fail']} times; h1 left UP {fig['h1_left_up']} times")
    print(f"  client: {fig['requests']} requests, {fig['errors']} errors ({rate:.2f} %), {fig['from_h2']} answered "
          f"by h2, longest stretch without a reply {fig['longest_gap_s'] or 0:.2f} s")
    print("  loss check: " + ", ".join(f"{h}: nft dropped {fig['nft_dropped'][h]}, eth0 counted "
                                      f"{fig['eth0_packets'][h]} packets" for h in ("h1", "h2")))
    print(f"  daemons alive at the end: {fig['daemons_alive']}")


CONTENDERS = {"failover": run_failover, "failover-polls": run_failover_polls, "keepalived": run_keepalived}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="soak duration per contender (default 5)")
    ap.add_argument("--interval", type=float, default=1.0,
                    help="service interval and keepalived's advert_int, seconds (default 1)")
    ap.add_argument("--dead-factor", type=float, help="failsh --dead-factor (default: failsh's, 2.5)")
    ap.add_argument("--loss", type=float, default=5.0, help="%% of packets dropped per host and direction (default 5)")
    ap.add_argument("--client-timeout-ms", type=float, default=3000.0, help="vipclient timeout (default 3000)")
    ap.add_argument("--contenders", default="failover,keepalived",
                    help=f"comma-separated, in this order: {', '.join(CONTENDERS)} (default: failover,keepalived)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the test bed's temp dir (logs)")
    args = ap.parse_args(argv)
    if not 0.01 <= args.minutes <= 24 * 60:
        ap.error("--minutes must be 0.01 .. 1440")
    if not 0 <= args.loss <= 100:
        ap.error("--loss must be 0 .. 100")
    names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if not names or any(c not in CONTENDERS for c in names):
        ap.error(f"--contenders: choose from {', '.join(CONTENDERS)}")
    reason = available() or (None if shutil.which("nft") else "nft not installed (apt-get install nftables)")
    if "keepalived" in names and not shutil.which("keepalived"):
        reason = reason or "keepalived not installed (apt-get install keepalived)"
    if reason:
        print(f"soak: cannot run: {reason}", file=sys.stderr)
        return 2
    figs = []
    with Testbed(hosts=["h1", "h2"], keep_tmp=args.keep_tmp) as tb:
        print(f"test bed {tb.prefix}: {tb.subnet}, VIP {tb.vip}; interval {args.interval:g} s, loss "
              f"{args.loss:g} % per host and direction, {args.minutes:g} min per contender", flush=True)
        for h in tb.hosts:
            tb.start_vipserver(h)
        for name in names:
            try:
                figs.append(CONTENDERS[name](tb, args))
            except TestbedError as e:
                print(f"soak: {name}: {e}", file=sys.stderr)
                return 1
        if args.keep_tmp:
            print(f"logs in {tb.tmpdir}")
    for fig in figs:
        report(fig, args)
    if args.json:
        args.json.write_text(json.dumps(figs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
