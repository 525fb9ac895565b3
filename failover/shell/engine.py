"""failsh's engine: the policy, the scheduler, the peers and the local faild, wired.

Runs on the thread that owns the Tcl interpreter.  One service run gathers the peers'
snapshot and the local state into the inputs of gates.py, acts on its verdict (a
procedure, whose new state goes to the local faild at once) and keeps what the gates
want remembered (docs/failsh.md).  The parts: hosts.py (whom to poll), localstate.py
(this host's states and the local faild), traps.py, control.py (-D), snapshot.py
(feed, web page, dump), peers.py (the network thread).
"""

from __future__ import annotations

import logging
import queue
import time
import tkinter
from collections.abc import Callable
from pathlib import Path

import attrs

from failover import client
from failover.observe import dashboard, feed, metrics
from failover.shell import gates, heartbeats, tcllib
from failover.shell.arbiter import ArbiterThread
from failover.shell.commands import Commands
from failover.shell.control import ControlPort
from failover.shell.hosts import Hosts
from failover.shell.liveness import Liveness
from failover.shell.localstate import Change, LocalState
from failover.shell.options import Options
from failover.shell.peers import NetThread
from failover.shell.policy import Policy, ServiceConfig
from failover.shell.procedures import load_bounded
from failover.shell.runner import ServiceRunner
from failover.shell.scheduler import Scheduler
from failover.shell.snapshot import Snapshots
from failover.shell.tclhost import PolicyError, TclHost
from failover.shell.traps import Traps
from failover.shell.view import UP, PeerView
from failover.shell.wakeup import Wakeup
from failover.states import State

__all__ = ["TCL_LIBRARY", "Engine", "Options"]

log = logging.getLogger("failover.scheduler")
tlog = logging.getLogger("failover.policy")

TCL_LIBRARY = tcllib.path()  # failover/shell/tcl/failover.tcl, package data


class Engine:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.tcl = TclHost()
        self.policy = Policy(opts.node)
        self.commands = Commands(self.tcl, self.policy)
        self.hosts = Hosts(opts, lambda: self.policy)
        self.states = LocalState(lambda: self.policy, self.hosts,
                                 lambda name, why: self._stop(name, self.policy.services[name], why))
        self.traps = Traps(self.tcl, lambda: self.policy)
        self.control = ControlPort(opts.node, opts.control_community)
        self.snapshots = Snapshots(opts.node, lambda: self.policy, self.states, self.peer_view)
        # every local transition, in this order (localstate.py)
        self.states.observers += [self.snapshots.on_change, self.control.on_change, _log_change,
                                  self._count_change, self.traps.on_change, lambda _c: self.snapshots.publish(),
                                  self.states.write_change]
        self.snapshots.defer = self.tcl.interp.after_idle
        self.runner = ServiceRunner(opts.node, self.tcl, lambda: self.policy, self.hosts, self.states,
                                    self.snapshots, lambda: self.net, self._net_died, lambda: self.arbiter)
        self.scheduling = opts.scheduling
        self.started = False
        self.stopping = False
        self.fatal = ""          # why failsh must stop (the network thread died)
        self.on_fatal: Callable[[str], None] | None = None
        self.exit_status: int | None = None  # the policy called exit: stop once its script ends
        self.on_exit: Callable[[int], None] | None = None
        # created in start(): a ZeroMQ socket does not survive the daemon's fork
        self.net: NetThread | None = None
        self.dashboard: dashboard.Dashboard | None = None
        self.scheduler = Scheduler(self.tcl, self.run_service)
        self._events: queue.SimpleQueue[str] = queue.SimpleQueue()
        # the arbiter (docs/arbiter.md): its thread, the services whose key changed, the timer
        # that runs the UP ones when their key would count as lost
        self.arbiter: ArbiterThread | None = None
        self._arbiter_events: queue.SimpleQueue[list[str]] = queue.SimpleQueue()
        self._deadline: tuple[float, str] | None = None
        self._poke: Callable[[], None] = lambda: None  # wakes the Tcl thread: install_loop_hooks
        # the local faild: heard yet, its maintenance and its switchover targets, as last seen
        self._local_flags: tuple[object, ...] = (False, {}, {})
        self.liveness = Liveness(self.tcl, self.hosts.lease_ttl)
        if TCL_LIBRARY.exists():
            self.tcl.source(TCL_LIBRARY)
        else:  # installed without the source tree: fo::sh, fo::ipup ... are missing
            tlog.warning("Tcl library %s not found: the fo:: helper procs are not available", TCL_LIBRARY)

    # Loading -------------------------------------------------------------
    def load(self, path: Path) -> None:
        """Source the policy file; PolicyError names file:line on failure, or the time bound."""
        load_bounded(self.tcl, path, self.tcl.source, self.opts.load_timeout)

    def reload(self) -> bool:
        """SIGHUP: re-read the policy into a fresh model; keep the old one on error."""
        path = self.opts.policy
        if path is None:
            return False
        old = self.policy
        self.policy = self.commands.policy = Policy(self.opts.node)
        self.commands.engine = None  # no rescheduling half-way through the file
        try:
            load_bounded(self.tcl, path, self.tcl.source_or_restore, self.opts.load_timeout)
        except PolicyError as exc:
            log.error("reload failed, keeping the running policy: %s", exc)
            self.policy = self.commands.policy = old
            return False
        finally:
            self.commands.engine = self
        restore_keys = self.hosts.reread_keys()  # a reload also re-reads the CURVE keys
        missing = self.hosts.key_errors()
        if missing:
            log.error("reload failed, keeping the running policy: %s", missing[0])
            self.policy = self.commands.policy = old
            restore_keys()
            return False
        for name in [n for n in self.states.local if n not in self.policy.services]:
            if self.states.local[name] is State.UP:
                self._stop(name, old.services[name], "service removed from the policy")
            self.states.forget(name)
        log.info("reloaded %s: %d services", path, len(self.policy.services))
        self.policy_changed()
        return True

    # Start and stop --------------------------------------------------------
    def start(self) -> None:
        """Start the network thread, then (with scheduling on) take over the local states,
        the lease and the schedule.  Raises OSError if a port cannot be bound."""
        self.commands.engine = self
        faild = self.states.faild = client.Client(
            self.opts.faild, self.opts.faild_community, timeout=0.5, retries=1,
            curve=self.hosts.curve(self.opts.node), deadtime=self.hosts.lease_ttl(), agent="failsh")
        if self.opts.http:
            self.dashboard = dashboard.Dashboard(self.opts.http, self.opts.node)
            self.dashboard.start()
        self.net = self.states.net = NetThread(
            self.hosts.peer_specs(), self.hosts.local_spec(), 0.0, self._on_net_change, self.opts.monitor,
            self.control.handle, self.opts.control, self.liveness.deciding_until, heartbeats.from_options(self.opts))
        self.net.start()
        self.net.ready.wait(5)
        if self.net.error:
            raise OSError(self.net.error)
        if self.opts.monitor:
            net = self.net
            self.snapshots.sinks.append(lambda snap: net.publish(feed.encode(snap)))
        if self.dashboard is not None:
            self.snapshots.sinks.append(self.dashboard.update)
        try:  # faild's persisted transitions, so failmon and the dashboard show them after a restart
            history = self.snapshots.history
            history.extend(faild.history(limit=history.maxlen or 200))
        except client.ClientError:
            pass
        self.started = True
        self.policy_changed()
        self._publish_loop()
        self.liveness.heartbeat()

    def shutdown(self) -> None:
        """SIGTERM: stop every UP service, then give up the lease so peers take over.

        A prompt that never had scheduling on only leaves: it owns nothing.
        """
        self.stopping = True
        self.tcl.clear_cancel()  # SIGTERM may have unwound a stuck script (shell/signals.py)
        self.scheduler.stop()
        if self.states.active:
            for name, state in list(self.states.local.items()):
                if state is State.UP and name in self.policy.services:
                    if self.runner.paused(name) is not None:  # maintenance: an upgrade of failsh, say
                        log.info("%s: paused: left UP as failsh stops", name)
                        continue
                    self._stop(name, self.policy.services[name], "failsh stopping")
        if self.arbiter is not None:  # after the stops: the lease's keys go with it
            self.arbiter.close()
        if self.net is not None:
            self.net.release_lease()
            self.net.stop()
            self.net.join(2)
        if self.dashboard is not None:
            self.dashboard.stop()
        if self.states.faild is not None:
            self.states.faild.close()

    # Policy changes -------------------------------------------------------
    def policy_changed(self) -> None:
        """A failsvc/failhost at run time (prompt, trap) or a reload: follow the new model."""
        self.runner.policy_changed()
        if not self.started:
            return
        if self.net is not None:
            self.net.set_peers(self.hosts.peer_specs(), self.hosts.local_spec())
        self._follow_arbiter()
        self.states.follow_policy()
        self.set_scheduling(self.scheduling)

    def set_scheduling(self, on: bool) -> None:
        self.scheduling = on
        if on and self.started and not self.states.active:
            self.states.activate()
        self.scheduler.sync({n: s.interval for n, s in self.policy.services.items()} if on else {})

    # What the Tcl commands use (commands.py, Runtime) ------------------------
    def peer_view(self, name: str) -> PeerView | None:
        return self.net.snapshot.get(name) if self.net else None

    def local_state(self, name: str) -> State:
        return self.states.state(name)

    def set_local(self, name: str, state: State, reason: str) -> None:
        self.states.set(name, state, reason)

    def run_action(self, name: str, kind: str) -> State:
        """startservice / stopservice from Tcl: run the procedure now, outside the rule."""
        return self.runner.act(name, self.policy.services[name], kind, f"{kind}service command")

    def gate_inputs(self, name: str) -> gates.Inputs | None:
        return self.runner.inputs(name)

    def run_service(self, name: str) -> None:
        self.runner.run(name)
        if self.policy.services.get(name) is not None and self.policy.services[name].arbiter:
            self._arm_deadline()  # it may have just started

    def arbiter_token(self, name: str) -> int | None:
        """fo::token: the fencing token of the key this host holds for ``name``, if any."""
        view = self.arbiter.view(name) if self.arbiter is not None else None
        return view.token if view is not None and view.held else None

    # The arbiter ----------------------------------------------------------------
    def _follow_arbiter(self) -> None:
        """Start the arbiter thread for the policy's failarbiter (a new one if a reload
        changed it; the old one's lease is revoked) and tell it the arbitrated services."""
        config = self.policy.arbiter
        arbitrated = [n for n, s in self.policy.services.items() if s.arbiter]
        if self.arbiter is not None and config is not None and config != self.arbiter.config \
                and attrs.evolve(config, failsafe=self.arbiter.config.failsafe) == self.arbiter.config:
            self.arbiter.config = config  # only -failsafe changed: the lease and keys stay
        if self.arbiter is not None and (config is None or config != self.arbiter.config):
            log.warning("arbiter changed: its services stop, then its lease is revoked")
            old = self.arbiter
            for name in [n for n, s in self.states.local.items() if s is State.UP and n in self.policy.services
                         and (v := old.view(n)) is not None and v.held]:  # first: the lease keeps their keys
                self._stop(name, self.policy.services[name], "the arbiter changed")
            old.close()
            self.arbiter = None
        if config is not None and self.arbiter is None:
            self.arbiter = ArbiterThread(config, self.opts.node, self._on_arbiter_change)
            self.arbiter.set_services(arbitrated)
            self.arbiter.start()
        elif self.arbiter is not None:
            self.arbiter.set_services(arbitrated)
        if self.net is not None:
            self.net.set_arbiter(self.arbiter.reach_now if self.arbiter is not None else None)
        if arbitrated and config is None:
            log.error("services %s are under an arbiter but the policy has no failarbiter: they will not start",
                      ", ".join(arbitrated))

    def _on_arbiter_change(self, names: list[str]) -> None:
        """Arbiter thread: a key was taken or lost, or etcd went away or came back."""
        self._arbiter_events.put(names)
        self._poke()

    def _arm_deadline(self) -> None:
        """Tcl thread: a timer at the moment the first key of an UP service would count as
        lost, so its stop runs then, not at the service's next run."""
        arb = self.arbiter
        if arb is None:
            return
        now = time.monotonic()  # a moment passed is not armed again: a failsafe holder stays UP after it
        due = [t for n, s in self.policy.services.items()
               if s.arbiter and self.states.state(n) is State.UP and (v := arb.view(n)) is not None and v.held
               for t in (v.lost_at(), v.enter_by()) if t > now]  # the stop, or the failsafe's last word
        when = min(due, default=None)
        if self._deadline is not None:
            if when is not None and self._deadline[0] == when:
                return
            self.tcl.interp.after_cancel(self._deadline[1])
            self._deadline = None
        if when is not None:
            delay = max(0, int((when - time.monotonic()) * 1000) + 5)
            self._deadline = (when, self.tcl.interp.after(delay, self._deadline_passed))

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.scheduling:
            for name in sorted(n for n, s in self.policy.services.items() if s.arbiter):
                self.run_service(name)
        self._arm_deadline()

    def _stop(self, name: str, svc: ServiceConfig, reason: str) -> None:
        self.runner.act(name, svc, "stop", reason)

    def _count_change(self, change: Change) -> None:
        metrics.transition(change.service, change.old, change.new, self.net.snapshot if self.net else None,
                           self.opts.node)

    # Peers --------------------------------------------------------------------
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
        while not self._arbiter_events.empty():
            due.update(self._arbiter_events.get_nowait())
        for name in dict.fromkeys(names):
            view = self.peer_view(name)
            if view is None:
                continue
            if name == self.opts.node:
                if view.status == UP:  # the local faild is back: write what it missed
                    self.states.faild_answers()
                # a change made there from outside (failc, hc, failctl) is acted on now, not at the
                # service's next run; so is a pause, a resume or a switchover
                due.update(self.states.changed_outside(view))
                flags = (view.listed, view.maintenance, view.prefer)
                if flags != self._local_flags:  # first heard (runs wait for it), or its flags changed
                    self._local_flags = flags
                    due.update(self.policy.services)
                continue
            self.traps.on_peer(name, view)
            due.update(self.policy.services_of(name))
            if view.arbiter == "unreachable" and self.arbiter is not None:
                self.arbiter.probe()  # it finds etcd gone: do we? (the failsafe needs every host's word)
        self.states.retry_lease()
        if self.scheduling:
            for svc in sorted(due):
                self.run_service(svc)
        self._arm_deadline()

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

    # The feed, the dump and the event loop ------------------------------------------
    def dump(self) -> None:
        """SIGINT: the state dump (snapshot.py)."""
        self.snapshots.dump(self.opts.dumpfile)

    def _publish_loop(self) -> None:
        self.tcl.interp.after(1000, self._publish_loop)  # first: a failing publish keeps the chain
        self.snapshots.publish()

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


def _log_change(change: Change) -> None:
    log.info("%s: %s -> %s: %s", change.service, change.old or "-", change.new, change.reason)


