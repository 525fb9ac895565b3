"""The decision rule of failover 0.5 (reference §3.3) as a table: one row per case.

Columns: local state, masters' states, slaves' states, has a reclaim procedure,
expected action, and a word the reason must contain.  ``None`` is a host that did not
answer (or has no failsh lease): it counts as FAIL.
"""

from __future__ import annotations

import pytest

from failover.shell.decide import Action, Decision, decide
from failover.states import State

pytestmark = pytest.mark.fast

UP, RECOVER, FAIL = State.UP, State.RECOVER, State.FAIL

CASES = [
    # rule 1: a master that is UP or RECOVER keeps the local service down
    ("master UP, local RECOVER waits", RECOVER, {"m": UP}, {}, True, Action.WAIT, "master m is UP"),
    ("master RECOVER, local RECOVER waits", RECOVER, {"m": RECOVER}, {}, True, Action.WAIT, "master m is RECOVER"),
    ("master UP, local UP hands back", UP, {"m": UP}, {}, True, Action.STOP, "handing back"),
    ("master RECOVER, local UP hands back", UP, {"m": RECOVER}, {}, True, Action.STOP, "handing back"),
    ("one of two masters ready is enough", RECOVER, {"m1": FAIL, "m2": RECOVER}, {}, True, Action.WAIT, "m2"),
    ("one of two masters ready stops UP", UP, {"m1": None, "m2": UP}, {}, True, Action.STOP, "m2"),
    ("master ready beats a slave's state", RECOVER, {"m": UP}, {"s": UP}, True, Action.WAIT, "master m"),
    # rule 2: no master ready: start, unless a slave is still UP
    ("master FAIL, no slaves: start", RECOVER, {"m": FAIL}, {}, True, Action.START, "master m down"),
    ("master unreachable, no slaves: start", RECOVER, {"m": None}, {}, True, Action.START, "master m down"),
    ("all masters down: start", RECOVER, {"m1": FAIL, "m2": None}, {}, True, Action.START, "m1, m2 down"),
    ("no masters at all: start", RECOVER, {}, {}, True, Action.START, "no masters"),
    ("no masters, slaves RECOVER: start", RECOVER, {}, {"s": RECOVER}, True, Action.START, "no slave is UP"),
    ("no masters, slaves FAIL/unreachable: start", RECOVER, {}, {"s1": FAIL, "s2": None}, True,
     Action.START, "no slave is UP"),
    # rules 3-4: a slave still UP must yield first (it sees us in RECOVER)
    ("slave UP: wait for it to yield", RECOVER, {}, {"s": UP}, True, Action.WAIT, "slave s"),
    ("master down and slave UP: wait", RECOVER, {"m": None}, {"s": UP}, True, Action.WAIT, "slave s to yield"),
    ("one of two slaves UP: wait", RECOVER, {}, {"s1": RECOVER, "s2": UP}, True, Action.WAIT, "s2"),
    # UP with no master ready stays UP, whatever the slaves do
    ("UP, master down: stay", UP, {"m": FAIL}, {}, True, Action.NONE, "no master is ready"),
    ("UP, no masters, slave UP: stay (the slave yields)", UP, {}, {"s": UP}, True, Action.NONE, "UP"),
    ("UP, no peers: stay", UP, {}, {}, False, Action.NONE, "UP"),
    # FAIL: reclaim if there is a procedure, else stay FAIL
    ("FAIL with reclaim", FAIL, {}, {}, True, Action.RECLAIM, "reclaim"),
    ("FAIL with reclaim, master UP", FAIL, {"m": UP}, {}, True, Action.RECLAIM, "reclaim"),
    ("FAIL without reclaim", FAIL, {"m": None}, {}, False, Action.NONE, "no reclaim procedure"),
    ("FAIL without reclaim, nobody UP", FAIL, {}, {"s": RECOVER}, False, Action.NONE, "FAIL"),
]


@pytest.mark.parametrize(("local", "masters", "slaves", "reclaim", "action", "why"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decision_table(local: State, masters: dict, slaves: dict, reclaim: bool, action: Action, why: str) -> None:
    d = decide(local, masters, slaves, reclaim)
    assert isinstance(d, Decision)
    assert d.action is action, d
    assert why in d.reason, d


def test_unreachable_and_fail_are_the_same() -> None:
    for local in State:
        for role in ("masters", "slaves"):
            a = decide(local, **{"masters": {}, "slaves": {}, role: {"h": None}})
            b = decide(local, **{"masters": {}, "slaves": {}, role: {"h": FAIL}})
            assert a == b


def test_str_is_action_and_reason() -> None:
    assert str(decide(RECOVER, {"a": FAIL, "b": None}, {})) == "start: master a, b down and no slave is UP"


def test_two_hosts_never_both_start() -> None:
    """Replay the handback step by step: the master (m) returns while the slave (s) is UP.

    Each step is one host's run, reading the other's state; at no point are both UP.
    """
    m, s = RECOVER, UP  # the master restarted (RECOVER), the slave held the service
    trace = []
    for _ in range(6):
        dm = decide(m, {}, {"s": s})          # the master: s is its slave
        m = UP if dm.action is Action.START else m
        ds = decide(s, {"m": m}, {})          # the slave: m is its master
        s = RECOVER if ds.action is Action.STOP else (UP if ds.action is Action.START else s)
        trace.append((m, s))
        assert not (m is UP and s is UP), trace
    assert trace[-1] == (UP, RECOVER)
