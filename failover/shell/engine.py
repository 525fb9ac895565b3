"""failsh's engine: the policy, the scheduler, the peers and the local faild, wired.

Runs on the thread that owns the Tcl interpreter.  One service run reads the
peers' snapshot, applies the decision rule, runs a procedure if needed and
writes the new local state to faild at once (docs/failsh.md).
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
import tkinter
from collections import deque
from collections.abc import Callable
from pathlib import Path

import attrs

from failover import client, daemon, keys, protocol
from failover.faild import server, store
from failover.faild.community import Rules
from failover.model import Transition
from failover.observe import dashboard, feed, metrics
from failover.shell import procedures, tcllib
from failover.shell.commands import Commands
from failover.shell.decide import Action, decide
from failover.shell.peers import NetThread, PeerSpec
from failover.shell.policy import DEAD_FACTOR, DEFAULT_INTERVAL, TRAP_TIMEOUT, Policy, ServiceConfig
from failover.shell.procedures import run_guarded, run_procedure
from failover.shell.scheduler import Scheduler
from failover.shell.tclhost import PolicyError, ScriptResult, TclHost
from failover.shell.view import DOWN, UNKNOWN, UP, PeerView
from failover.shell.wakeup import Wakeup
from failover.states import State

log = logging.getLogger("failover.scheduler")
tlog = logging.getLogger("failover.policy")

TCL_LIBRARY = tcllib.path()  # failover/shell/tcl/failover.tcl, package data

# What the control port (-D) answers: reads and log levels, never a state change
CONTROL_OPS = frozenset({"ping", "get", "list", "history", "loglevel"})


@attrs.define
class Options:
    node: str
    policy: Path | None = None
    faild: str = f"tcp://127.0.0.1:{protocol.DEFAULT_PORT}"
    faild_community: str = protocol.DEFAULT_COMMUNITY
    addresses: dict[str, str] = attrs.Factory(dict)   # -P NAME=ADDR[:PORT]
    monitor: str | None = None
    control: str | None = None
    control_community: str = protocol.DEFAULT_COMMUNITY
    dumpfile: Path = Path("/run/failover/failsh.dump")
    dead_factor: float = DEAD_FACTOR
    scheduling: bool = True
    http: str | None = None   # --http ADDR:PORT: live web page and /metrics (dashboard.py)
    curve: keys.Identity | None = None  # --curve-secret: this failsh's key pair for every faild
    curve_keys: Path | None = None      # --curve-keys DIR: DIR/NAME.key is host NAME's faild key
    load_timeout: float = 10.0          # --load-timeout: a policy (re)load longer than this is refused


class Engine:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.tcl = TclHost()
        self.policy = Policy(opts.node)
        self.commands = Commands(self.tcl, self.policy)
        self.local: dict[str, State] = {}
        self.written: dict[str, int] = {}        # service -> faild counter of our last write
        self.dirty: set[str] = set()             # states faild has not taken yet
        self.last_change: dict[str, float] = {}
        self.last_check: dict[str, float] = {}
        self.decisions: dict[str, str] = {}
        self.history: deque[Transition] = deque(maxlen=200)
        self.scheduling = opts.scheduling
        self.started = False
        self.active = False      # holds the lease and writes faild: from the first "schedule on"
        self.activated_at = 0.0  # monotonic time of that
        self.stopping = False
        self._lease_held = False  # the local faild was down: no lease until it is rewritten
        self._lease_waiting = False  # no lease yet: a master has not answered (_take_lease)
        self._busy: set[str] = set()    # services in a run (a procedure may enter the event loop)
        self._acting: set[str] = set()  # services whose procedure is running
        self.fatal = ""          # why failsh must stop (the network thread died)
        self.on_fatal: Callable[[str], None] | None = None
        self.exit_status: int | None = None  # the policy called exit: stop once its script ends
        self.on_exit: Callable[[int], None] | None = None
        self.seq = 0
        self._dump_fd: int | None = None
        # created in start(): a ZeroMQ socket does not survive the daemon's fork
        self.faild: client.Client | None = None
        self.scheduler = Scheduler(self.tcl, self.run_service)
        self._events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._peer_status: dict[str, str] = {}            # host -> status last reported to traps
        self._remote: dict[tuple[str, str], str] = {}     # (host, service) -> state last reported
        self.control_store = store.Store(None)
        self._control_lock = threading.Lock()
        self._control_server = _ControlServer(self.control_store,
                                              Rules({("*", opts.control_community): 2}),
                                              server.host_info(opts.node))
        self.net: NetThread | None = None
        # service -> (when, {host: (status, state, record counter)}) at its last run while UP here (_yielded)
        self._peers_seen: dict[str, tuple[float, dict[str, tuple[str, State | None, int | None]]]] = {}
        self._curves: dict[str, keys.Curve] = {}  # host -> CURVE settings (_curve)
        self._guard_refused: dict[str, float] = {}  # service -> monotonic time the guard last said no (_hold)
        self.dashboard: dashboard.Dashboard | None = None
        self._watchdog_usec = _watchdog_usec()  # systemd WatchdogSec=, fed by _heartbeat
        self._watchdog_next = 0.0
        self._alive = time.monotonic()  # last event-loop round of the policy thread (_heartbeat)
        if TCL_LIBRARY.exists():
            self.tcl.source(TCL_LIBRARY)
        else:  # installed without the source tree: fo::sh, fo::ipup ... are missing
            tlog.warning("Tcl library %s not found: the fo:: helper procs are not available", TCL_LIBRARY)

    # Loading -------------------------------------------------------------
    def load(self, path: Path) -> None:
        """Source the policy file; PolicyError names file:line on failure, or the time bound."""
        self._source_bounded(path, self.tcl.source)

    def _source_bounded(self, path: Path, source: Callable[[Path], None]) -> None:
        """``source(path)`` cancelled after --load-timeout: top-level code that never
        returns (a loop, a blocking exec, vwait) must not freeze failsh."""
        def run() -> ScriptResult:
            try:
                source(path)
            except PolicyError as exc:
                return ScriptResult(False, str(exc))
            return ScriptResult(True, "")
        watchdog: list = []
        result, killed = run_guarded(self.tcl, run, self.opts.load_timeout, watchdog)
        if killed is not None:
            raise PolicyError(f"{path}: loading {watchdog[0].why} (top-level code that never returns: "
                              f"a loop, a blocking exec, vwait?); cancelled, {killed} processes killed")
        if not result.ok:
            raise PolicyError(result.value)

    def reload(self) -> bool:
        """SIGHUP: re-read the policy into a fresh model; keep the old one on error."""
        path = self.opts.policy
        if path is None:
            return False
        old = self.policy
        self.policy = self.commands.policy = Policy(self.opts.node)
        self.commands.engine = None  # no rescheduling half-way through the file
        try:
            self._source_bounded(path, self.tcl.source_or_restore)
        except PolicyError as exc:
            log.error("reload failed, keeping the running policy: %s", exc)
            self.policy = self.commands.policy = old
            return False
        finally:
            self.commands.engine = self
        old_curves, self._curves = self._curves, {}  # a reload also re-reads the CURVE keys
        missing = self.key_errors()
        if missing:
            log.error("reload failed, keeping the running policy: %s", missing[0])
            self.policy = self.commands.policy = old
            self._curves = old_curves
            return False
        for name in [n for n in self.local if n not in self.policy.services]:
            if self.local[name] is State.UP:
                self._act(name, old.services[name], "stop", "service removed from the policy")
            self.local.pop(name)
        log.info("reloaded %s: %d services", path, len(self.policy.services))
        self.policy_changed()
        return True

    # Start and stop --------------------------------------------------------
    def start(self) -> None:
        """Start the network thread, then (with scheduling on) take over the local states,
        the lease and the schedule.  Raises OSError if a port cannot be bound."""
        self.commands.engine = self
        self.faild = client.Client(self.opts.faild, self.opts.faild_community, timeout=0.5, retries=1,
                                   curve=self._curve(self.opts.node), deadtime=self._lease_ttl())
        if self.opts.http:
            self.dashboard = dashboard.Dashboard(self.opts.http, self.opts.node)
            self.dashboard.start()
        self.net = NetThread(self._peer_specs(), self._local_spec(), 0.0, self._on_net_change,
                             self.opts.monitor, self._control, self.opts.control, self.deciding_until)
        self.net.start()
        self.net.ready.wait(5)
        if self.net.error:
            raise OSError(self.net.error)
        try:  # faild's persisted transitions, so failmon and the dashboard show them after a restart
            self.history.extend(self.faild.history(limit=self.history.maxlen or 200))
        except client.ClientError:
            pass
        self.started = True
        self.policy_changed()
        self._publish_loop()
        self._heartbeat()

    def _activate(self) -> None:
        """First "schedule on": stop what a dead failsh left UP, then take the lease.

        In this order, peers never see this host's lease together with a stale UP.
        """
        self.active = True
        self.activated_at = time.monotonic()
        for name in self.policy.services:
            if name not in self.local:
                self._adopt(name)
        self._take_lease()

    def _take_lease(self) -> None:
        """Hold the lease (peers then count this host's states), but only once every master
        of every service has answered or been counted FAIL.  A lease in RECOVER makes the
        slaves yield; with a master not heard yet this host could not start, so a slave
        that serves now would hand back to nobody for up to that master's dead time."""
        if not self.active or self._lease_held or self.net is None:
            return
        unheard = self._unheard_masters()
        if unheard:
            if not self._lease_waiting:
                log.info("waiting for master %s to answer before taking the lease, so that slaves keep "
                         "serving meanwhile (at most %g s)", ", ".join(unheard),
                         max(self._deadtime(h) for h in unheard))
            self._lease_waiting = True
            return
        if self._lease_waiting:
            log.info("every master answered or counts FAIL: taking the lease")
        self._lease_waiting = False
        self.net.set_lease(self._lease_ttl())

    def _unheard_masters(self) -> list[str]:
        assert self.net is not None
        masters = {h for svc in self.policy.services.values() for h in svc.masters}
        return sorted(h for h in masters if (v := self.net.snapshot.get(h)) is None or v.status == UNKNOWN)

    def _adopt(self, name: str) -> None:
        """Initial state of a service from the local faild (docs/failsh.md, "start-up")."""
        assert self.faild is not None
        try:
            rec = self.faild.get(name)
            state = rec.state
        except client.RequestFailed:
            state = State.RECOVER  # new service
        except client.ClientError as exc:
            log.warning("%s: local faild unreachable at start (%s), assuming RECOVER", name, exc)
            state = State.RECOVER
            self._local_down()  # no lease before faild has our states (its file may say UP)
        self.local[name] = state
        self.last_change[name] = time.time()
        if state is State.UP:  # left UP by a failsh that died: stop first, then decide again
            self._act(name, self.policy.services[name], "stop", "failsh restarted: stopping to re-decide")
        else:
            self._write(name, self.local[name], "failsh started")

    def shutdown(self) -> None:
        """SIGTERM: stop every UP service, then give up the lease so peers take over.

        A prompt that never had scheduling on only leaves: it owns nothing.
        """
        self.stopping = True
        self.tcl.clear_cancel()  # SIGTERM may have unwound a stuck script (cli/failsh.py _Signals)
        self.scheduler.stop()
        if self.active:
            for name, state in list(self.local.items()):
                if state is State.UP and name in self.policy.services:
                    self._act(name, self.policy.services[name], "stop", "failsh stopping")
        if self.net is not None:
            self.net.release_lease()
            self.net.stop()
            self.net.join(2)
        if self.dashboard is not None:
            self.dashboard.stop()
        if self.faild is not None:
            self.faild.close()

    # Policy changes -------------------------------------------------------
    def policy_changed(self) -> None:
        """A failsvc/failhost at run time (prompt, trap) or a reload: follow the new model."""
        if not self.started:
            return
        if self.net is not None:
            self.net.set_peers(self._peer_specs(), self._local_spec())
        if self.active:
            for name in self.policy.services:
                if name not in self.local:
                    self._adopt(name)
            self._take_lease()
        self.set_scheduling(self.scheduling)

    def set_scheduling(self, on: bool) -> None:
        self.scheduling = on
        if on and self.started and not self.active:
            self._activate()
        self.scheduler.sync({n: s.interval for n, s in self.policy.services.items()} if on else {})

    def _endpoint(self, name: str) -> tuple[str, str]:
        host = self.policy.host(name)
        address = self.opts.addresses.get(name) or host.address or name
        return client.endpoint_for(address, host.port, resolve=False), host.community

    def _peer_specs(self) -> list[PeerSpec]:
        specs = []
        for name, host in self.policy.hosts.items():
            if not self.policy.services_of(name):
                continue
            interval = self.policy.interval_for(name)
            endpoint, community = self._endpoint(name)
            try:
                curve = self._curve(name)
            except keys.KeyFileError as exc:  # a host added at the prompt: not polled, so waited on
                log.error("%s is not polled: %s", name, exc)
                continue
            hint = f"{endpoint.rpartition(':')[0]}:{host.monitor}" if host.monitor else None
            specs.append(PeerSpec(name, endpoint, interval,
                                  host.deadtime or self.opts.dead_factor * interval, community, curve, hint))
        return specs

    def _curve(self, name: str) -> keys.Curve | None:
        """CURVE settings for host ``name``'s faild, None without --curve-secret;
        KeyFileError if DIR/NAME.key cannot be read.  Cached until the next reload."""
        if self.opts.curve is None or self.opts.curve_keys is None:
            return None
        if name not in self._curves:
            self._curves[name] = keys.Curve(self.opts.curve, keys.load_public(self.opts.curve_keys / f"{name}.key"))
        return self._curves[name]

    def key_errors(self) -> list[str]:
        """With CURVE: why the key of the local node or of a polled host cannot be read."""
        errors = []
        for name in [self.opts.node, *(h for h in self.policy.hosts if self.policy.services_of(h))]:
            try:
                self._curve(name)
            except keys.KeyFileError as exc:
                errors.append(str(exc))
        return errors

    def _young(self, view: PeerView, deadtime: float) -> bool:
        now = time.monotonic()
        return now - self.activated_at < deadtime or (view.restarted is not None
                                                       and now - view.restarted < deadtime)

    def _deadtime(self, name: str) -> float:
        host = self.policy.hosts.get(name)
        return (host.deadtime if host and host.deadtime else
                self.opts.dead_factor * self.policy.interval_for(name))

    def _min_interval(self) -> float:
        return min((s.interval for s in self.policy.services.values()), default=DEFAULT_INTERVAL)

    def _lease_ttl(self) -> float:
        return self.opts.dead_factor * self._min_interval()

    def _local_spec(self) -> PeerSpec:
        interval = self._min_interval()
        return PeerSpec(self.opts.node, self.opts.faild, interval, self.opts.dead_factor * interval,
                        self.opts.faild_community, self._curve(self.opts.node))

    # One run of one service -------------------------------------------------
    def run_service(self, name: str) -> None:
        svc = self.policy.services.get(name)
        if svc is None or self.net is None or name not in self.local or name in self._busy:
            return  # _busy: a procedure of this service waits in vwait/update; no nested run
        self._busy.add(name)
        try:
            self._run_service(name, svc)
        finally:
            self._busy.discard(name)

    def _run_service(self, name: str, svc: ServiceConfig) -> None:
        if not self.net.is_alive():
            self._net_died()
            return
        self.last_check[name] = time.time()
        local_view = self.net.snapshot.get(self.opts.node)
        if local_view is not None and local_view.status == DOWN:
            self._local_down()
            self._note(name, "local faild does not answer: peers will count this host as FAIL")
            if self.local[name] is State.UP:
                self._act(name, svc, "stop", "local faild unreachable, peers will take over")
            return
        if self._lease_held:
            self._local_back()
        elif self.dirty:
            self._retry_writes()
        if self._lease_waiting:
            self._take_lease()
            if self._lease_waiting:
                self._note(name, f"wait: no lease yet, master {', '.join(self._unheard_masters())} not heard")
                return
        self._follow_external(name, local_view)
        views = {h: self.net.snapshot.get(h) for h in svc.peers()}
        unknown = sorted(h for h, v in views.items() if v is None or v.status == UNKNOWN)
        if unknown:
            self._note(name, f"wait: no answer yet from {', '.join(unknown)}")
            return
        refused = sorted(h for h, v in views.items() if v.status == UP and v.error)
        if refused:  # a faild that answers but refuses (community): its state is unknown, not FAIL
            self._note(name, f"wait: {', '.join(refused)} refused our poll ({views[refused[0]].error})")
            return
        if self.local[name] is not State.UP:
            # grace: a master whose faild answers but whose failsh has no lease yet may be
            # starting with us (a cluster boot), or its faild just restarted and its failsh
            # has not renewed the lease yet; give it one dead time before counting it FAIL.
            # Not if that faild showed a lease before: then its failsh stopped (or died).
            young = sorted(h for h in svc.masters if views[h].status == UP and views[h].lease is None
                           and not views[h].leased and self._young(views[h], self._deadtime(h)))
            if young:
                self._note(name, f"wait: grace for master {', '.join(young)} "
                                 "(faild answers, no failsh lease yet)")
                return
        masters = {h: views[h].state_of(name) for h in svc.masters}
        slaves = {h: views[h].state_of(name) for h in svc.slaves}
        yielded = self._yielded(name, views, {**masters, **slaves})
        decision = decide(self.local[name], masters, slaves, bool(svc.reclaim))
        hold = self._hold(name, svc, decision.action, views)
        if hold:
            self._note(name, f"wait: {hold} (rule said {decision})", logging.WARNING)
            return
        self._note(name, str(decision))
        if decision.action in (Action.START, Action.STOP, Action.RECLAIM):
            self._act(name, svc, decision.action.value, decision.reason)
        elif decision.action is Action.NONE and self.local[name] is State.UP and svc.check:
            out = run_procedure(self.tcl, name, "check", svc.check, svc.timeout)
            metrics.procedure(name, "check", out.kind, out.error)
            if out.state is not State.UP:
                self.set_local(name, out.state, out.reason)
        if yielded and svc.announce and self.local[name] is State.UP:
            self._announce(name, svc, yielded)

    def _yielded(self, name: str, views: dict[str, PeerView], states: dict[str, State | None]) -> list[str]:
        """Why another host may have held the service while this one did: hosts seen UP
        that no longer are, hosts whose record changed between two runs and is not UP now
        (UP and back between our polls: a short partition, healed before either side counted
        the other FAIL), hosts we could not hear that answer again (a healed partition), or
        this failsh itself was stalled (SIGSTOP) past its lease.

        Tracked only while UP here: a host that starts now announces in its start script.
        """
        before = self._peers_seen.pop(name, None)
        if self.local[name] is not State.UP:
            return []
        now = time.monotonic()
        seen = {h: (views[h].status, states[h], _counter(views[h], name)) for h in states}
        self._peers_seen[name] = (now, seen)
        if before is None:
            return []
        then, old = before
        if now - then > self._lease_ttl():
            return ["(this failsh was stalled)"]
        return sorted(h for h, (status, state, counter) in old.items() if h in seen and (
            (seen[h][1] is not State.UP and (state is State.UP or counter != seen[h][2]))
            or (status == DOWN and seen[h][0] == UP)))

    def _announce(self, name: str, svc: ServiceConfig, yielded: list[str]) -> None:
        """We stayed UP while another host held the service too (a partition, a frozen
        failsh): clients may still use that host's address, so tell them again (GARP)."""
        log.warning("%s: another host may have held it too (%s): re-announcing", name, ", ".join(yielded))
        result, killed = run_guarded(self.tcl, lambda: self.tcl.run(svc.announce), svc.timeout)
        if killed is not None or not result.ok:
            why = "timed out" if killed is not None else result.value
            log.error("%s: announce script failed%s: %s", name, f" at {result.where}" if result.where else "", why)

    def _hold(self, name: str, svc: ServiceConfig, action: Action, views: dict[str, PeerView]) -> str:
        """Why a START or STOP the rule wants must wait: hold-down or split-brain guard."""
        if action is Action.STOP and svc.holddown:
            up_for = time.time() - self.last_change.get(name, 0.0)
            if up_for < svc.holddown:
                return f"hold-down: handing back once UP for {svc.holddown:g} s"
        silent = sorted(h for h in svc.masters if views[h].status == DOWN)
        if action is not Action.START or not silent:
            self._guard_refused.pop(name, None)
            return ""  # the guard is for taking over from a master we cannot hear
        refusal = ""
        if svc.witnesses:
            # A witness counts only if it answered after the master missed a reply: when this
            # host is the one cut off, master and witnesses fall silent together, and a
            # witness whose dead time has not run out yet proves nothing.
            since = max((views[h].last_seen or 0.0) + self.policy.interval_for(h) for h in silent)
            seen = [w for w in svc.witnesses if (v := self.net.snapshot.get(w)) is not None
                    and v.status == UP and (v.last_seen or 0.0) > since]
            if len(seen) < svc.needed_witnesses():
                refusal = (f"split-brain guard: master {', '.join(silent)} silent but only {len(seen)} of "
                           f"{len(svc.witnesses)} witnesses reachable (need {svc.needed_witnesses()})")
        if not refusal and svc.tiebreaker:
            out = run_procedure(self.tcl, name, "tiebreaker", svc.tiebreaker, svc.timeout)
            metrics.procedure(name, "tiebreaker", out.kind, out.error)
            if out.state is not State.UP:
                refusal = f"split-brain guard: tie-breaker said no ({out.reason})"
        now = time.monotonic()
        if refusal:
            self._guard_refused[name] = now
            return refusal
        # A yes right after a no proves little: this host may just have come back (link up)
        # and reach a witness or the tie-breaker's target before its master's next poll is
        # answered.  Give the master one dead time to answer first.
        wait = max(self._deadtime(h) for h in silent)
        if name in self._guard_refused and now - self._guard_refused[name] < wait:
            return f"split-brain guard: agrees again; giving master {', '.join(silent)} {wait:g} s to answer"
        return ""

    def run_action(self, name: str, kind: str) -> State:
        """startservice / stopservice from Tcl: run the procedure now, outside the rule."""
        return self._act(name, self.policy.services[name], kind, f"{kind}service command")

    def _act(self, name: str, svc: ServiceConfig, kind: str, reason: str) -> State:
        if name in self._acting:
            log.warning("%s: %s requested while a procedure of it runs: ignored", name, kind)
            return self.local_state(name)
        self._acting.add(name)
        try:
            return self._run_act(name, svc, kind, reason)
        finally:
            self._acting.discard(name)

    def _run_act(self, name: str, svc: ServiceConfig, kind: str, reason: str) -> State:
        script = getattr(svc, kind)
        if not script:
            new = {"start": State.UP, "stop": State.RECOVER, "reclaim": State.RECOVER}[kind]
            why = f"no {kind} procedure"
        else:
            out = run_procedure(self.tcl, name, kind, script, svc.timeout)
            metrics.procedure(name, kind, out.kind, out.error)
            new, why = out.state, out.reason
        self.set_local(name, new, f"{reason}; {why}")
        return new

    def _note(self, name: str, decision: str, level: int = logging.DEBUG) -> None:
        if self.decisions.get(name) != decision:
            log.log(level, "%s: %s", name, decision)
            self.decisions[name] = decision
            self.publish()

    def _follow_external(self, name: str, view: PeerView | None) -> None:
        """A change made with failc in the local faild wins over failsh's memory."""
        rec = view.services.get(name) if view else None
        if rec and rec.counter > self.written.get(name, 0) and rec.state is not self.local.get(name) \
                and name not in self.dirty:
            log.warning("%s: changed outside failsh to %s", name, rec.state)
            self._record(name, rec.state, "changed outside failsh (failc)")
            self.written[name] = rec.counter

    # Local state ------------------------------------------------------------
    def local_state(self, name: str) -> State:
        return self.local.get(name, State.RECOVER)

    def set_local(self, name: str, state: State, reason: str) -> None:
        if self.local.get(name) is state:
            return
        self._record(name, state, reason)
        self._write(name, state, reason)
        if self.net is not None and self.active:
            self.net.hint()  # peers poll us now, not at their next tick

    def _record(self, name: str, state: State, reason: str) -> None:
        old = self.local.get(name)
        self.local[name] = state
        now = time.time()
        self.last_change[name] = now
        self.history.append(Transition(name, old, state, now, len(self.history), reason))
        self._control_set(name, state, reason)
        log.info("%s: %s -> %s: %s", name, old or "-", state, reason)
        metrics.transition(name, old, state, self.net.snapshot if self.net else None, self.opts.node)
        for trap in self.policy.traps:
            if trap.matches("state", name):
                self._trap(trap.script, name, old.value if old else "", state.value, reason)
        self.publish()

    def _write(self, name: str, state: State, reason: str) -> None:
        if not self.active or self.faild is None:
            return  # a prompt without scheduling keeps its states to itself
        if self._lease_held:  # faild is known down: write when it is back, don't block now
            self.dirty.add(name)
            return
        self._store(name, state, reason)

    def _store(self, name: str, state: State, reason: str) -> None:
        assert self.faild is not None
        try:
            rec = self.faild.set(name, state, reason[:250])
            self.written[name] = rec.counter
            self.dirty.discard(name)
        except client.ClientError as exc:
            if name not in self.dirty:
                log.error("%s: cannot write %s to the local faild: %s", name, state, exc)
            self.dirty.add(name)

    def _local_down(self) -> None:
        """The local faild stopped answering: renew no lease until it has our states again,
        so that a restarted faild never shows peers a stale UP together with a lease."""
        if not self._lease_held and self.net is not None:
            self._lease_held = True
            self.net.set_lease(0.0)
            self.dirty.update(self.local)  # a restarted faild may have lost them: write all

    def _local_back(self) -> None:
        self._retry_writes()
        if self._lease_held and not self.dirty and self.net is not None and self.active:
            self._lease_held = False
            log.info("local faild answers again and has this host's states: lease renewed")
            self._take_lease()

    def _retry_writes(self) -> None:
        for name in list(self.dirty):
            if name in self.local:
                self._store(name, self.local[name], "failsh retry after faild was unreachable")
            else:
                self.dirty.discard(name)

    def _trap(self, script: str, *args: str) -> None:
        result, killed = run_guarded(self.tcl, lambda: self.tcl.callback(script, *args), TRAP_TIMEOUT)
        if killed is not None:
            tlog.error("failtrap script %r timed out after %g s; cancelled, %d processes killed",
                       script[:60], TRAP_TIMEOUT, killed)
        elif not result.ok:
            metrics.policy_error(args[0] if args else "", "trap")
            tlog.error("failtrap script failed%s: %s", f" at {result.where}" if result.where else "",
                       result.value)

    # Peers --------------------------------------------------------------------
    def peer_view(self, name: str) -> PeerView | None:
        return self.net.snapshot.get(name) if self.net else None

    def _on_net_change(self, names: list[str]) -> None:
        """Network thread: hand the changed hosts to the Tcl thread through the pipe."""
        for name in names:
            self._events.put(name)
        self._poke()

    def on_events(self) -> None:
        """Tcl thread: fire traps and re-run the services of hosts that changed."""
        names: list[str] = []
        while not self._events.empty():
            names.append(self._events.get_nowait())
        if self.net is not None and not self.net.is_alive():
            self._net_died()
            return
        due: set[str] = set()
        for name in dict.fromkeys(names):
            view = self.peer_view(name)
            if view is None:
                continue
            if name == self.opts.node:  # the local faild is back: write what it missed
                if view.status == UP and (self.dirty or self._lease_held):
                    self._local_back()
                continue
            self._peer_traps(name, view)
            due.update(self.policy.services_of(name))
        if self._lease_waiting:
            self._take_lease()
        if self.scheduling:
            for svc in sorted(due):
                self.run_service(svc)

    def _peer_traps(self, name: str, view: PeerView) -> None:
        """failtrap peer HOST (args: host old new) and remote SERVICE (service host old new)."""
        old = self._peer_status.get(name, UNKNOWN)
        if view.status != old:
            self._peer_status[name] = view.status
            for trap in self.policy.traps:
                if trap.matches("peer", name):
                    self._trap(trap.script, name, old, view.status)
        if view.status == UNKNOWN:
            return
        for service in self.policy.services_of(name):
            state = view.state_of(service)
            new = state.value if state else State.FAIL.value
            before = self._remote.get((name, service), "")
            if new != before:
                self._remote[(name, service)] = new
                for trap in self.policy.traps:
                    if trap.matches("remote", service):
                        self._trap(trap.script, service, name, before, new)

    def request_exit(self, status: int) -> None:
        """The policy's ``exit``: leave as on SIGTERM (services stopped, lease given up)."""
        if self.exit_status is None:
            self.exit_status = status
            log.warning("the policy called exit %d: failsh stops", status)
            if self.on_exit is not None:
                self.on_exit(status)

    def _net_died(self) -> None:
        if self.fatal or self.stopping:
            return
        self.fatal = f"the network thread stopped ({self.net.error if self.net else '?'}): " \
                     "peers' states are no longer known"
        log.critical("%s; failsh stops", self.fatal)
        self.scheduler.stop()
        if self.on_fatal is not None:
            self.on_fatal(self.fatal)

    # Monitor, control port, dump ------------------------------------------------
    def snapshot(self) -> dict:
        self.seq += 1
        hosts = []
        for name in sorted(self.policy.hosts):
            v = self.peer_view(name)
            if v is not None:
                hosts.append({"name": name, "endpoint": v.endpoint, "status": v.status, "last_seen": v.last_seen,
                              "last_call": v.last_call, "rtt": v.rtt, "failsh": v.lease is not None})
        services = []
        for name, svc in sorted(self.policy.services.items()):
            peers = {}
            for h in svc.peers():
                v = self.peer_view(h)
                st = v.state_of(name) if v else None
                peers[h] = {"role": "master" if h in svc.masters else "slave",
                            "state": st.value if st else "FAIL", "status": v.status if v else UNKNOWN}
            services.append({"name": name, "state": self.local_state(name).value,
                             "role": "master" if not svc.masters else "slave",
                             "masters": svc.masters, "slaves": svc.slaves, "interval": svc.interval,
                             "last_change": self.last_change.get(name), "last_check": self.last_check.get(name),
                             "decision": self.decisions.get(name, ""), "peers": peers})
        return {"v": feed.FEED_VERSION, "type": "snapshot", "node": self.opts.node, "time": time.time(),
                "seq": self.seq, "services": services, "hosts": hosts,
                "history": [t.to_wire() for t in list(self.history)[-50:]]}

    def publish(self) -> None:
        if self.net is not None and (self.opts.monitor or self.dashboard is not None):
            snap = self.snapshot()
            if self.opts.monitor:
                self.net.publish(feed.encode(snap))
            if self.dashboard is not None:
                self.dashboard.update(snap)

    def deciding_until(self) -> float:
        """Network thread: the monotonic time until which this failsh counts as deciding,
        so its lease may be renewed.  The policy thread stamps ``_alive`` on every round of
        its event loop; a procedure, trap or load in progress counts until its time bound
        (its watchdog then cancels it).  Anything else that holds the thread (an ``after``
        script that never returns) lets the lease lapse: the peers take over."""
        return max(self._alive + self._lease_ttl() / 3, procedures.busy_until())

    def _heartbeat(self) -> None:
        """Stamp the policy thread's liveness for the lease (peers.py) and systemd's watchdog."""
        now = time.monotonic()
        self._alive = now
        if self._watchdog_usec and now >= self._watchdog_next:
            daemon.sd_notify("WATCHDOG=1")
            self._watchdog_next = now + self._watchdog_usec / 2e6
        period = min(self._lease_ttl() / 6, 0.5, self._watchdog_usec / 4e6 if self._watchdog_usec else 1.0)
        self.tcl.interp.after(max(10, int(period * 1000)), self._heartbeat)

    def _publish_loop(self) -> None:
        self.tcl.interp.after(1000, self._publish_loop)  # first: a failing publish keeps the chain
        self.publish()

    def _control(self, frame: bytes) -> bytes:
        """Network thread: the control port speaks the faild protocol (faildebug, failstat):
        ping, get, list and history of failsh's own transitions, and loglevel."""
        try:
            req = protocol.decode_request(frame)
        except protocol.ProtocolError:
            pass  # the server answers with the right error
        else:
            if req.op not in CONTROL_OPS:
                return protocol.encode(protocol.error_reply(
                    req.id, "BADOP", f"failsh's control port does not serve {req.op!r}; "
                    f"it serves {', '.join(sorted(CONTROL_OPS))} (change states in faild)"))
        with self._control_lock:
            return self._control_server.handle(frame)

    def _control_set(self, name: str, state: State, reason: str) -> None:
        """Mirror a transition into the control port's store (the network thread reads it)."""
        with self._control_lock:
            self._control_server.record(name, state, reason)

    def dump(self) -> None:
        """SIGINT: write the state dump (mode 0600); a FIFO stays open for the next dump.
        A symlink at the path is never followed: a planted one could aim at any file."""
        payload = feed.text(self.snapshot()).encode()
        path = self.opts.dumpfile
        try:
            if self._dump_fd is None:
                try:
                    mode = path.lstat().st_mode
                except FileNotFoundError:
                    mode = 0
                    store.make_dir(path.parent)
                if stat.S_ISLNK(mode):
                    raise OSError(f"{path} is a symlink; not followed (remove it)")
                fifo = stat.S_ISFIFO(mode)
                flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(path, flags | (os.O_NONBLOCK if fifo else os.O_CREAT | os.O_TRUNC), 0o600)
                if not fifo:
                    with os.fdopen(fd, "wb") as f:
                        os.fchmod(fd, 0o600)
                        f.write(payload)
                    log.info("state dumped to %s", path)
                    return
                self._dump_fd = fd
            os.write(self._dump_fd, payload)
        except OSError as exc:
            log.error("cannot dump state to %s: %s", path, exc)
            if self._dump_fd is not None:
                os.close(self._dump_fd)
                self._dump_fd = None

    # Event loop ------------------------------------------------------------------
    def install_loop_hooks(self) -> None:
        """Pipe from the network thread into the Tcl event loop."""
        wakeup = Wakeup()
        self._poke = wakeup.poke

        def drain(_fd: int, _mask: int) -> None:
            wakeup.drain()
            try:
                self.on_events()
            except Exception:  # an exception here would end mainloop (tkinter keeps it)
                log.exception("handling peer events failed")
        self.tcl.interp.createfilehandler(wakeup.fd, tkinter.READABLE, drain)

    def _poke(self) -> None:  # replaced by install_loop_hooks
        pass


class _ControlServer(server.Faild):
    """faild's request handling over failsh's own transitions (the -D control port)."""

    def record(self, name: str, state: State, reason: str) -> None:
        self.store.set(name, state, reason)
        self._services_json.clear()  # the server caches encoded replies per state change


def _watchdog_usec() -> int:
    """WATCHDOG_USEC if systemd's watchdog is meant for this process, else 0."""
    pid = os.environ.get("WATCHDOG_PID")
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return 0
    return usec if usec > 0 and (not pid or pid == str(os.getpid())) else 0


def _counter(view: PeerView, service: str) -> int | None:
    """The host's transition counter for ``service``: it moves on every change there."""
    rec = view.services.get(service)
    return rec.counter if rec else None
