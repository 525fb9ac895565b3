"""The whole decision of one service run, free of I/O.

failsh's engine gathers what one run needs into :class:`Inputs` (the peers' views, the
local state, the service's config, what it remembers from earlier runs, the time) and
acts on the :class:`Verdict` that :func:`evaluate` returns.  Between the peers' views
and the master/slave rule of failover 0.5 (decide.py) stand the gates, in this order:

0. the local faild has not answered yet: wait (its maintenance flags are not known);
   maintenance: the service (or this whole host) is paused in the local faild: no action;
1. the local faild does not answer: stop an UP service, the peers will take over;
2. no lease yet while a master has not answered (docs/failsh.md, "Start-up");
3. a peer that has not answered even once, or whose faild refuses our poll: wait;
4. switchover: a target held by any host's faild heads the order (it treats every other
   host as its slave, every other host treats it as its first master);
5. grace for a master whose faild answers but whose failsh holds no lease yet;
6. a paused master: its service is not taken over, nor handed back to it while RECOVER;
7. the rule (decide.py), naming the detection that found each master down; then, before
   handing back (not to a switchover target): hold-down, the failback policy (manual,
   delay) and flap protection; before taking over from a silent master the split-brain
   guard: witnesses (quorum), the tie-breaker, and one dead time after the guard said no;
   before a reclaim: the FAIL has stood for two intervals (every peer has seen it);
8. yield detection: while UP here, did another host hold the service too (re-announce)?
9. the arbiter (a service under ``failsvc NAME arbiter etcd``): UP only while this host
   holds the service's key in etcd and its lease was renewed within 2/3 of its ttl, else
   stop (then FAIL: "lost the arbiter"); a start waits until the key is ours (the verdict
   asks the arbiter thread to claim it); no reclaim while the lease is not being renewed,
   and a RECOVER host whose lease is not being renewed turns FAIL (it is not ready).
   The failsafe (``failarbiter ... -failsafe 1``, docs/arbiter.md "Etcd entirely down"): an
   UP service whose renewal is overdue stays UP while this host cannot reach etcd and every
   other host of its lists answers, with a live failsh lease, cannot reach etcd either and
   is not UP; a start waits while another host was last seen UP without etcd, until it
   must have let go.

What runs remember (:class:`Memory`) also counts the changes of holder (flap protection)
and since when each master is ready (failback delay).

No clock, socket, Tcl or logging call in here: ``now`` is an input, the tie-breaker is
asked for (:attr:`Act.ASK`) and its answer comes back in a second call, and what the
engine must remember comes back as a new :class:`Memory`.  The verdict also says until
when the same inputs would give the same verdict (:func:`recheck`): the runner skips the
runs in between whose inputs did not change.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping

import attrs

from failover.model import PreferEntry, ServiceRecord
from failover.shell.decide import Action, Decision, decide
from failover.shell.policy import ServiceConfig
from failover.shell.view import DOWN, UNKNOWN, UP, Pause, PeerView
from failover.states import State
from failover.timefmt import local_time

STALLED = "(this failsh was stalled)"  # in Verdict.announce: no peer to name, this failsh itself
FAIL_SHOWN = 2  # intervals a FAIL stands before its reclaim: a failc FAIL is acted on at once, and a
#                reclaim that answers RECOVER at once would end it before the peers' next poll
HERE = "(this host)"  # the holder's name when the inputs do not name this node (whatif at a bare prompt)


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


NEVER = Now(math.inf, math.inf)     # only a change of the inputs can change the verdict
ALWAYS = Now(-math.inf, -math.inf)  # decide again at the next run, changed inputs or not


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
    ready_since: Mapping[str, float] = attrs.field(factory=dict)  # master -> monotonic time first seen ready
    holder: str | None = None          # the host last seen holding the service alone (flap protection)
    moves: tuple[float, ...] = ()      # monotonic times the holder changed, within the flap window
    flapping: bool = False             # said so (logged once)
    paused: Pause | None = None        # the local pause the last run saw ("resumed" is logged once)
    prefer: PreferEntry | None = None  # the switchover target the last run saw (logged once)
    failsafe: bool = False             # UP here through the arbiter's failsafe (entering and leaving logged once)
    reached: float | None = None       # monotonic time, in the failsafe, another host was first seen reach etcd


@attrs.frozen
class Answer:
    """The tie-breaker's answer: yes (it returned UP or true) or no, and why."""

    yes: bool
    why: str


LOST_AFTER = 2 / 3  # of the arbiter's ttl without a confirmed renewal: the key counts as lost
STOP_MARGIN = 0.1  # of the ttl: a lost holder's stop must end this long before its lease can expire
FAILSAFE_STOP = 1 / 3  # of the ttl: the stop of a holder that leaves the failsafe ends within this
FAILSAFE_ENTER = 0.8  # of the ttl after the last renewal: until then a holder may wait for the others to
#                      find etcd gone too (its stop then still ends before the lease can: STOP_MARGIN)
FAILSAFE_GRACE = 2 / 3  # of the ttl: in the failsafe, how long another host may reach etcd before we do
FAILSAFE_WAIT = 1 / 2  # of the ttl, plus dead time and interval: no start after seeing a failsafe holder
FAILSAFE_MARGIN = 1 / 6  # of the ttl: on top of what a failsafe holder may still take after our "ok" reached it
FAILSAFE = "failsafe: etcd unreachable for every host; staying"


@attrs.frozen
class ArbiterView:
    """One arbitrated service as the arbiter thread last knew it (shell/arbiter.py)."""

    key: str = ""                   # the service's etcd key
    ttl: float = 0.0                # of the lease
    held: bool = False              # the key is ours, bound to our live lease
    renewed: float = float("-inf")  # monotonic time the last confirmed renewal was sent
    token: int = 0                  # our key's create_revision: the fencing token
    holder: str = ""                # the host that holds the key, when it is not us
    error: str = ""                 # the last call's error ("" once etcd answers again)
    failsafe: bool = False          # failarbiter -failsafe: stay UP while etcd is down for every host
    reached: float = float("-inf")  # monotonic time etcd last began to answer this failsh ("ok")

    def lost_at(self) -> float:
        """From this monotonic time on the key counts as lost: the stop must run now."""
        return self.renewed + self.ttl * LOST_AFTER

    def stop_by(self) -> float:
        """A lost holder's stop must have ended by then: the lease cannot expire earlier."""
        return self.renewed + self.ttl * (1 - STOP_MARGIN)

    def holds(self, now: float) -> bool:
        return self.held and now < self.lost_at()

    def enter_by(self) -> float:
        """Until then a lost holder may wait for the others to find etcd gone (the failsafe)."""
        return self.renewed + self.ttl * FAILSAFE_ENTER


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
    node: str = ""                      # this host: views[node] is the local faild (pause, switchover)
    local_unheard: bool = False         # the local faild has not answered yet since failsh started
    arbiter: ArbiterView | None = None  # an arbitrated service: its key in etcd (None: no word yet)


@attrs.frozen
class Verdict:
    act: Act
    reason: str                   # act: why (the transition's reason starts with it); wait: why not
    note: str                     # the decision line failsh shows (log, dump, failmon, whatif)
    memory: Memory                # what to remember for the next run
    level: int = logging.DEBUG    # log level of the note
    announce: tuple[str, ...] = ()  # re-announce, if still UP after the act: these hosts may have held it too
    events: tuple[tuple[int, str], ...] = ()  # (level, line) to log once: pause over, switchover, flapping
    cause: str = ""               # a start: the detection that fired, as the metrics' label
    arbiter: str = ""             # "claim": a start waits for the arbiter's key; "lost": stop, then FAIL;
    #                               "unready": RECOVER without a renewed lease: set FAIL
    recheck_at: Now = NEVER       # until then the same inputs give the same verdict (recheck())

    def __str__(self) -> str:
        return self.note


def _wait(inp: Inputs, why: str, level: int = logging.DEBUG) -> Verdict:
    return Verdict(Act.WAIT, why, f"wait: {why}", inp.memory, level)


def evaluate(inp: Inputs) -> Verdict:
    """What one run of ``inp.service`` does now (see the module's docstring)."""
    name = inp.service.name
    if inp.local_unheard:  # its maintenance flags (and external changes) are not known yet
        return _wait(inp, "no answer yet from the local faild")
    me = inp.views.get(inp.node) if inp.node else None
    pause = me.pause_of(name) if me is not None else None
    events: tuple[tuple[int, str], ...] = ()
    if pause != inp.memory.paused:
        if pause is None and inp.memory.paused is not None:
            events = ((logging.INFO, f"resumed: {pause_text(inp.memory.paused)} is over; the rule applies again"),)
        inp = attrs.evolve(inp, memory=attrs.evolve(inp.memory, paused=pause))
    if pause is not None:  # maintenance: no action at all, whatever the peers do
        note = f"paused: {pause_text(pause)}"
        return Verdict(Act.NONE, note, note, inp.memory, logging.INFO, events=events)
    verdict = _arbitrate(inp, _evaluate(inp))
    return attrs.evolve(verdict, events=events + verdict.events, recheck_at=recheck(inp, verdict))


def recheck(inp: Inputs, verdict: Verdict) -> Now:
    """The earliest time (monotonic or wall) at which a run on the same inputs (its memory
    being ``verdict.memory``) could decide otherwise: a clock-driven gate running out.

    ALWAYS after an act (its procedure may have left the state as it was: try again), the
    tie-breaker's answer, an arbitrated service, or while the split-brain guard may be asked (the witnesses'
    last replies and the time since a master fell silent move on every poll).  Otherwise
    the soonest of: the grace of a master without a lease, a FAIL's wait for its reclaim, the hold-down, the failback
    delay, the oldest holder change leaving the flap window, and half a lease after this
    run while UP with an announce script (yield detection takes a longer gap between two
    runs for a stall of this failsh).  Deadlines already past decide nothing any more.
    """
    svc, now, memory = inp.service, inp.now, verdict.memory
    if verdict.act not in (Act.NONE, Act.WAIT, Act.CHECK) or inp.tiebreaker is not None or svc.arbiter:
        return ALWAYS  # the arbiter's renewals move its deadlines on every run
    peers = [v for h in svc.peers() if (v := inp.views.get(h)) is not None]
    guarded = svc.witnesses or svc.tiebreaker or memory.guard_refused is not None
    if inp.local is State.RECOVER and guarded and any(v.status == DOWN for v in peers):
        return ALWAYS
    mono: list[float] = []
    wall: list[float] = []
    if inp.local is not State.UP:
        for v in peers:
            if v.status == UP and v.lease is None and not v.leased and v.name in inp.deadtimes:
                mono += [since + inp.deadtimes[v.name] for since in (inp.deciding_since, v.restarted)
                         if since is not None]
    if svc.flap_count and memory.moves:
        mono.append(min(memory.moves) + svc.flap_minutes * 60)
    if svc.failback == "delay":
        mono += [since + svc.failback_delay for since in memory.ready_since.values()]
    if inp.local is State.FAIL and svc.reclaim:
        wall.append(inp.last_change + FAIL_SHOWN * svc.interval)
    if inp.local is State.UP:
        if svc.holddown:
            wall.append(inp.last_change + svc.holddown)
        if svc.announce and memory.seen_at is not None:
            mono.append(memory.seen_at + inp.lease_ttl / 2)
    return Now(min((t for t in mono if t > now.monotonic), default=math.inf),
               min((t for t in wall if t > now.wall), default=math.inf))


def _evaluate(inp: Inputs) -> Verdict:
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
    prefer, seen, events = _switchover(inp)
    if prefer is not None:  # the switchover target heads the order: every host decides on that order
        svc = _ordered(svc, prefer.host, inp.node)
        inp = attrs.evolve(inp, service=svc)
    if seen != inp.memory.prefer:
        inp = attrs.evolve(inp, memory=attrs.evolve(inp.memory, prefer=seen))
    if inp.local is not State.UP:
        young = _grace(inp, views)
        if young:
            return attrs.evolve(_wait(inp, f"grace for master {', '.join(young)} (faild answers, no failsh lease yet)"),
                                events=events)
    masters = {h: counted(views[h], name) for h in svc.masters}
    slaves = {h: counted(views[h], name) for h in svc.slaves}
    memory, tracked = _track(inp, views, inp.memory)
    events += tracked
    yielded, memory = _yielded(inp, views, {**masters, **slaves}, memory)
    paused = {h: p for h in svc.masters if (p := views[h].pause_of(name)) is not None}
    if paused and inp.local is State.RECOVER:  # a paused host's service is not taken over
        first = sorted(paused)[0]
        why = f"master {', '.join(sorted(paused))} is paused: {pause_text(paused[first])}; not taking over"
        return Verdict(Act.WAIT, why, f"wait: {why}", memory, events=events)
    # a paused master that is only RECOVER will not start: not handed back to
    held = sorted(h for h in paused if masters[h] is State.RECOVER)
    rule_masters = {h: None if h in held else s for h, s in masters.items()}
    why_down = {h: _down_why(views[h], name, inp.now.wall) for h, s in masters.items() if s in (State.FAIL, None)}
    decision = decide(inp.local, rule_masters, slaves, bool(svc.reclaim), why_down)
    if decision.action is Action.NONE and inp.local is State.UP and held:
        decision = Decision(Action.NONE, f"UP; master {', '.join(held)} is paused: not handing back")
    ready = sorted(h for h, s in rule_masters.items() if s in (State.UP, State.RECOVER))
    switch = prefer is not None and (prefer.host == inp.node or prefer.host in ready)
    if decision.action is Action.WAIT and not ready and not switch:
        decision = Decision(Action.WAIT, _holding_slave(inp, views, memory, decision.reason, slaves))
    reason = decision.reason
    if switch and decision.action in (Action.START, Action.STOP):
        assert prefer is not None
        reason = f"switchover to {prefer.host} {prefer_text(prefer)}; {reason}"
    hold, level = "", logging.WARNING
    if decision.action is Action.RECLAIM and inp.now.wall - inp.last_change < FAIL_SHOWN * svc.interval:
        hold, level = f"FAIL: the reclaim runs once it has stood {FAIL_SHOWN * svc.interval:g} s " \
                      f"({FAIL_SHOWN} intervals: the peers see it)", logging.DEBUG
    if decision.action is Action.STOP and not switch:  # an admin's switchover overrides these
        hold = _holddown(inp, decision)
        if not hold:
            hold, level = _failback(inp, memory, ready, rule_masters), logging.INFO
        if not hold and memory.flapping and not any(rule_masters[h] is State.UP for h in ready):
            hold, level = f"flapping: held here (more than {svc.flap_count} holder changes within " \
                          f"{svc.flap_minutes:g} min)", logging.DEBUG
    if not hold:
        guard = _guard(inp, decision, views, memory)
        if guard is None:
            silent = ", ".join(_silent(inp, views))
            return Verdict(Act.ASK, reason, f"ask: would ask the tie-breaker (master {silent} silent; "
                                            f"rule said {decision})", inp.memory, events=events)
        memory, hold = guard
    if hold:
        return Verdict(Act.WAIT, hold, f"wait: {hold} (rule said {decision})", memory, level, events=events)
    act = _RULE_ACTS[decision.action]
    if act is Act.NONE and inp.local is State.UP and svc.check:
        act = Act.CHECK
    cause = ""
    if act is Act.START:
        cause = "switchover" if switch else _cause(views, name, svc.masters, rule_masters)
    note = f"{decision.action}: {reason}"
    return Verdict(act, reason, note, memory, announce=tuple(yielded) if svc.announce else (),
                   events=events, cause=cause)


def _arbitrate(inp: Inputs, verdict: Verdict) -> Verdict:
    """The arbiter's gate: the rule says who wants the service, etcd who may hold it."""
    if not inp.service.arbiter:
        return verdict
    arb, now = inp.arbiter, inp.now.monotonic
    holder = _failsafe_holder(inp, arb) if verdict.act in (Act.START, Act.ASK) else ""
    if holder:  # its key may be free: not even claimed meanwhile
        why = f"{verdict.reason}; not starting: {holder}"
        return attrs.evolve(verdict, act=Act.WAIT, reason=why, note=f"wait: {why}", announce=(), cause="",
                            level=logging.INFO)
    if arb is not None and arb.holds(now):
        return _failsafe_over(verdict, f"etcd answers again, {arb.key} is ours")
    if inp.local is State.UP:
        blocker, reached = _failsafe_blocker(inp, verdict, arb)
        memory, note = verdict.memory, f"{verdict.note}; {FAILSAFE}"
        if reached and memory.failsafe and arb is not None:
            # etcd is back for some: our own thread may be a moment behind (a timeout, a retry);
            # while the others answer and see us UP, none of them wants the service
            since = memory.reached if memory.reached is not None else now
            if now < since + arb.ttl * FAILSAFE_GRACE:
                memory = attrs.evolve(memory, reached=since)
                blocker, note = "", f"{verdict.note}; failsafe: {reached}: staying a moment to take our key again"
            else:
                blocker = f"{reached} for {now - since:.1f} s while this host still cannot"
        elif reached and arb is not None and now < arb.enter_by():
            # the others renew on their own schedule: they may find etcd gone a moment after us
            why = f"failsafe: waiting until {arb.enter_by() - now:.2f} s for {reached.split(' reach')[0]} to find " \
                  "etcd gone too"
            return attrs.evolve(verdict, note=f"{verdict.note}; {why}", level=logging.INFO, announce=())
        if not blocker:
            events = verdict.events
            if not memory.failsafe:
                events += ((logging.WARNING, f"{FAILSAFE} ({_arbiter_why(arb)}; every other host answers, "
                                             "cannot reach etcd either and is not UP)"),)
            if not reached:
                memory = attrs.evolve(memory, reached=None)
            return attrs.evolve(verdict, note=note, level=logging.INFO, events=events,
                                memory=attrs.evolve(memory, failsafe=True), announce=())
        why = f"lost the arbiter: {_arbiter_why(arb)}"
        verdict = _failsafe_over(verdict, blocker)
        return Verdict(Act.STOP, why, f"stop: {why}", verdict.memory, logging.WARNING, events=verdict.events,
                       arbiter="lost")
    verdict = _failsafe_over(verdict, f"the service is {inp.local} here")
    if inp.local is State.RECOVER and inp.service.reclaim and arb is not None and arb.error \
            and now >= arb.lost_at():
        # RECOVER tells the peers "ready": a slave would hand the service back to a host that
        # cannot take the key.  FAIL, and the reclaim brings it back once the lease is renewed.
        why = f"not ready while the arbiter cannot be reached ({_arbiter_why(arb)})"
        return Verdict(Act.WAIT, why, f"wait: {why}", verdict.memory, logging.WARNING, events=verdict.events,
                       arbiter="unready")
    if verdict.act in (Act.START, Act.ASK):
        why = f"{verdict.reason}; not starting: {_arbiter_why(arb)}"
        return attrs.evolve(verdict, act=Act.WAIT, reason=why, note=f"wait: {why}", arbiter="claim",
                            announce=(), cause="", level=logging.INFO)
    if verdict.act is Act.RECLAIM and (arb is None or arb.error or now >= arb.lost_at()):
        # FAIL tells the peers to take over; RECOVER would have them hand it back to a host
        # that cannot hold the key (its lease is not being renewed)
        why = f"not reclaiming until the arbiter answers ({_arbiter_why(arb)})"
        return attrs.evolve(verdict, act=Act.WAIT, reason=why, note=f"wait: {why}", level=logging.INFO)
    return verdict


def _failsafe_blocker(inp: Inputs, verdict: Verdict, arb: ArbiterView | None) -> tuple[str, str]:
    """Why this UP holder, whose renewal is overdue, may not stay in the failsafe ("": it
    may), and which other hosts reach etcd ("": none).  Every other host must answer now
    and say it cannot reach etcd either: then none can take the key, and while they answer
    none wants the service (its holder is UP)."""
    if arb is None or not arb.failsafe:
        return "the failsafe is off", ""
    if not arb.error and not arb.held:  # our key is gone or taken (held: a renewal is merely overdue)
        return "etcd answers here", ""
    if verdict.act not in (Act.NONE, Act.CHECK):
        return f"the rule says {verdict.act.value}", ""
    name, reached = inp.service.name, []
    for host in inp.service.peers():
        view = inp.views.get(host)
        if host == inp.node:
            continue
        if view is None or view.status != UP or view.error:
            return f"{host} does not answer", ""
        if view.lease is None:
            return f"{host} has no live failsh", ""
        if counted(view, name) is State.UP:
            return f"{host} is UP too", ""
        if view.arbiter == "ok":
            reached.append(host)
        elif view.arbiter != "unreachable":
            return f"{host} does not say whether it reaches etcd", ""
    why = f"{', '.join(reached)} {'reaches' if len(reached) == 1 else 'reach'} etcd" if reached else ""
    return why, why


def _failsafe_over(verdict: Verdict, why: str) -> Verdict:
    """Leaving the failsafe: logged once."""
    if not verdict.memory.failsafe:
        return verdict
    return attrs.evolve(verdict, memory=attrs.evolve(verdict.memory, failsafe=False, reached=None),
                        events=verdict.events + ((logging.WARNING, f"failsafe over: {why}"),))


def _failsafe_holder(inp: Inputs, arb: ArbiterView | None) -> str:
    """A start waits while another host may still hold the service through the failsafe: it
    was last seen UP and without etcd, and either (a) less than our dead time (after which
    it stops: it no longer hears us), its poll interval and half a ttl (its stop) ago, or
    (b) etcd began to answer here less than a poll interval (our "ok" reaches it), the
    grace and stop it may then still take, and a margin ago (docs/arbiter.md)."""
    if arb is None or not arb.failsafe:
        return ""
    name, now = inp.service.name, inp.now
    deadtime = inp.deadtimes.get(inp.node, max(inp.deadtimes.values(), default=0.0))  # how long it hears us
    since_ok = now.monotonic - arb.reached
    told = inp.service.interval + arb.ttl * (FAILSAFE_GRACE + FAILSAFE_STOP + FAILSAFE_MARGIN)
    for host in inp.service.peers():
        view = inp.views.get(host)
        rec = view.services.get(name) if view is not None and host != inp.node else None
        if view is None or rec is None or rec.state is not State.UP or view.arbiter != "unreachable" \
                or view.last_seen is None:
            continue
        wait = deadtime + inp.intervals.get(host, 0.0) + arb.ttl * FAILSAFE_WAIT
        age = now.wall - view.last_seen
        if age < wait:
            return f"{host} was last seen UP without etcd {age:.1f} s ago: it may hold it through the failsafe " \
                   f"for another {wait - age:.1f} s"
        if since_ok < told:
            return f"{host} was last seen UP without etcd and etcd answers here since {since_ok:.1f} s only: it " \
                   f"may hold it through the failsafe for another {told - since_ok:.1f} s"
    return ""


def _arbiter_why(arb: ArbiterView | None) -> str:
    if arb is None:
        return "no word from the arbiter yet"
    if arb.held:  # ours, but not renewed in time
        late = f"lease not renewed for {arb.ttl * LOST_AFTER:.1f} s (ttl {arb.ttl:g} s)"
        return f"{late}: {arb.error}" if arb.error else late
    if arb.error:
        return arb.error
    if arb.holder:
        return f"{arb.key} is held by {arb.holder} in etcd"
    return f"waiting for {arb.key} in etcd"


def counted(view: PeerView, service: str) -> State | None:
    """The state a run counts for a host: what its faild says with its failsh holding a
    lease (else None: FAIL); for a paused service its record as last known, lease or not,
    since maintenance leaves it where it is (its failsh may be restarting for an upgrade)."""
    if view.pause_of(service) is not None:
        rec = view.services.get(service)
        return rec.state if rec is not None else None
    return view.state_of(service)


def prefer_of(svc: ServiceConfig, views: Mapping[str, PeerView], node: str) -> PreferEntry | None:
    """The newest switchover target of ``svc`` that a faild answering now holds, among its
    hosts' and this one's."""
    found = [v.prefer[svc.name] for h in [*svc.peers(), node]
             if (v := views.get(h)) is not None and v.status == UP and svc.name in v.prefer]
    return max(found, key=lambda p: p.since, default=None)


def pause_text(p: Pause) -> str:
    """A pause as the decision line shows it: 'kernel update (by failctl from 10.0.0.9 since ...)'."""
    where = "; whole host" if p.scope == "host" else ""
    return f"{p.reason or 'no reason given'} (by {p.by or 'unknown'} since {local_time(p.since)}{where})"


def prefer_text(p: PreferEntry) -> str:
    return f"requested by {p.by or 'unknown'}" + (f": {p.reason}" if p.reason else "")


def _switchover(inp: Inputs) -> tuple[PreferEntry | None, PreferEntry | None, tuple[tuple[int, str], ...]]:
    """The switchover target of the service: the newest that any of its hosts' faild holds
    (this host's included).  Returns (the target to follow, None if there is none or it is
    not a host of the service here; the newest entry seen; what to log once)."""
    svc = inp.service
    seen = prefer_of(svc, inp.views, inp.node)
    valid = seen is not None and (seen.host == inp.node or seen.host in svc.peers())
    events: tuple[tuple[int, str], ...] = ()
    if seen != inp.memory.prefer:
        if seen is None:
            if inp.memory.prefer is not None:
                events = ((logging.INFO, f"switchover to {inp.memory.prefer.host} cleared: the policy's order "
                                         "applies again"),)
        elif not valid:
            events = ((logging.WARNING, f"switchover to {seen.host} ignored: not a master or slave of "
                                        f"{svc.name} here"),)
        else:
            events = ((logging.INFO, f"switchover to {seen.host} {prefer_text(seen)}"),)
    return (seen if valid else None), seen, events


def _ordered(svc: ServiceConfig, target: str, node: str) -> ServiceConfig:
    """The order with ``target`` on top: it treats every other host as its slave, and every
    other host treats it as a master in front of its own masters."""
    if target == node:
        return attrs.evolve(svc, masters=[], slaves=svc.masters + svc.slaves)
    return attrs.evolve(svc, masters=[target] + [m for m in svc.masters if m != target],
                        slaves=[s for s in svc.slaves if s != target])


def _down_why(view: PeerView, service: str, now: float) -> str:
    """How this host found a master down: the detection that fired."""
    return _detection(view, service, now)[1]


def _cause(views: Mapping[str, PeerView], service: str, masters: list[str],
           states: Mapping[str, State | None]) -> str:
    """The metrics' label of a start: the detection of its first master found down."""
    for h in masters:
        if states[h] in (State.FAIL, None):
            return _detection(views[h], service, 0.0)[0]
    return "no-master"


_LEASE_END = {"exited": "lease ended because the failsh process exited",
              "released": "lease ended because it was released (graceful stop)",
              "expired": "lease ended because it expired"}


def _detection(view: PeerView, service: str, now: float) -> tuple[str, str]:
    """(label, text) of why ``view``'s host counts FAIL for ``service``."""
    if view.status == DOWN:
        if view.last_seen is None:
            return "faild-silent", "faild does not answer"
        return "faild-silent", f"faild silent for {max(0.0, now - view.last_seen):.1f} s"
    if view.lease is None:
        if view.lease_end is not None and view.lease_end.why in _LEASE_END:
            return f"lease-{view.lease_end.why}", _LEASE_END[view.lease_end.why]
        return "no-lease", "no failsh lease"
    rec = view.services.get(service)
    if rec is None:
        return "unknown-service", "its faild does not know the service"
    if rec.reason.startswith("hc: "):  # "hc: check web failed 3 times in a row: HTTP 500"
        return "hc", f"hc {rec.reason[4:]}"
    if rec.by.startswith("hc"):
        return "hc", f"set {rec.state} by {rec.by}" + (f": {rec.reason}" if rec.reason else "")
    by = f" by {rec.by}" if rec.by else ""
    return "set-fail", f"set {rec.state}{by}" + (f": {rec.reason}" if rec.reason else "")


def _track(inp: Inputs, views: Mapping[str, PeerView], memory: Memory) -> tuple[Memory, tuple[tuple[int, str], ...]]:
    """Remember since when each master is ready (failback delay) and who held the service
    (flap protection): a change of holder counts, within the flap window."""
    svc, now = inp.service, inp.now.monotonic
    states = {h: counted(views[h], svc.name) for h in svc.peers()}
    ready_since = {h: memory.ready_since.get(h, now) for h in svc.masters
                   if states[h] in (State.UP, State.RECOVER)}
    holders = [h for h in svc.peers() if states[h] is State.UP] + ([inp.node or HERE] if inp.local is State.UP else [])
    holder, moves = memory.holder, memory.moves
    if len(holders) == 1 and holders[0] != holder:
        if holder is not None:
            moves += (now,)
        holder = holders[0]
    window = svc.flap_minutes * 60
    moves = tuple(t for t in moves if now - t < window)
    flapping = bool(svc.flap_count) and len(moves) > svc.flap_count
    events: tuple[tuple[int, str], ...] = ()
    if flapping and not memory.flapping:
        events = ((logging.WARNING, f"flapping: changed holder {len(moves)} times within {svc.flap_minutes:g} min "
                                    f"(more than {svc.flap_count}): held where it is ({holder}) until that "
                                    "calms down"),)
    elif memory.flapping and not flapping:
        events = ((logging.INFO, f"no longer flapping: at most {svc.flap_count} holder changes within "
                                 f"{svc.flap_minutes:g} min; failback applies again"),)
    return attrs.evolve(memory, ready_since=ready_since, holder=holder, moves=moves, flapping=flapping), events


def settled(inp: Inputs, memory: Memory, local: State) -> tuple[Memory, tuple[tuple[int, str], ...]]:
    """The memory once an act of the run on ``inp`` left the local state ``local``: the
    holder change that act made counts now, not at the next run (a holder for less than
    an interval would go uncounted by flap protection)."""
    views = {h: v for h in inp.service.peers() if (v := inp.views.get(h)) is not None}
    if len(views) < len(inp.service.peers()):
        return memory, ()
    return _track(attrs.evolve(inp, local=local), views, memory)


def _holding_slave(inp: Inputs, views: Mapping[str, PeerView], memory: Memory, reason: str,
                   slaves: Mapping[str, State | None]) -> str:
    """The master's side of maintenance, failback and flap protection: why the slave that
    holds the service does not hand it back."""
    svc = inp.service
    busy = sorted(h for h, s in slaves.items() if s is State.UP)
    if not busy:
        return reason
    paused = [(h, p) for h in busy if (p := views[h].pause_of(svc.name)) is not None]
    if paused:
        return f"slave {paused[0][0]} holds it and is paused: {pause_text(paused[0][1])}"
    if memory.flapping:
        return f"slave {', '.join(busy)} holds it (flapping: more than {svc.flap_count} holder changes " \
               f"within {svc.flap_minutes:g} min)"
    if svc.failback == "manual":
        return f"slave {', '.join(busy)} holds it (failback manual)"
    if svc.failback == "delay":
        return f"{reason} (failback delay {svc.failback_delay:g} s)"
    return reason


def _failback(inp: Inputs, memory: Memory, ready: list[str], masters: Mapping[str, State | None]) -> str:
    """Why a handback the rule wants must wait for the failback policy ("" if it need not).
    A master that is UP already is handed back to at once: two hosts must not stay UP."""
    svc = inp.service
    if svc.failback == "auto" or not ready or any(masters[h] is State.UP for h in ready):
        return ""
    if svc.failback == "manual":
        return f"failback manual: keeping it while master {', '.join(ready)} is RECOVER"
    since = min(memory.ready_since.get(h, inp.now.monotonic) for h in ready)
    if inp.now.monotonic - since < svc.failback_delay:
        return f"failback delay: handing back once master {', '.join(ready)} has been ready for " \
               f"{svc.failback_delay:g} s"
    return ""


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
             states: Mapping[str, State | None], before: Memory) -> tuple[list[str], Memory]:
    """Why another host may have held the service while this one did: hosts seen UP
    that no longer are, hosts whose record changed between two runs and is not UP now
    (UP and back between our polls: a short partition, healed before either side counted
    the other FAIL), hosts we could not hear that answer again (a healed partition), or
    this failsh itself was stalled (SIGSTOP) past its lease.

    Tracked only while UP here: a host that starts now announces in its start script.
    """
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
            inp.service.name, state, inp.now.wall, rec.counter if rec else 0, "", "whatif")}
        views[host] = attrs.evolve(old, status=UP, error="", lease=old.lease or inp.lease_ttl, leased=True,
                                   last_seen=inp.now.wall, services=services)
    return attrs.evolve(inp, local=inp.local if local is None else local, views=views)
