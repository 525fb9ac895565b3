"""The whole decision of one service run (failover/shell/gates.py) as a table: every gate
between the peers' views and the 0.5 rule, in milliseconds, without a process.  A second
table: until when the same inputs give the same verdict (recheck_at: the runner skips
the runs before it whose inputs did not change).

Each row: the local state, the service (masters m1 and m2 where named, slave s), the
peers' views, what the runs remember, other inputs; then the act, a piece of the note
(the decision line failsh shows) and, where it matters, what must be remembered or
re-announced.  The rule itself has its own table in tests/test_decide.py.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from failover.model import LeaseEnd, MaintEntry, PreferEntry, ServiceRecord
from failover.shell.gates import (
    ALWAYS,
    NEVER,
    STALLED,
    Act,
    Answer,
    ArbiterView,
    Inputs,
    Memory,
    Now,
    Seen,
    Verdict,
    evaluate,
    settled,
    suppose,
)
from failover.shell.policy import ServiceConfig
from failover.shell.view import DOWN, UNKNOWN, UP, Pause, PeerView
from failover.states import State

pytestmark = pytest.mark.fast

RECOVER, FAIL = State.RECOVER, State.FAIL
NOW = Now(monotonic=5000.0, wall=1_700_000_000.0)
DEADTIME = 2.5
INTERVAL = 1.0
TTL = 2.5


def peer(name: str, state: State | None = RECOVER, status: str = UP, lease: float | None = 2.0,
         leased: bool = True, error: str = "", seen_ago: float = 0.1, restarted_ago: float | None = None,
         counter: int = 7, by: str = "", reason: str = "", paused: str = "", prefer: PreferEntry | None = None,
         ended: str = "", arbiter: str | None = None) -> PeerView:
    """A host as the network thread sees it: its faild answers (UP) with ``state`` for web;
    ``paused``: "web" or "*" in maintenance there; ``prefer``: its switchover target for web;
    ``ended``: why its failsh's last lease ended."""
    services = {} if state is None else {"web": ServiceRecord("web", state, NOW.wall - 100, counter, reason, by)}
    return PeerView(name, f"tcp://{name}:1847", status=status, last_seen=NOW.wall - seen_ago,
                    lease=lease, leased=leased, error=error, services=services,
                    restarted=None if restarted_ago is None else NOW.monotonic - restarted_ago,
                    maintenance={paused: MAINT} if paused else {}, prefer={"web": prefer} if prefer else {},
                    lease_end=LeaseEnd(ended, NOW.wall - 1) if ended else None, arbiter=arbiter)


MAINT = MaintEntry(NOW.wall - 600, "kernel update", "failctl from 10.0.0.9")
PAUSE = Pause("service", MAINT.since, MAINT.reason, MAINT.by)


def switch(host: str, since: float = NOW.wall - 5, by: str = "failctl from 10.0.0.9") -> PreferEntry:
    return PreferEntry(host, since, "move to the new hardware", by)


def silent(name: str, seen_ago: float = 5.0, was: State | None = State.UP) -> PeerView:
    """A host whose faild has not answered for its dead time (DOWN)."""
    return attrs.evolve(peer(name, was, seen_ago=seen_ago), status=DOWN, error="no reply")


def inputs(local: State = RECOVER, masters: tuple[str, ...] = ("m1",), slaves: tuple[str, ...] = (),
           views: dict[str, PeerView] | None = None, memory: Memory | None = None, **kw: Any) -> Inputs:
    svc_fields = {k: kw.pop(k) for k in ("check", "reclaim", "holddown", "witnesses", "quorum", "tiebreaker",
                                         "announce", "failback", "failback_delay", "flap_count", "flap_minutes",
                                         "arbiter", "interval")
                  if k in kw}
    svc = ServiceConfig("web", masters=list(masters), slaves=list(slaves), **svc_fields)
    hosts = svc.polled()
    if "answer" in kw:
        kw["tiebreaker"] = kw.pop("answer")
    if "key" in kw:  # what the arbiter thread knows (Inputs.arbiter; the service's arbiter is its kind)
        kw["arbiter"] = kw.pop("key")
    if views is None:
        views = {h: peer(h) for h in hosts}
    if "me" in kw:  # this host's own faild (its maintenance, its switchover target): node "me"
        views = {**views, "me": kw.pop("me")}
        kw.setdefault("node", "me")
    defaults: dict[str, Any] = dict(
        service=svc, local=local, views=views, memory=memory or Memory(), now=NOW,
        deadtimes={h: DEADTIME for h in hosts}, intervals={h: INTERVAL for h in hosts}, lease_ttl=TTL,
        deciding_since=NOW.monotonic - 60, last_change=NOW.wall - 60)
    return Inputs(**{**defaults, **kw})


def remembered(**fields: Any) -> Callable[[Verdict], bool]:
    return lambda v: all(getattr(v.memory, k) == want for k, want in fields.items())


def refused_at(when: float | None) -> Callable[[Verdict], bool]:
    return remembered(guard_refused=when)


def announces(*hosts: str) -> Callable[[Verdict], bool]:
    return lambda v: v.announce == hosts


def etcd(held: bool = True, renewed_ago: float = 0.5, holder: str = "", error: str = "", ttl: float = 3.0,
         token: int = 42, failsafe: bool = False, reached_ago: float = float("inf")) -> dict[str, Any]:
    """An arbitrated service (failsvc web arbiter etcd) and what the arbiter thread knows of
    its key: ours (renewed that long ago), another host's, or an etcd error."""
    return {"arbiter": "etcd", "key": ArbiterView("/failover/web", ttl, held, NOW.monotonic - renewed_ago,
                                                  token if held else 0, holder, error, failsafe,
                                                  NOW.monotonic - reached_ago)}


ETCD_DOWN = "arbiter etcd: no member of http://e1:2379 answered (timed out)"
OVERDUE = etcd(renewed_ago=2.5, error=ETCD_DOWN, failsafe=True)  # UP here, etcd gone: the failsafe may apply
IN_FAILSAFE = Memory(failsafe=True)


def logged(level: int, text: str) -> Callable[[Verdict], bool]:
    return lambda v: any(lv == level and text in line for lv, line in v.events)


def failsafe_left(v: Verdict) -> bool:
    return v.arbiter == "lost" and not v.memory.failsafe and v.act is Act.STOP


UNCHANGED = Memory(seen_at=4999.0, seen={"m1": Seen(UP, RECOVER, 7)}, guard_refused=4990.0)
WAS_UP = Memory(seen_at=NOW.monotonic - 1, seen={"s": Seen(UP, State.UP, 7)})
W2 = {"witnesses": ["w1", "w2"]}
TB = {"tiebreaker": "ping -c1 gw"}

CASES: list[tuple[str, Inputs, Act, str, Callable[[Verdict], bool] | None]] = [
    # the local faild does not answer: an UP service is stopped, the rest waits
    ("local faild down, UP: stop", inputs(State.UP, local_faild_down=True, memory=UNCHANGED), Act.STOP,
     "local faild does not answer", lambda v: v.reason.startswith("local faild unreachable")
     and v.memory == UNCHANGED),
    ("local faild down, RECOVER: wait", inputs(local_faild_down=True), Act.WAIT, "peers will count this host", None),
    # no lease yet while a master is not heard
    ("no lease yet: wait", inputs(unheard_masters=("m1", "m9"), memory=UNCHANGED), Act.WAIT,
     "wait: no lease yet, master m1, m9 not heard", remembered(seen=UNCHANGED.seen)),
    # unknown peers
    ("peer not answered yet", inputs(views={"m1": peer("m1", status=UNKNOWN)}), Act.WAIT,
     "no answer yet from m1", None),
    ("peer not polled yet", inputs(slaves=("s",), views={"m1": peer("m1")}), Act.WAIT, "no answer yet from s", None),
    # refused polls
    ("refused poll: wait, not FAIL", inputs(views={"m1": peer("m1", None, error="DENIED: no access")}), Act.WAIT,
     "m1 refused our poll (DENIED: no access)", None),
    # grace for a master without a lease
    ("grace at our start", inputs(deciding_since=NOW.monotonic - 1, views={"m1": peer("m1", lease=None, leased=False)}),
     Act.WAIT, "wait: grace for master m1 (faild answers, no failsh lease yet)", None),
    ("grace over: start", inputs(views={"m1": peer("m1", lease=None, leased=False)}), Act.START, "master m1 down",
     None),
    ("grace after its faild restarted", inputs(views={"m1": peer("m1", lease=None, leased=False, restarted_ago=1)}),
     Act.WAIT, "grace for master m1", None),
    ("no grace once it held a lease", inputs(deciding_since=NOW.monotonic - 1,
                                             views={"m1": peer("m1", lease=None, leased=True)}),
     Act.START, "master m1 down", None),
    ("no grace for a silent master", inputs(deciding_since=NOW.monotonic - 1, views={"m1": silent("m1")}),
     Act.START, "master m1 down", None),
    ("no grace while UP here", inputs(State.UP, deciding_since=NOW.monotonic - 1,
                                      views={"m1": peer("m1", lease=None, leased=False)}),
     Act.NONE, "UP and no master is ready", None),
    # the rule, passed through
    ("master RECOVER: wait", inputs(), Act.WAIT, "wait: master m1 is RECOVER", None),
    ("master UP, UP here: stop", inputs(State.UP, views={"m1": peer("m1", State.UP)}), Act.STOP, "handing back",
     refused_at(None)),
    ("FAIL: reclaim", inputs(FAIL, reclaim="fix"), Act.RECLAIM, "reclaim", None),
    ("FAIL without reclaim", inputs(FAIL), Act.NONE, "no reclaim procedure", None),
    ("a new FAIL: the peers see it before the reclaim", inputs(FAIL, reclaim="fix", interval=0.3,
                                                                last_change=NOW.wall - 0.5),
     Act.WAIT, "wait: FAIL: the reclaim runs once it has stood 0.6 s (2 intervals: the peers see it)",
     None),
    ("UP with a check: check", inputs(State.UP, check="pidof httpd", views={"m1": peer("m1", FAIL)}), Act.CHECK,
     "none: UP and no master is ready", None),
    # hold-down
    ("hold-down keeps it", inputs(State.UP, holddown=30.0, last_change=NOW.wall - 10, memory=UNCHANGED,
                                  views={"m1": peer("m1", State.UP)}),
     Act.WAIT, "wait: hold-down: handing back once UP for 30 s (rule said stop:",
     lambda v: v.level == logging.WARNING and v.memory.guard_refused == UNCHANGED.guard_refused),
    ("hold-down over: stop", inputs(State.UP, holddown=30.0, last_change=NOW.wall - 31,
                                    views={"m1": peer("m1", State.UP)}), Act.STOP, "handing back", None),
    # split-brain guard: witnesses
    ("no witness reachable", inputs(**W2, views={"m1": silent("m1"), "w1": silent("w1", was=None),
                                                 "w2": silent("w2", was=None)}),
     Act.WAIT, "split-brain guard: master m1 silent but only 0 of 2 witnesses reachable (need 2)",
     lambda v: v.level == logging.WARNING and v.memory.guard_refused == NOW.monotonic),
    ("witness heard only before the master went silent", inputs(**W2, quorum=1, views={
        "m1": silent("m1", seen_ago=5.0), "w1": peer("w1", None, seen_ago=4.5), "w2": silent("w2", was=None)}),
     Act.WAIT, "only 0 of 2 witnesses reachable (need 1)", refused_at(NOW.monotonic)),
    ("quorum of witnesses: start", inputs(**W2, quorum=1, views={
        "m1": silent("m1"), "w1": peer("w1", None), "w2": silent("w2", was=None)}),
     Act.START, "master m1 down", refused_at(None)),
    ("majority of witnesses by default", inputs(**W2, views={"m1": silent("m1"), "w1": peer("w1", None),
                                                             "w2": peer("w2", None)}),
     Act.START, "master m1 down", None),
    ("a master that says FAIL needs no guard", inputs(**W2, memory=Memory(guard_refused=NOW.monotonic - 1), views={
        "m1": peer("m1", FAIL), "w1": silent("w1", was=None), "w2": silent("w2", was=None)}),
     Act.START, "master m1 down", refused_at(None)),
    ("guard agrees again: one dead time for the master", inputs(**W2, memory=Memory(guard_refused=NOW.monotonic - 1),
                                                                views={"m1": silent("m1"), "w1": peer("w1", None),
                                                                       "w2": peer("w2", None)}),
     Act.WAIT, "split-brain guard: agrees again; giving master m1 2.5 s to answer", refused_at(NOW.monotonic - 1)),
    ("guard agreed for a dead time: start", inputs(**W2, memory=Memory(guard_refused=NOW.monotonic - 3),
                                                   views={"m1": silent("m1"), "w1": peer("w1", None),
                                                          "w2": peer("w2", None)}),
     Act.START, "master m1 down", None),
    # split-brain guard: the tie-breaker
    ("tie-breaker asked", inputs(**TB, memory=UNCHANGED, views={"m1": silent("m1")}), Act.ASK,
     "ask: would ask the tie-breaker (master m1 silent; rule said start: master m1 down",
     lambda v: v.memory == UNCHANGED),
    ("tie-breaker says yes: start", inputs(**TB, views={"m1": silent("m1")}, answer=Answer(True, "check passed")),
     Act.START, "master m1 down (faild silent for 5.0 s) and no slave is UP", refused_at(None)),
    ("tie-breaker says no", inputs(**TB, views={"m1": silent("m1")}, answer=Answer(False, "check returned 0")),
     Act.WAIT, "split-brain guard: tie-breaker said no (check returned 0)", refused_at(NOW.monotonic)),
    ("tie-breaker yes right after a no: wait", inputs(**TB, views={"m1": silent("m1")},
                                                      memory=Memory(guard_refused=NOW.monotonic - 2),
                                                      answer=Answer(True, "check passed")),
     Act.WAIT, "agrees again; giving master m1 2.5 s", None),
    ("witnesses refuse before the tie-breaker is asked", inputs(**W2, **TB, views={
        "m1": silent("m1"), "w1": silent("w1", was=None), "w2": silent("w2", was=None)}),
     Act.WAIT, "only 0 of 2 witnesses", None),
    ("no tie-breaker for a master that is there", inputs(**TB), Act.WAIT, "master m1 is RECOVER", None),
    # yield detection and re-announce (while UP here)
    ("first run while UP: remember the peers", inputs(State.UP, masters=(), slaves=("s",), announce="garp"),
     Act.NONE, "UP", lambda v: v.announce == () and v.memory.seen_at == NOW.monotonic
     and v.memory.seen == {"s": Seen(UP, RECOVER, 7)}),
    ("slave was UP, now RECOVER: re-announce", inputs(State.UP, masters=(), slaves=("s",), announce="garp",
                                                       memory=WAS_UP), Act.NONE, "UP", announces("s")),
    ("slave UP and back between two polls", inputs(State.UP, masters=(), slaves=("s",), announce="garp",
                                                    memory=Memory(seen_at=NOW.monotonic - 1,
                                                                  seen={"s": Seen(UP, RECOVER, 6)})),
     Act.NONE, "UP", announces("s")),
    ("slave unchanged: nothing", inputs(State.UP, masters=(), slaves=("s",), announce="garp",
                                        memory=Memory(seen_at=NOW.monotonic - 1, seen={"s": Seen(UP, RECOVER, 7)})),
     Act.NONE, "UP", announces()),
    ("slave heard again after a partition", inputs(State.UP, masters=(), slaves=("s",), announce="garp",
                                                   memory=Memory(seen_at=NOW.monotonic - 1,
                                                                 seen={"s": Seen(DOWN, None, 7)})),
     Act.NONE, "UP", announces("s")),
    ("stalled failsh: re-announce", inputs(State.UP, masters=(), slaves=("s",), announce="garp",
                                           memory=Memory(seen_at=NOW.monotonic - 10, seen={"s": Seen(UP, RECOVER, 7)})),
     Act.NONE, "UP", announces(STALLED)),
    ("no announce script: remembered, not announced", inputs(State.UP, masters=(), slaves=("s",), memory=WAS_UP),
     Act.NONE, "UP", lambda v: v.announce == () and v.memory.seen_at == NOW.monotonic),
    ("yield seen while handing back", inputs(State.UP, slaves=("s",), announce="garp", memory=WAS_UP,
                                             views={"m1": peer("m1", State.UP), "s": peer("s")}),
     Act.STOP, "handing back", announces("s")),
    ("not UP here: forget the peers", inputs(memory=WAS_UP, views={"m1": peer("m1", FAIL)}), Act.START,
     "master m1 down", remembered(seen_at=None, seen={})),
    # the local faild first: its maintenance flags and external changes are not known before it answers
    ("local faild not heard yet: wait", inputs(views={"m1": peer("m1", FAIL)}, local_unheard=True), Act.WAIT,
     "wait: no answer yet from the local faild", None),
    # maintenance here: no action at all, whatever the rule or the gates say
    ("paused: the holder stays holder", inputs(State.UP, me=peer("me", paused="web"),
                                               views={"m1": peer("m1", State.UP)}),
     Act.NONE, "paused: kernel update (by failctl from 10.0.0.9 since ",
     lambda v: v.level == logging.INFO and v.memory.paused == PAUSE and v.events == ()),
    ("paused host: no start", inputs(me=peer("me", paused="*"), views={"m1": peer("m1", FAIL)}), Act.NONE,
     "; whole host)", None),
    ("paused: no reclaim", inputs(FAIL, reclaim="fix", me=peer("me", paused="web")), Act.NONE, "paused:", None),
    ("paused: no check", inputs(State.UP, masters=(), check="pidof x", me=peer("me", paused="web")), Act.NONE,
     "paused:", None),
    ("paused: not even stopped when the local faild is down", inputs(State.UP, me=peer("me", paused="web"),
                                                                     local_faild_down=True), Act.NONE, "paused:", None),
    ("resumed: said once, the rule applies at once", inputs(me=peer("me"), memory=Memory(paused=PAUSE),
                                                            views={"m1": peer("m1", FAIL)}),
     Act.START, "master m1 down", lambda v: v.memory.paused is None and v.events == (
         (logging.INFO, "resumed: kernel update (by failctl from 10.0.0.9 since "
          + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(MAINT.since)) + ") is over; the rule applies again"),)),
    # a peer's maintenance: its service is not taken over, nor handed back to it
    ("master paused: not taken over", inputs(views={"m1": peer("m1", FAIL, paused="web")}), Act.WAIT,
     "wait: master m1 is paused: kernel update (by failctl from 10.0.0.9 since", None),
    ("master paused, its failsh gone: not taken over", inputs(views={"m1": peer("m1", State.UP, paused="*",
                                                                                 lease=None, ended="exited")}),
     Act.WAIT, "master m1 is paused", None),
    ("master paused and RECOVER: not handed back", inputs(State.UP, views={"m1": peer("m1", paused="web")}),
     Act.NONE, "none: UP; master m1 is paused: not handing back", None),
    ("master paused and UP: handed back", inputs(State.UP, views={"m1": peer("m1", State.UP, paused="web",
                                                                               lease=None)}),
     Act.STOP, "master m1 is UP: handing back", None),
    ("paused slave holds it, its failsh gone: the master waits",
     inputs(masters=(), slaves=("s",), views={"s": peer("s", State.UP, paused="web", lease=None)}),
     Act.WAIT, "wait: slave s holds it and is paused: kernel update", None),
    ("paused master FAIL, FAIL here: reclaim", inputs(FAIL, reclaim="fix", views={"m1": peer("m1", FAIL, paused="*")}),
     Act.RECLAIM, "reclaim", None),
    # switchover: the target heads the order on every host
    ("switchover to here: the old master is now our slave", inputs(me=peer("me", prefer=switch("me")),
                                                                   views={"m1": peer("m1", State.UP)}),
     Act.WAIT, "wait: no master ready; waiting for slave m1 to yield",
     lambda v: v.events == ((logging.INFO, "switchover to me requested by failctl from 10.0.0.9: move to the new "
                                           "hardware"),) and v.memory.prefer == switch("me")),
    ("switchover to here, the old master yielded: start", inputs(me=peer("me", prefer=switch("me")),
                                                                 memory=Memory(prefer=switch("me"))),
     Act.START, "start: switchover to me requested by failctl from 10.0.0.9: move to the new hardware; no masters",
     lambda v: v.cause == "switchover" and v.events == ()),
    ("switchover to a slave: the master hands back", inputs(State.UP, masters=(), slaves=("s",),
                                                            views={"s": peer("s", prefer=switch("s"))}),
     Act.STOP, "stop: switchover to s requested by failctl from 10.0.0.9: move to the new hardware; master s is "
               "RECOVER: handing back", None),
    ("switchover sticks: the old master waits", inputs(masters=(), slaves=("s",), me=peer("me", prefer=switch("s")),
                                                       views={"s": peer("s", State.UP)}),
     Act.WAIT, "wait: master s is UP", None),
    ("switchover overrides hold-down, failback and flapping",
     inputs(State.UP, masters=(), slaves=("s",), holddown=30.0, last_change=NOW.wall - 1, failback="manual",
            memory=Memory(flapping=True, moves=(NOW.monotonic,) * 7, holder="me"),
            views={"s": peer("s", prefer=switch("s"))}),
     Act.STOP, "switchover to s", None),
    ("switchover: the newest target wins", inputs(slaves=("s",), me=peer("me", prefer=switch("me", NOW.wall - 1)),
                                                  views={"m1": peer("m1", FAIL, prefer=switch("s", NOW.wall - 9)),
                                                         "s": peer("s")}),
     Act.START, "switchover to me", None),
    ("switchover to a host of no list: ignored, said once", inputs(me=peer("me", prefer=switch("www9")),
                                                                   views={"m1": peer("m1", State.UP)}),
     Act.WAIT, "wait: master m1 is UP", lambda v: v.events[0][0] == logging.WARNING
     and "switchover to www9 ignored" in v.events[0][1] and v.memory.prefer == switch("www9")),
    ("switchover cleared: said once, the policy's order again", inputs(State.UP, masters=(), slaves=("s",),
                                                                       memory=Memory(prefer=switch("s"))),
     Act.NONE, "UP and no master is ready",
     lambda v: v.events == ((logging.INFO, "switchover to s cleared: the policy's order applies again"),)),
    # failback policy
    ("failback manual: the slave keeps it", inputs(State.UP, failback="manual"), Act.WAIT,
     "wait: failback manual: keeping it while master m1 is RECOVER", lambda v: v.level == logging.INFO),
    ("failback manual: a master UP is handed back to", inputs(State.UP, failback="manual",
                                                              views={"m1": peer("m1", State.UP)}),
     Act.STOP, "handing back", None),
    ("failback manual: the master waits", inputs(masters=(), slaves=("s",), failback="manual",
                                                 views={"s": peer("s", State.UP)}),
     Act.WAIT, "wait: slave s holds it (failback manual)", None),
    ("failback delay: first seen ready now", inputs(State.UP, failback="delay", failback_delay=30.0), Act.WAIT,
     "wait: failback delay: handing back once master m1 has been ready for 30 s",
     remembered(ready_since={"m1": NOW.monotonic})),
    ("failback delay: ready for 10 s", inputs(State.UP, failback="delay", failback_delay=30.0,
                                               memory=Memory(ready_since={"m1": NOW.monotonic - 10})),
     Act.WAIT, "failback delay", remembered(ready_since={"m1": NOW.monotonic - 10})),
    ("failback delay: ready long enough", inputs(State.UP, failback="delay", failback_delay=30.0,
                                                  memory=Memory(ready_since={"m1": NOW.monotonic - 31})),
     Act.STOP, "handing back", None),
    ("failback delay: a master not ready is forgotten", inputs(State.UP, failback="delay", failback_delay=30.0,
                                                              memory=Memory(ready_since={"m1": NOW.monotonic - 31}),
                                                              views={"m1": peer("m1", FAIL)}),
     Act.NONE, "UP and no master is ready", remembered(ready_since={})),
    ("failback delay: the master waits", inputs(masters=(), slaves=("s",), failback="delay", failback_delay=30.0,
                                                views={"s": peer("s", State.UP)}),
     Act.WAIT, "waiting for slave s to yield (failback delay 30 s)", None),
    # flap protection: more than flap_count changes of holder within flap_minutes
    ("a change of holder is counted", inputs(State.UP, masters=(), slaves=("s",), node="me",
                                             memory=Memory(holder="s", moves=(NOW.monotonic - 10,))),
     Act.NONE, "UP", remembered(holder="me", moves=(NOW.monotonic - 10, NOW.monotonic), flapping=False)),
    ("a restart in place is not a change of holder", inputs(State.UP, masters=(), slaves=("s",), node="me",
                                                            memory=Memory(holder="me")),
     Act.NONE, "UP", remembered(holder="me", moves=())),
    ("nobody holds it: nothing counted", inputs(views={"m1": peer("m1", FAIL)}, node="me", memory=Memory(holder="m1")),
     Act.START, "master m1 down", remembered(holder="m1", moves=())),
    ("flapping: held here, said once at WARNING", inputs(State.UP, node="me", memory=Memory(
        holder="m1", moves=tuple(NOW.monotonic - 10 * i for i in range(1, 7)))),
     Act.WAIT, "wait: flapping: held here (more than 6 holder changes within 5 min)",
     lambda v: v.memory.flapping and len(v.memory.moves) == 7 and v.events[0][0] == logging.WARNING
     and v.events[0][1].startswith("flapping: changed holder 7 times within 5 min (more than 6): held where it is "
                                   "(me)")),
    ("flapping: a master UP is handed back to at once (two hosts must not stay UP)",
     inputs(State.UP, node="me", views={"m1": peer("m1", State.UP)},
            memory=Memory(holder="me", flapping=True, moves=(NOW.monotonic - 1,) * 7)),
     Act.STOP, "master m1 is UP: handing back", None),
    ("flapping: the master waits", inputs(masters=(), slaves=("s",), views={"s": peer("s", State.UP)},
                                          memory=Memory(holder="s", flapping=True,
                                                        moves=(NOW.monotonic - 1,) * 7)),
     Act.WAIT, "wait: slave s holds it (flapping: more than 6 holder changes within 5 min)", lambda v: v.events == ()),
    ("flapping: a start where nobody holds it is still made", inputs(views={"m1": peer("m1", FAIL)}, memory=Memory(
        holder="m1", flapping=True, moves=(NOW.monotonic - 1,) * 7)), Act.START, "master m1 down", None),
    ("flapping over once the window passed", inputs(State.UP, node="me", memory=Memory(
        holder="me", flapping=True, moves=(NOW.monotonic - 301,) * 7)),
     Act.STOP, "handing back", lambda v: not v.memory.flapping and v.memory.moves == ()
     and v.events[0][1].startswith("no longer flapping")),
    ("flap protection off", inputs(State.UP, node="me", flap_count=0, memory=Memory(
        holder="m1", moves=(NOW.monotonic - 1,) * 20)), Act.STOP, "handing back", remembered(flapping=False)),
    ("flap settings: 2 in 1 minute", inputs(State.UP, node="me", flap_count=2, flap_minutes=1.0, memory=Memory(
        holder="m1", moves=(NOW.monotonic - 61, NOW.monotonic - 30, NOW.monotonic - 20))),
     Act.WAIT, "flapping: held here (more than 2 holder changes within 1 min)", None),
    # what found a master down, named in the start's reason and its metrics label
    ("detection: lease ended, process exited", inputs(views={"m1": peer("m1", State.UP, lease=None, ended="exited")}),
     Act.START, "master m1 down (lease ended because the failsh process exited)",
     lambda v: v.cause == "lease-exited"),
    ("detection: lease released", inputs(views={"m1": peer("m1", lease=None, ended="released")}), Act.START,
     "(lease ended because it was released (graceful stop))", lambda v: v.cause == "lease-released"),
    ("detection: lease expired", inputs(views={"m1": peer("m1", State.UP, lease=None, ended="expired")}), Act.START,
     "(lease ended because it expired)", lambda v: v.cause == "lease-expired"),
    ("detection: no lease", inputs(views={"m1": peer("m1", State.UP, lease=None)}), Act.START,
     "(no failsh lease)", lambda v: v.cause == "no-lease"),
    ("detection: faild silent", inputs(views={"m1": silent("m1", seen_ago=4.25)}), Act.START,
     "master m1 down (faild silent for 4.2 s)", lambda v: v.cause == "faild-silent"),
    ("detection: set FAIL by failc", inputs(views={"m1": peer("m1", FAIL, by="failc from 10.0.0.9",
                                                              reason="disk replacement")}),
     Act.START, "master m1 down (set FAIL by failc from 10.0.0.9: disk replacement)", lambda v: v.cause == "set-fail"),
    ("detection: hc", inputs(views={"m1": peer("m1", FAIL, by="hc from 127.0.0.1",
                                               reason="hc: check web failed 3 times in a row: HTTP 500")}),
     Act.START, "master m1 down (hc check web failed 3 times in a row: HTTP 500)", lambda v: v.cause == "hc"),
    ("detection: service unknown there", inputs(views={"m1": peer("m1", None)}), Act.START,
     "(its faild does not know the service)", lambda v: v.cause == "unknown-service"),
    ("detection: two masters", inputs(masters=("m1", "m2"), views={"m1": peer("m1", FAIL, by="failc"),
                                                                    "m2": silent("m2")}),
     Act.START, "master m1, m2 down (m1: set FAIL by failc; m2: faild silent for 5.0 s)",
     lambda v: v.cause == "set-fail"),
    ("no masters: the top host starts", inputs(masters=()), Act.START, "no masters and no slave is UP",
     lambda v: v.cause == "no-master"),
    # the arbiter (failsvc web arbiter etcd): the rule says who wants it, etcd who may hold it
    ("arbiter: our key, a start goes ahead", inputs(views={"m1": peer("m1", FAIL)}, **etcd()), Act.START,
     "master m1 down", lambda v: v.arbiter == "" and v.cause == "set-fail"),
    ("arbiter: no key yet, the start waits and claims it", inputs(views={"m1": peer("m1", FAIL)}, **etcd(held=False)),
     Act.WAIT, "wait: master m1 down (set FAIL) and no slave is UP; not starting: waiting for /failover/web in etcd",
     lambda v: v.arbiter == "claim" and v.level == logging.INFO and v.cause == ""),
    ("arbiter: the old holder's key lives on", inputs(views={"m1": silent("m1")}, **etcd(held=False, holder="m1")),
     Act.WAIT, "not starting: /failover/web is held by m1 in etcd", lambda v: v.arbiter == "claim"),
    ("arbiter: etcd unreachable, nobody new starts",
     inputs(masters=(), **etcd(held=False, error="arbiter etcd: no member of http://e1:2379 answered (timed out)")),
     Act.WAIT, "no masters and no slave is UP; not starting: arbiter etcd: no member of http://e1:2379 answered",
     lambda v: v.arbiter == "claim"),
    ("arbiter: no word from the arbiter thread yet", inputs(masters=(), arbiter="etcd"), Act.WAIT,
     "not starting: no word from the arbiter yet", None),
    ("arbiter: the tie-breaker is asked only once the key is ours", inputs(**TB, views={"m1": silent("m1")},
                                                                         **etcd(held=False, holder="m1")),
     Act.WAIT, "not starting: /failover/web is held by m1", lambda v: v.arbiter == "claim"),
    ("arbiter: UP with our key renewed: stays", inputs(State.UP, masters=(), **etcd(renewed_ago=1.9)), Act.NONE,
     "UP and no master is ready", lambda v: v.arbiter == ""),
    ("arbiter: not renewed for 2/3 of the ttl: lost, stop", inputs(State.UP, masters=(), **etcd(
        renewed_ago=2.0, error="arbiter etcd: no member of http://e1:2379 answered (timed out)")),
     Act.STOP, "stop: lost the arbiter: lease not renewed for 2.0 s (ttl 3 s): arbiter etcd: no member of",
     lambda v: v.arbiter == "lost" and v.level == logging.WARNING and v.reason.startswith("lost the arbiter")),
    ("arbiter: key gone (lease expired): lost, stop", inputs(State.UP, masters=(), memory=UNCHANGED,
                                                             **etcd(held=False, holder="s")),
     Act.STOP, "lost the arbiter: /failover/web is held by s in etcd",
     lambda v: v.arbiter == "lost" and v.memory.seen == {}),
    ("arbiter: lost overrides hold-down and failback", inputs(State.UP, holddown=30.0, last_change=NOW.wall - 1,
                                                              failback="manual", **etcd(renewed_ago=5.0)),
     Act.STOP, "lost the arbiter: lease not renewed", lambda v: v.arbiter == "lost"),
    ("arbiter: a handback with our key is a plain stop", inputs(State.UP, views={"m1": peer("m1", State.UP)},
                                                                **etcd()),
     Act.STOP, "handing back", lambda v: v.arbiter == ""),
    ("arbiter: paused holder is left alone", inputs(State.UP, me=peer("me", paused="web"), **etcd(renewed_ago=9.0)),
     Act.NONE, "paused:", None),
    ("arbiter: no reclaim while etcd cannot be reached", inputs(FAIL, reclaim="fix", **etcd(
        held=False, error="arbiter etcd: no member of http://e1:2379 answered (timed out)")),
     Act.WAIT, "wait: not reclaiming until the arbiter answers (arbiter etcd: no member", None),
    ("arbiter: reclaim once etcd answers", inputs(FAIL, reclaim="fix", **etcd(held=False)), Act.RECLAIM, "reclaim",
     None),
    ("arbiter: no reclaim while the lease is not renewed, even before an error", inputs(
        FAIL, reclaim="fix", **etcd(held=False, renewed_ago=2.5)), Act.WAIT, "not reclaiming until the arbiter answers",
     None),
    ("arbiter: RECOVER without a renewed lease is not ready: FAIL", inputs(reclaim="fix", memory=UNCHANGED, **etcd(
        held=False, renewed_ago=2.5, error="arbiter etcd: no member of http://e1:2379 answered (timed out)")),
     Act.WAIT, "wait: not ready while the arbiter cannot be reached (arbiter etcd: no member of",
     lambda v: v.arbiter == "unready" and v.level == logging.WARNING),
    ("arbiter: a short etcd error is not enough to be unready", inputs(reclaim="fix", **etcd(
        held=False, renewed_ago=1.0, error="arbiter etcd: no member of http://e1:2379 answered (timed out)")),
     Act.WAIT, "wait: master m1 is RECOVER", lambda v: v.arbiter == ""),
    ("arbiter: without a reclaim, FAIL would be for good: stays RECOVER", inputs(**etcd(
        held=False, renewed_ago=9.0, error="arbiter etcd: no member of http://e1:2379 answered (timed out)")),
     Act.WAIT, "wait: master m1 is RECOVER", lambda v: v.arbiter == ""),
    ("arbiter: not configured", inputs(masters=(), arbiter="etcd", key=ArbiterView(
        error="arbiter etcd: not configured (failarbiter etcd ENDPOINT ...)")),
     Act.WAIT, "not starting: arbiter etcd: not configured", None),
    # the failsafe (failarbiter -failsafe 1): etcd down for every host, the holder stays
    ("failsafe: etcd down for every host, the master stays UP (logged once)",
     inputs(State.UP, masters=(), slaves=("s",), views={"s": peer("s", FAIL, arbiter="unreachable")},
            **OVERDUE), Act.NONE, "failsafe: etcd unreachable for every host; staying",
     lambda v: v.memory.failsafe and v.arbiter == "" and logged(logging.WARNING, "failsafe: etcd unreachable")(v)),
    ("failsafe: staying, not logged again", inputs(State.UP, masters=(), slaves=("s",),
                                                   views={"s": peer("s", RECOVER, arbiter="unreachable")},
                                                   memory=IN_FAILSAFE, **OVERDUE),
     Act.NONE, "failsafe: etcd unreachable", lambda v: v.memory.failsafe and v.events == ()),
    ("failsafe: the slave holds it, the master is FAIL without etcd: stays", inputs(
        State.UP, views={"m1": peer("m1", FAIL, arbiter="unreachable")}, **OVERDUE), Act.NONE,
     "failsafe: etcd unreachable", None),
    ("failsafe: cut from etcd, not from a slave that reaches it: the master stops", inputs(
        State.UP, masters=(), slaves=("s",), views={"s": peer("s", RECOVER, arbiter="ok")}, **OVERDUE),
     Act.STOP, "stop: lost the arbiter: lease not renewed", lambda v: failsafe_left(v) and v.events == ()),
    ("failsafe: overdue, the slave still reaches etcd: its word is awaited until 0.8 ttl", inputs(
        State.UP, masters=(), slaves=("s",), views={"s": peer("s", RECOVER, arbiter="ok")},
        **etcd(renewed_ago=2.1, error=ETCD_DOWN, failsafe=True)), Act.NONE,
     "failsafe: waiting until 0.30 s for s to find etcd gone too",
     lambda v: not v.memory.failsafe and v.arbiter == "" and v.events == ()),
    ("failsafe: etcd back for the slave first: the holder stays a moment for its key", inputs(
        State.UP, masters=(), slaves=("s",), views={"s": peer("s", RECOVER, arbiter="ok")},
        memory=IN_FAILSAFE, **OVERDUE), Act.NONE, "failsafe: s reaches etcd: staying a moment",
     lambda v: v.memory.failsafe and v.memory.reached == NOW.monotonic and v.events == ()),
    ("failsafe: the slave reached etcd 2/3 ttl ago, we still cannot: stop (logged)", inputs(
        State.UP, masters=(), slaves=("s",), views={"s": peer("s", RECOVER, arbiter="ok")},
        memory=Memory(failsafe=True, reached=NOW.monotonic - 2.0), **OVERDUE), Act.STOP,
     "stop: lost the arbiter: lease not renewed", lambda v: failsafe_left(v) and v.memory.reached is None
     and logged(logging.WARNING, "failsafe over: s reaches etcd for 2.0 s while this host still cannot")(v)),
    ("failsafe: a silent peer ends it", inputs(State.UP, views={"m1": silent("m1", was=FAIL)}, memory=IN_FAILSAFE,
                                               **OVERDUE),
     Act.STOP, "lost the arbiter", lambda v: failsafe_left(v) and logged(logging.WARNING, "m1 does not answer")(v)),
    ("failsafe: a peer without a live failsh ends it", inputs(State.UP, views={"m1": peer(
        "m1", FAIL, lease=None, arbiter="unreachable")}, **OVERDUE), Act.STOP, "lost the arbiter",
     lambda v: v.arbiter == "lost" and v.events == ()),
    ("failsafe: a peer that does not say ends it", inputs(State.UP, views={"m1": peer("m1", FAIL)}, **OVERDUE),
     Act.STOP, "lost the arbiter", None),
    ("failsafe: a peer UP too ends it", inputs(State.UP, masters=(), slaves=("s",), views={
        "s": peer("s", State.UP, arbiter="unreachable")}, memory=IN_FAILSAFE, **OVERDUE),
     Act.STOP, "lost the arbiter", logged(logging.WARNING, "failsafe over: s is UP too")),
    ("failsafe off: lost, stop (as without it)", inputs(State.UP, views={"m1": peer("m1", FAIL, arbiter="unreachable")},
                                                        **etcd(renewed_ago=2.5, error=ETCD_DOWN)),
     Act.STOP, "lost the arbiter", None),
    ("failsafe: etcd answers here but the key is not ours: stop", inputs(
        State.UP, views={"m1": peer("m1", FAIL, arbiter="unreachable")}, memory=IN_FAILSAFE,
        **etcd(held=False, holder="m1", failsafe=True)), Act.STOP, "lost the arbiter: /failover/web is held by m1",
     logged(logging.WARNING, "failsafe over: etcd answers here")),
    ("failsafe: a renewal still under way counts as etcd gone", inputs(
        State.UP, views={"m1": peer("m1", FAIL, arbiter="unreachable")}, **etcd(renewed_ago=2.5, failsafe=True)),
     Act.NONE, "failsafe: etcd unreachable", None),
    ("failsafe: the rule hands back: a stop", inputs(State.UP, views={"m1": peer("m1", RECOVER, arbiter="unreachable")},
                                                    **OVERDUE), Act.STOP, "lost the arbiter", None),
    ("failsafe: etcd back, the key ours again: over (logged)", inputs(
        State.UP, views={"m1": peer("m1", FAIL, arbiter="ok")}, memory=IN_FAILSAFE, **etcd(failsafe=True)),
     Act.NONE, "UP", lambda v: not v.memory.failsafe
     and logged(logging.WARNING, "failsafe over: etcd answers again")(v)),
    ("failsafe: a host last seen UP without etcd: no start, no claim", inputs(
        views={"m1": attrs.evolve(silent("m1", seen_ago=3.0), arbiter="unreachable")}, **etcd(failsafe=True)),
     Act.WAIT, "not starting: m1 was last seen UP without etcd 3.0 s ago: it may hold it through the failsafe "
     "for another 2.0 s", lambda v: v.arbiter == "" and v.cause == ""),
    ("failsafe: long enough after: the start goes ahead", inputs(
        views={"m1": attrs.evolve(silent("m1", seen_ago=5.5), arbiter="unreachable")}, **etcd(failsafe=True)),
     Act.START, "master m1", None),
    ("failsafe: etcd back here a moment ago, a host last seen UP without it: no start yet", inputs(
        views={"m1": attrs.evolve(silent("m1", seen_ago=9.0), arbiter="unreachable")},
        **etcd(failsafe=True, reached_ago=1.0)),
     Act.WAIT, "etcd answers here since 1.0 s only: it may hold it through the failsafe for another 3.5 s",
     lambda v: v.arbiter == ""),
    ("failsafe: etcd back here long enough: the start goes ahead", inputs(
        views={"m1": attrs.evolve(silent("m1", seen_ago=9.0), arbiter="unreachable")},
        **etcd(failsafe=True, reached_ago=4.6)), Act.START, "master m1", None),
    ("failsafe: a host last seen UP with etcd: no wait", inputs(
        views={"m1": attrs.evolve(silent("m1", seen_ago=3.0), arbiter="ok")}, **etcd(failsafe=True)),
     Act.START, "master m1", None),
    ("failsafe off: no wait", inputs(views={"m1": attrs.evolve(silent("m1", seen_ago=3.0), arbiter="unreachable")},
                                     **etcd()), Act.START, "master m1", None),
    ("no arbiter: a 0.5 service ignores the key", inputs(views={"m1": peer("m1", FAIL)}, key=ArbiterView(held=False)),
     Act.START, "master m1 down", None),
]


@pytest.mark.parametrize(("inp", "act", "note", "check"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_gate_table(inp: Inputs, act: Act, note: str, check: Callable[[Verdict], bool] | None) -> None:
    v = evaluate(inp)
    assert v.act is act, v
    assert note in v.note, v
    assert check is None or check(v), v


def test_waits_keep_the_memory() -> None:
    """A run that waits before the rule leaves what the runs remember as it was."""
    for inp in (inputs(unheard_masters=("m1",)), inputs(views={"m1": peer("m1", status=UNKNOWN)}),
                inputs(views={"m1": peer("m1", error="DENIED: x")}),
                inputs(deciding_since=NOW.monotonic, views={"m1": peer("m1", lease=None, leased=False)})):
        assert evaluate(attrs.evolve(inp, memory=UNCHANGED)).memory is UNCHANGED


def test_asking_then_answering_is_one_decision() -> None:
    """The engine's round trip: ASK, run the tie-breaker, evaluate again with its answer."""
    inp = inputs(**TB, views={"m1": silent("m1")})
    first = evaluate(inp)
    assert first.act is Act.ASK and first.memory == inp.memory
    assert evaluate(attrs.evolve(inp, tiebreaker=Answer(True, "check passed"))).act is Act.START
    no = evaluate(attrs.evolve(inp, tiebreaker=Answer(False, "tiebreaker procedure failed")))
    assert no.act is Act.WAIT and no.memory.guard_refused == NOW.monotonic
    later = attrs.evolve(inp, memory=no.memory, now=Now(NOW.monotonic + 1, NOW.wall + 1))
    assert evaluate(later).act is Act.ASK  # asked again at the next run
    assert evaluate(attrs.evolve(later, tiebreaker=Answer(True, "check passed"))).act is Act.WAIT
    after = attrs.evolve(later, now=Now(NOW.monotonic + DEADTIME + 0.1, NOW.wall + 3),
                         tiebreaker=Answer(True, "check passed"))
    assert evaluate(after).act is Act.START


def test_suppose_applies_states_on_top() -> None:
    """whatif: hypothetical states replace the live views of the hosts named, nothing else."""
    live = inputs(slaves=("s",), views={"m1": peer("m1", State.UP), "s": peer("s", status=UNKNOWN)})
    assert evaluate(live).note == "wait: no answer yet from s"
    assert evaluate(suppose(live, states={"s": RECOVER})).note == "wait: master m1 is UP"
    assert evaluate(suppose(live, states={"m1": FAIL, "s": FAIL})).act is Act.START
    down = suppose(live, State.UP, {"m1": None, "s": RECOVER})
    assert down.views["m1"].status == DOWN and down.local is State.UP
    assert evaluate(down).note == "none: UP and no master is ready"
    assert live.views["m1"].state_of("web") is State.UP  # the live inputs are left alone
    guarded = suppose(inputs(**TB), states={"m1": None})
    assert evaluate(guarded).act is Act.ASK
    assert evaluate(suppose(inputs(**TB), states={"m1": FAIL})).act is Act.START  # it answers: no guard


def test_inputs_are_not_changed() -> None:
    inp = inputs(State.UP, masters=(), slaves=("s",), announce="garp", memory=WAS_UP)
    before = attrs.asdict(inp, recurse=False)
    evaluate(inp)
    assert attrs.asdict(inp, recurse=False) == before and inp.memory == WAS_UP


def at(after: float = math.inf, wall_after: float = math.inf) -> Now:
    """recheck_at ``after`` seconds (monotonic) or ``wall_after`` seconds (wall) from NOW."""
    return Now(NOW.monotonic + after, NOW.wall + wall_after)


RECHECKS: list[tuple[str, Inputs, Now]] = [
    ("waiting for a master: only a change", inputs(), NEVER),
    ("UP, nothing to do: only a change", inputs(State.UP, views={"m1": peer("m1", FAIL)}), NEVER),
    ("a check runs anyway: only a change", inputs(State.UP, check="pidof httpd", views={"m1": peer("m1", FAIL)}),
     NEVER),
    ("paused", inputs(me=peer("me", paused="web")), NEVER),
    ("no answer yet from a peer", inputs(views={"m1": peer("m1", status=UNKNOWN)}), NEVER),
    ("an act: again at the next run", inputs(views={"m1": peer("m1", FAIL)}), ALWAYS),
    ("a stop: again", inputs(State.UP, views={"m1": peer("m1", State.UP)}), ALWAYS),
    ("the tie-breaker asked", inputs(**TB, views={"m1": silent("m1")}), ALWAYS),
    ("the tie-breaker said no", inputs(**TB, views={"m1": silent("m1")}, answer=Answer(False, "no")), ALWAYS),
    ("witnesses refuse: their replies move on", inputs(**W2, views={"m1": silent("m1"), "w1": silent("w1", was=None),
                                                                     "w2": silent("w2", was=None)}), ALWAYS),
    ("the guard agrees again", inputs(**W2, memory=Memory(guard_refused=NOW.monotonic - 1),
                                      views={"m1": silent("m1"), "w1": peer("w1", None), "w2": peer("w2", None)}),
     ALWAYS),
    ("grace at our start ends", inputs(deciding_since=NOW.monotonic - 1,
                                       views={"m1": peer("m1", lease=None, leased=False)}), at(1.5)),
    ("grace after its faild restarted ends", inputs(views={"m1": peer("m1", lease=None, leased=False,
                                                                     restarted_ago=1)}), at(1.5)),
    ("a new FAIL's reclaim (wall clock)", inputs(FAIL, reclaim="fix", interval=2.0, last_change=NOW.wall - 1),
     at(wall_after=3)),
    ("hold-down ends (wall clock)", inputs(State.UP, holddown=30.0, last_change=NOW.wall - 10,
                                           views={"m1": peer("m1", State.UP)}), at(wall_after=20)),
    ("hold-down over: the hand-back acts", inputs(State.UP, holddown=30.0, last_change=NOW.wall - 31,
                                                  views={"m1": peer("m1", State.UP)}), ALWAYS),
    ("failback delay ends", inputs(State.UP, failback="delay", failback_delay=30.0,
                                   memory=Memory(ready_since={"m1": NOW.monotonic - 10})), at(20)),
    ("failback delay, first seen ready now", inputs(State.UP, failback="delay", failback_delay=30.0), at(30)),
    ("a holder change leaves the flap window", inputs(State.UP, views={"m1": peer("m1", FAIL)},
                                                      memory=Memory(holder="me", moves=(NOW.monotonic - 100,))),
     at(200)),
    ("flap protection off: no window", inputs(State.UP, flap_count=0, views={"m1": peer("m1", FAIL)},
                                              memory=Memory(holder="me", moves=(NOW.monotonic - 100,))), NEVER),
    ("UP with an announce script: run within half a lease", inputs(State.UP, masters=(), slaves=("s",),
                                                                   announce="garp"), at(TTL / 2)),
    ("hold-down, then failback delay", inputs(State.UP, holddown=30.0, last_change=NOW.wall - 10, failback="delay",
                                         failback_delay=30.0, views={"m1": peer("m1", State.UP)}),
     at(30, 20)),  # the hold-down ends first (wall), then the failback delay (monotonic)
    ("hold-down and announce", inputs(State.UP, masters=(), slaves=("s",), announce="garp", holddown=30.0,
                                      last_change=NOW.wall - 10), at(TTL / 2, 20)),
]


@pytest.mark.parametrize(("inp", "want"), [c[1:] for c in RECHECKS], ids=[c[0] for c in RECHECKS])
def test_recheck_table(inp: Inputs, want: Now) -> None:
    assert evaluate(inp).recheck_at == want


@pytest.mark.parametrize("inp", [c[1] for c in CASES + [(r[0], r[1], Act.NONE, "", None) for r in RECHECKS]],
                         ids=[c[0] for c in CASES] + [r[0] for r in RECHECKS])
def test_same_inputs_same_verdict_until_recheck(inp: Inputs) -> None:
    """What makes a skipped run right: the same inputs, with the memory the last run left,
    give the same verdict up to just before recheck_at, and nothing to log or announce."""
    first = evaluate(inp)
    if first.recheck_at == ALWAYS:
        return
    until = min(first.recheck_at.monotonic - NOW.monotonic, first.recheck_at.wall - NOW.wall, 3600.0) - 0.01
    for dt in (0.0, until / 2, until):
        again = evaluate(attrs.evolve(inp, memory=first.memory, now=Now(NOW.monotonic + dt, NOW.wall + dt)))
        assert (again.act, again.note, again.level) == (first.act, first.note, first.level), dt
        assert again.announce == () and again.events == (), dt


def test_the_holder_change_a_start_makes_counts_at_once() -> None:
    """A start held for less than an interval (a failc FAIL right after it) still counts:
    the runner hands the state its act left to settled()."""
    inp = inputs(views={"m1": peer("m1", FAIL)}, node="me", flap_count=2,
                 memory=Memory(holder="m1", moves=(NOW.monotonic - 20, NOW.monotonic - 10)))
    verdict = evaluate(inp)
    assert verdict.act is Act.START and verdict.memory.holder == "m1"
    memory, events = settled(inp, verdict.memory, State.UP)
    assert memory.holder == "me" and memory.flapping and len(memory.moves) == 3
    assert events[0][1].startswith("flapping: changed holder 3 times within 5 min (more than 2)")
    assert settled(inp, verdict.memory, RECOVER) == (verdict.memory, ())  # a start that failed: no change
