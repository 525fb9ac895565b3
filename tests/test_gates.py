"""The whole decision of one service run (failover/shell/gates.py) as a table: every gate
between the peers' views and the 0.5 rule, in milliseconds, without a process.

Each row: the local state, the service (masters m1 and m2 where named, slave s), the
peers' views, what the runs remember, other inputs; then the act, a piece of the note
(the decision line failsh shows) and, where it matters, what must be remembered or
re-announced.  The rule itself has its own table in tests/test_decide.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from failover.model import ServiceRecord
from failover.shell.gates import STALLED, Act, Answer, Inputs, Memory, Now, Seen, Verdict, evaluate, suppose
from failover.shell.policy import ServiceConfig
from failover.shell.view import DOWN, UNKNOWN, UP, PeerView
from failover.states import State

pytestmark = pytest.mark.fast

RECOVER, FAIL = State.RECOVER, State.FAIL
NOW = Now(monotonic=5000.0, wall=1_700_000_000.0)
DEADTIME = 2.5
INTERVAL = 1.0
TTL = 2.5


def peer(name: str, state: State | None = RECOVER, status: str = UP, lease: float | None = 2.0,
         leased: bool = True, error: str = "", seen_ago: float = 0.1, restarted_ago: float | None = None,
         counter: int = 7) -> PeerView:
    """A host as the network thread sees it: its faild answers (UP) with ``state`` for web."""
    services = {} if state is None else {"web": ServiceRecord("web", state, NOW.wall - 100, counter)}
    return PeerView(name, f"tcp://{name}:1847", status=status, last_seen=NOW.wall - seen_ago,
                    lease=lease, leased=leased, error=error, services=services,
                    restarted=None if restarted_ago is None else NOW.monotonic - restarted_ago)


def silent(name: str, seen_ago: float = 5.0, was: State | None = State.UP) -> PeerView:
    """A host whose faild has not answered for its dead time (DOWN)."""
    return attrs.evolve(peer(name, was, seen_ago=seen_ago), status=DOWN, error="no reply")


def inputs(local: State = RECOVER, masters: tuple[str, ...] = ("m1",), slaves: tuple[str, ...] = (),
           views: dict[str, PeerView] | None = None, memory: Memory | None = None, **kw: Any) -> Inputs:
    svc_fields = {k: kw.pop(k) for k in ("check", "reclaim", "holddown", "witnesses", "quorum", "tiebreaker",
                                         "announce") if k in kw}
    svc = ServiceConfig("web", masters=list(masters), slaves=list(slaves), **svc_fields)
    hosts = svc.polled()
    if "answer" in kw:
        kw["tiebreaker"] = kw.pop("answer")
    if views is None:
        views = {h: peer(h) for h in hosts}
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
     Act.START, "master m1 down and no slave is UP", refused_at(None)),
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
