"""failsh's engine: the policy, the scheduler, the peers and the local faild, wired.

Runs on the thread that owns the Tcl interpreter.  One service run reads the
peers' snapshot, applies the decision rule, runs a procedure if needed and
writes the new local state to faild at once (docs/failsh.md).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import stat
import time
import tkinter
from collections import deque
from pathlib import Path

import attrs

from failover import client, dashboard, metrics, monitor, protocol, server, store
from failover.community import Rules
from failover.decide import Action, decide
from failover.model import Transition
from failover.peers import DOWN, UNKNOWN, NetThread, PeerSpec, PeerView, make_wakeup
from failover.policy import DEAD_FACTOR, DEFAULT_INTERVAL, Policy
from failover.procedures import run_procedure
from failover.scheduler import Scheduler
from failover.states import State
from failover.tclext import Commands
from failover.tclhost import PolicyError, TclHost

log = logging.getLogger("failover.scheduler")
tlog = logging.getLogger("failover.policy")

TCL_LIBRARY = Path(__file__).resolve().parent.parent / "tcl" / "failover.tcl"


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
    dumpfile: Path = Path("/var/tmp/failsh.dump")
    dead_factor: float = DEAD_FACTOR
    scheduling: bool = True
    http: str | None = None   # --http ADDR:PORT: live web page and /metrics (dashboard.py)


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
        self.seq = 0
        self._dump_fd: int | None = None
        self.faild = client.Client(opts.faild, opts.faild_community, timeout=0.5, retries=1)
        self.scheduler = Scheduler(self.tcl, self.run_service)
        self._events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.control_store = store.Store(None)
        self.net: NetThread | None = None
        self.dashboard: dashboard.Dashboard | None = None
        if TCL_LIBRARY.exists():
            self.tcl.source(TCL_LIBRARY)

    # Loading -------------------------------------------------------------
    def load(self, path: Path) -> None:
        """Source the policy file; PolicyError names file:line on failure."""
        self.tcl.source(path)

    def reload(self) -> bool:
        """SIGHUP: re-read the policy into a fresh model; keep the old one on error."""
        path = self.opts.policy
        if path is None:
            return False
        old = self.policy
        self.policy = self.commands.policy = Policy(self.opts.node)
        self.commands.engine = None  # no rescheduling half-way through the file
        try:
            self.tcl.source(path)
        except PolicyError as exc:
            log.error("reload failed, keeping the running policy: %s", exc)
            self.policy = self.commands.policy = old
            return False
        finally:
            self.commands.engine = self
        for name in [n for n in self.local if n not in self.policy.services]:
            if self.local[name] is State.UP:
                self._act(name, old.services[name], "stop", "service removed from the policy")
            self.local.pop(name)
        log.info("reloaded %s: %d services", path, len(self.policy.services))
        self.policy_changed()
        return True

    # Start and stop --------------------------------------------------------
    def start(self) -> None:
        """Take over the local states, start the network thread and the schedule."""
        self.commands.engine = self
        if self.opts.http:
            self.dashboard = dashboard.Dashboard(self.opts.http, self.opts.node)
            self.dashboard.start()
        self.net = NetThread([], self._local_spec(), self._lease_ttl(), self._on_net_change,
                             self.opts.monitor, self._control, self.opts.control)
        self.net.set_peers(self._peer_specs())
        self.net.start()
        self.net.ready.wait(5)
        if self.net.error:
            raise OSError(f"network thread: {self.net.error}")
        try:  # faild's persisted transitions, so failmon and the dashboard show them after a restart
            self.history.extend(self.faild.history(limit=self.history.maxlen or 200))
        except client.ClientError:
            pass
        for name in self.policy.services:
            self._adopt(name)
        self.started = True
        self.policy_changed()
        self._publish_loop()

    def _adopt(self, name: str) -> None:
        """Initial state of a service from the local faild (docs/failsh.md, "start-up")."""
        try:
            rec = self.faild.get(name)
            state = rec.state
        except client.RequestFailed:
            state = State.RECOVER  # new service
        except client.ClientError as exc:
            log.warning("%s: local faild unreachable at start (%s), assuming RECOVER", name, exc)
            state = State.RECOVER
        self.local[name] = state
        self.last_change[name] = time.time()
        if state is State.UP:  # left UP by a failsh that died: stop first, then decide again
            self._act(name, self.policy.services[name], "stop", "failsh restarted: stopping to re-decide")
        else:
            self._write(name, self.local[name], "failsh started")

    def shutdown(self) -> None:
        """SIGTERM: stop every UP service, then give up the lease so peers take over."""
        self.scheduler.stop()
        for name, state in list(self.local.items()):
            if state is State.UP and name in self.policy.services:
                self._act(name, self.policy.services[name], "stop", "failsh stopping")
        if self.net is not None:
            self.net.release_lease()
            self.net.stop()
            self.net.join(2)
        if self.dashboard is not None:
            self.dashboard.stop()
        self.faild.close()

    # Policy changes -------------------------------------------------------
    def policy_changed(self) -> None:
        if not self.started:
            return
        for name in self.policy.services:
            if name not in self.local:
                self._adopt(name)
        if self.net is not None:
            self.net.set_peers(self._peer_specs())
        self.set_scheduling(self.scheduling)

    def set_scheduling(self, on: bool) -> None:
        self.scheduling = on
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
            specs.append(PeerSpec(name, endpoint, interval,
                                  host.deadtime or self.opts.dead_factor * interval, community))
        return specs

    def _min_interval(self) -> float:
        return min((s.interval for s in self.policy.services.values()), default=DEFAULT_INTERVAL)

    def _lease_ttl(self) -> float:
        return self.opts.dead_factor * self._min_interval()

    def _local_spec(self) -> PeerSpec:
        interval = self._min_interval()
        return PeerSpec(self.opts.node, self.opts.faild, interval, self.opts.dead_factor * interval,
                        self.opts.faild_community)

    # One run of one service -------------------------------------------------
    def run_service(self, name: str) -> None:
        svc = self.policy.services.get(name)
        if svc is None or self.net is None:
            return
        self.last_check[name] = time.time()
        self._retry_writes()
        local_view = self.net.snapshot.get(self.opts.node)
        if local_view is not None and local_view.status == DOWN:
            self._note(name, "local faild does not answer: peers will count this host as FAIL")
            if self.local[name] is State.UP:
                self._act(name, svc, "stop", "local faild unreachable, peers will take over")
            return
        self._follow_external(name, local_view)
        views = {h: self.net.snapshot.get(h) for h in svc.peers()}
        unknown = sorted(h for h, v in views.items() if v is None or v.status == UNKNOWN)
        if unknown:
            self._note(name, f"wait: no answer yet from {', '.join(unknown)}")
            return
        masters = {h: views[h].state_of(name) for h in svc.masters}
        slaves = {h: views[h].state_of(name) for h in svc.slaves}
        decision = decide(self.local[name], masters, slaves, bool(svc.reclaim))
        self._note(name, str(decision))
        if decision.action in (Action.START, Action.STOP, Action.RECLAIM):
            self._act(name, svc, decision.action.value, decision.reason)
        elif decision.action is Action.NONE and self.local[name] is State.UP and svc.check:
            state, why = run_procedure(self.tcl, name, "check", svc.check, svc.timeout)
            metrics.procedure(name, "check", why)
            if state is not State.UP:
                self.set_local(name, state, why)

    def run_action(self, name: str, kind: str) -> State:
        """startservice / stopservice from Tcl: run the procedure now, outside the rule."""
        return self._act(name, self.policy.services[name], kind, f"{kind}service command")

    def _act(self, name: str, svc, kind: str, reason: str) -> State:
        script = getattr(svc, kind)
        if not script:
            new = {"start": State.UP, "stop": State.RECOVER, "reclaim": State.RECOVER}[kind]
            why = f"no {kind} procedure"
        else:
            new, why = run_procedure(self.tcl, name, kind, script, svc.timeout)
            metrics.procedure(name, kind, why)
        self.set_local(name, new, f"{reason}; {why}")
        return new

    def _note(self, name: str, decision: str) -> None:
        if self.decisions.get(name) != decision:
            log.debug("%s: %s", name, decision)
            self.decisions[name] = decision
            self.publish()

    def _follow_external(self, name: str, view: PeerView | None) -> None:
        """A change made with failc in the local faild wins over failsh's memory."""
        rec = view.services.get(name) if view else None
        if rec and rec.counter > self.written.get(name, 0) and rec.state is not self.local[name] \
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

    def _record(self, name: str, state: State, reason: str) -> None:
        old = self.local.get(name)
        self.local[name] = state
        now = time.time()
        self.last_change[name] = now
        self.history.append(Transition(name, old, state, now, len(self.history), reason))
        self.control_store.set(name, state, reason)
        log.info("%s: %s -> %s: %s", name, old or "-", state, reason)
        metrics.transition(name, old, state, self.net.snapshot if self.net else None, self.opts.node)
        for trap in self.policy.traps:
            if trap.matches("state", name):
                self._trap(trap.script, name, old.value if old else "", state.value, reason)
        self.publish()

    def _write(self, name: str, state: State, reason: str) -> None:
        try:
            rec = self.faild.set(name, state, reason[:250])
            self.written[name] = rec.counter
            self.dirty.discard(name)
        except client.ClientError as exc:
            if name not in self.dirty:
                log.error("%s: cannot write %s to the local faild: %s", name, state, exc)
            self.dirty.add(name)

    def _retry_writes(self) -> None:
        for name in list(self.dirty):
            self._write(name, self.local[name], "failsh retry after faild was unreachable")

    def _trap(self, script: str, *args: str) -> None:
        result = self.tcl.callback(script, *args)
        if not result.ok:
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
        due: set[str] = set()
        for name in dict.fromkeys(names):
            view = self.peer_view(name)
            if view is None or name == self.opts.node:
                continue
            for trap in self.policy.traps:
                if trap.matches("peer", name):
                    self._trap(trap.script, name, view.status)
            due.update(self.policy.services_of(name))
        if self.scheduling:
            for svc in sorted(due):
                self.run_service(svc)

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
        return {"v": monitor.FEED_VERSION, "type": "snapshot", "node": self.opts.node, "time": time.time(),
                "seq": self.seq, "services": services, "hosts": hosts,
                "history": [t.to_wire() for t in list(self.history)[-50:]]}

    def publish(self) -> None:
        if self.net is not None and (self.opts.monitor or self.dashboard is not None):
            snap = self.snapshot()
            if self.opts.monitor:
                self.net.publish(monitor.encode(snap))
            if self.dashboard is not None:
                self.dashboard.update(snap)

    def _publish_loop(self) -> None:
        self.publish()
        self.tcl.interp.after(1000, self._publish_loop)

    def _control(self, frame: bytes) -> bytes:
        """Network thread: the control port speaks the faild protocol (faildebug, failstat)."""
        if not hasattr(self, "_control_server"):
            rules = Rules({("*", self.opts.control_community): 2})
            self._control_server = server.Faild(self.control_store, rules, server.host_info(self.opts.node))
        return self._control_server.handle(frame)

    def dump(self) -> None:
        """SIGINT: write the state dump; a FIFO stays open for the next dump."""
        payload = monitor.text(self.snapshot()).encode()
        path = self.opts.dumpfile
        try:
            if self._dump_fd is None:
                fifo = path.exists() and stat.S_ISFIFO(path.stat().st_mode)
                flags = os.O_WRONLY | (os.O_NONBLOCK if fifo else os.O_CREAT | os.O_TRUNC)
                fd = os.open(path, flags, 0o644)
                if not fifo:
                    with os.fdopen(fd, "wb") as f:
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
        """Pipe from the network thread and signal wake-ups into the Tcl event loop."""
        r, self._poke = make_wakeup()

        def drain(fd: int, _mask: int) -> None:
            try:
                os.read(fd, 4096)
            except BlockingIOError:
                pass
            self.on_events()
        self.tcl.interp.createfilehandler(r, tkinter.READABLE, drain)
        sr, sw = os.pipe()
        os.set_blocking(sr, False)
        os.set_blocking(sw, False)
        signal.set_wakeup_fd(sw)  # lets Python signal handlers run while Tcl waits
        self.tcl.interp.createfilehandler(sr, tkinter.READABLE, lambda fd, _m: _read_all(fd))

    def _poke(self) -> None:  # replaced by install_loop_hooks
        pass


def _read_all(fd: int) -> None:
    try:
        os.read(fd, 512)
    except BlockingIOError:
        pass
