"""The whole decision of one service run, free of I/O.

failsh's engine gathers what one run needs into :class:`Inputs` (the peers' views, the
local state, the service's config, what it remembers from earlier runs, the time) and
acts on the :class:`Verdict` that :func:`evaluate` returns.  Between the peers' views
and the master/slave rule of failover 0.5 (decide.py) stand the gates, in this order:

1. the local faild does not answer: stop an UP service, the peers will take over;
2. no lease yet while a master has not answered (docs/failsh.md, "Start-up");
3. a peer that has not answered even once, or whose faild refuses our poll: wait;
4. grace for a master whose faild answers but whose failsh holds no lease yet;
5. the rule (decide.py), then hold-down before handing back, and the split-brain guard
   before taking over from a silent master: witnesses (quorum), the tie-breaker, and one
   dead time after the guard said no;
6. yield detection: while UP here, did another host hold the service too (re-announce)?

No clock, socket, Tcl or logging call in here: ``now`` is an input, the tie-breaker is
asked for (:attr:`Act.ASK`) and its answer comes back in a second call, and what the
engine must remember comes back as a new :class:`Memory`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping

import attrs

from failover.model import ServiceRecord
from failover.shell.decide import Action, Decision, decide
from failover.shell.policy import ServiceConfig
from failover.shell.view import DOWN, UNKNOWN, UP, PeerView
from failover.states import State

STALLED = "(this failsh was stalled)"  # in Verdict.announce: no peer to name, this failsh itself


class Act(enum.StrEnum):
    START = "start"        # run the start procedure
    STOP = "stop"          # run the stop procedure
    RECLAIM = "reclaim"    # run the reclaim procedure
    CHECK = "check"        # UP and staying UP: run the check procedure
    NONE = "none"          # nothing to do
    WAIT = "wait"          # not allowed to act yet (the reason says why)
    ASK = "ask"            # run the tie-breaker, then evaluate again with its answer


_RULE_ACTS = {Action.START: Act.START, Action.STOP: Act.STOP, Action.RECLAIM: Act.RECLAIM,
              Action.NONE: Act.NONE, Action.WAIT: Act.WAIT}


@attrs.frozen
class Now:
    monotonic: float  # time.monotonic(): dead times, grace, guard, stalls
    wall: float       # time.time(): the peers' last_seen, the local last change


@attrs.frozen
class Seen:
    """One host as a run saw it while the service was UP here (yield detection)."""

    status: str
    state: State | None
    counter: int | None


@attrs.frozen
class Memory:
    """What a service's runs remember of each other."""

    seen_at: float | None = None                        # monotonic time of the last run while UP here
    seen: Mapping[str, Seen] = attrs.field(factory=dict)  # the peers at that run
    guard_refused: float | None = None                  # monotonic time the split-brain guard last said no


@attrs.frozen
class Answer:
    """The tie-breaker's answer: yes (it returned UP or true) or no, and why."""

    yes: bool
    why: str


@attrs.frozen
class Inputs:
    service: ServiceConfig
    local: State                        # the local state, after following changes made with failc
    views: Mapping[str, PeerView]       # the network thread's snapshot: peers and witnesses
    memory: Memory
    now: Now
    deadtimes: Mapping[str, float]      # host -> its dead time (masters at least)
    intervals: Mapping[str, float]      # host -> how often it is polled (masters at least)
    lease_ttl: float                    # this failsh's lease: a longer pause between runs is a stall
    deciding_since: float               # monotonic time this failsh began deciding (its first "schedule on")
    last_change: float                  # wall time of the local state's last change
    local_faild_down: bool = False      # the local faild has not answered for its dead time
    unheard_masters: tuple[str, ...] = ()  # no lease yet: these masters (of any service) are not heard
    tiebreaker: Answer | None = None    # the tie-breaker's answer, once Act.ASK was returned


@attrs.frozen
class Verdict:
    act: Act
    reason: str                   # act: why (the transition's reason starts with it); wait: why not
    note: str                     # the decision line failsh shows (log, dump, failmon, whatif)
    memory: Memory                # what to remember for the next run
    level: int = logging.DEBUG    # log level of the note
    announce: tuple[str, ...] = ()  # re-announce, if still UP after the act: these hosts may have held it too

    def __str__(self) -> str:
        return self.note


def _wait(inp: Inputs, why: str, level: int = logging.DEBUG) -> Verdict:
    return Verdict(Act.WAIT, why, f"wait: {why}", inp.memory, level)


def evaluate(inp: Inputs) -> Verdict:
    """What one run of ``inp.service`` does now (see the module's docstring)."""
    name, svc = inp.service.name, inp.service
    if inp.local_faild_down:
        why = "local faild does not answer: peers will count this host as FAIL"
        if inp.local is State.UP:
            return Verdict(Act.STOP, "local faild unreachable, peers will take over", why, inp.memory)
        return Verdict(Act.WAIT, why, why, inp.memory)
    if inp.unheard_masters:
        return _wait(inp, f"no lease yet, master {', '.join(inp.unheard_masters)} not heard")
    views: dict[str, PeerView] = {}
    for h in svc.peers():
        view = inp.views.get(h)
        if view is not None and view.status != UNKNOWN:
            views[h] = view
    unknown = sorted(h for h in svc.peers() if h not in views)
    if unknown:
        return _wait(inp, f"no answer yet from {', '.join(unknown)}")
    refused = sorted(h for h, v in views.items() if v.status == UP and v.error)
    if refused:  # a faild that answers but refuses (community): its state is unknown, not FAIL
        return _wait(inp, f"{', '.join(refused)} refused our poll ({views[refused[0]].error})")
    if inp.local is not State.UP:
        young = _grace(inp, views)
        if young:
            return _wait(inp, f"grace for master {', '.join(young)} (faild answers, no failsh lease yet)")
    masters = {h: views[h].state_of(name) for h in svc.masters}
    slaves = {h: views[h].state_of(name) for h in svc.slaves}
    yielded, memory = _yielded(inp, views, {**masters, **slaves})
    decision = decide(inp.local, masters, slaves, bool(svc.reclaim))
    hold = _holddown(inp, decision)
    if not hold:
        guard = _guard(inp, decision, views, memory)
        if guard is None:
            silent = ", ".join(_silent(inp, views))
            return Verdict(Act.ASK, decision.reason, f"ask: would ask the tie-breaker (master {silent} silent; "
                                                     f"rule said {decision})", inp.memory)
        memory, hold = guard
    if hold:
        return Verdict(Act.WAIT, hold, f"wait: {hold} (rule said {decision})", memory, logging.WARNING)
    act = _RULE_ACTS[decision.action]
    if act is Act.NONE and inp.local is State.UP and svc.check:
        act = Act.CHECK
    return Verdict(act, decision.reason, str(decision), memory,
                   announce=tuple(yielded) if svc.announce else ())


def _grace(inp: Inputs, views: Mapping[str, PeerView]) -> list[str]:
    """Masters whose faild answers but whose failsh has no lease yet, given one dead time:
    it may be starting with us (a cluster boot), or its faild just restarted and its failsh
    has not renewed the lease yet.  Not if that faild showed a lease before: then its
    failsh stopped (or died)."""
    now = inp.now.monotonic

    def young(view: PeerView, deadtime: float) -> bool:
        return now - inp.deciding_since < deadtime or (view.restarted is not None
                                                       and now - view.restarted < deadtime)
    return sorted(h for h in inp.service.masters if views[h].status == UP and views[h].lease is None
                  and not views[h].leased and young(views[h], inp.deadtimes[h]))


def _yielded(inp: Inputs, views: Mapping[str, PeerView],
             states: Mapping[str, State | None]) -> tuple[list[str], Memory]:
    """Why another host may have held the service while this one did: hosts seen UP
    that no longer are, hosts whose record changed between two runs and is not UP now
    (UP and back between our polls: a short partition, healed before either side counted
    the other FAIL), hosts we could not hear that answer again (a healed partition), or
    this failsh itself was stalled (SIGSTOP) past its lease.

    Tracked only while UP here: a host that starts now announces in its start script.
    """
    before = inp.memory
    if inp.local is not State.UP:
        return [], attrs.evolve(before, seen_at=None, seen={})
    now = inp.now.monotonic
    seen = {h: Seen(views[h].status, states[h], views[h].counter_of(inp.service.name)) for h in states}
    memory = attrs.evolve(before, seen_at=now, seen=seen)
    if before.seen_at is None:
        return [], memory
    if now - before.seen_at > inp.lease_ttl:
        return [STALLED], memory
    return sorted(h for h, old in before.seen.items() if h in seen and (
        (seen[h].state is not State.UP and (old.state is State.UP or old.counter != seen[h].counter))
        or (old.status == DOWN and seen[h].status == UP))), memory


def _silent(inp: Inputs, views: Mapping[str, PeerView]) -> list[str]:
    return sorted(h for h in inp.service.masters if views[h].status == DOWN)


def _holddown(inp: Inputs, decision: Decision) -> str:
    """Why a STOP the rule wants must wait: the service has not been UP for its hold-down."""
    svc = inp.service
    if decision.action is Action.STOP and svc.holddown and inp.now.wall - inp.last_change < svc.holddown:
        return f"hold-down: handing back once UP for {svc.holddown:g} s"
    return ""


def _guard(inp: Inputs, decision: Decision, views: Mapping[str, PeerView],
           memory: Memory) -> tuple[Memory, str] | None:
    """The split-brain guard: why a START from a silent master must wait ("" if it need
    not), with the memory to keep; None if the tie-breaker must answer first."""
    svc = inp.service
    silent = _silent(inp, views)
    if decision.action is not Action.START or not silent:
        return attrs.evolve(memory, guard_refused=None), ""  # the guard is for taking over from a silent master
    refusal = ""
    if svc.witnesses:
        # A witness counts only if it answered after the master missed a reply: when this
        # host is the one cut off, master and witnesses fall silent together, and a
        # witness whose dead time has not run out yet proves nothing.
        since = max((views[h].last_seen or 0.0) + inp.intervals[h] for h in silent)
        seen = [w for w in svc.witnesses if (v := inp.views.get(w)) is not None
                and v.status == UP and (v.last_seen or 0.0) > since]
        if len(seen) < svc.needed_witnesses():
            refusal = (f"split-brain guard: master {', '.join(silent)} silent but only {len(seen)} of "
                       f"{len(svc.witnesses)} witnesses reachable (need {svc.needed_witnesses()})")
    if not refusal and svc.tiebreaker:
        if inp.tiebreaker is None:
            return None
        if not inp.tiebreaker.yes:
            refusal = f"split-brain guard: tie-breaker said no ({inp.tiebreaker.why})"
    now = inp.now.monotonic
    if refusal:
        return attrs.evolve(memory, guard_refused=now), refusal
    # A yes right after a no proves little: this host may just have come back (link up)
    # and reach a witness or the tie-breaker's target before its master's next poll is
    # answered.  Give the master one dead time to answer first.
    wait = max(inp.deadtimes[h] for h in silent)
    if memory.guard_refused is not None and now - memory.guard_refused < wait:
        return memory, f"split-brain guard: agrees again; giving master {', '.join(silent)} {wait:g} s to answer"
    return memory, ""


def suppose(inp: Inputs, local: State | None = None, states: Mapping[str, State | None] | None = None) -> Inputs:
    """``inp`` with hypothetical states on top (whatif): the local state, and per host a
    state its faild answers with (its failsh holding a lease), or None for a host whose
    faild does not answer (DOWN: silent for its dead time)."""
    views = dict(inp.views)
    for host, state in (states or {}).items():
        old = views.get(host) or PeerView(host, "")
        if state is None:
            views[host] = attrs.evolve(old, status=DOWN, error="no reply")
            continue
        rec = old.services.get(inp.service.name)
        services = {**old.services, inp.service.name: ServiceRecord(
            inp.service.name, state, inp.now.wall, rec.counter if rec else 0)}
        views[host] = attrs.evolve(old, status=UP, error="", lease=old.lease or inp.lease_ttl, leased=True,
                                   last_seen=inp.now.wall, services=services)
    return attrs.evolve(inp, local=inp.local if local is None else local, views=views)
