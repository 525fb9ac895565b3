"""Runs the checks of an Hcfile: scheduling, flap damping, dependencies, notifications.

One scheduler thread owns all node status.  Checks run on a bounded thread pool, so
a hanging server delays only its own check; a check that has not come back
``GRACE`` seconds after its timeout counts as failed and its late result is
dropped.  Results go through a :class:`Damper` (``fall`` failures in a row make a
node FAIL, ``rise`` successes make it UP), then through the dependency graph (a node
whose dependency is FAIL is FAIL).  State changes are written to an in-memory
:class:`~failover.faild.store.Store` (served by the monitor) and handed to the
:class:`Notifier`, which updates faild and runs actions on threads of its own.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import attrs

from failover import keys
from failover.client import Client, ClientError
from failover.faild.store import Store
from failover.hc.checks import run_command
from failover.hc.hcfile import Config, FaildTarget, Node
from failover.hc.kinds import CheckFn, run_check
from failover.states import State

log = logging.getLogger("failover.hc.runner")
GRACE = 2.0          # seconds past a check's timeout before it is given up
RECENT = 20          # results kept per node for the monitor
MAX_WORKERS = 32
REASON_PREFIX = "hc: "


@attrs.define
class Damper:
    """Flap damping: FAIL after ``fall`` failures in a row, UP after ``rise`` successes.

    Until either happens the state is RECOVER (not known yet); afterwards a streak
    shorter than ``fall``/``rise`` leaves the state as it is.
    """

    fall: int
    rise: int
    stable: State | None = None
    oks: int = 0
    fails: int = 0

    def feed(self, ok: bool) -> State:
        if ok:
            self.oks, self.fails = self.oks + 1, 0
            if self.stable is not State.UP and self.oks >= self.rise:
                self.stable = State.UP
        else:
            self.fails, self.oks = self.fails + 1, 0
            if self.stable is not State.FAIL and self.fails >= self.fall:
                self.stable = State.FAIL
        return self.state

    @property
    def state(self) -> State:
        return self.stable or State.RECOVER


@attrs.define
class NodeStatus:
    node: Node
    damper: Damper
    state: State = State.RECOVER       # effective: own result and dependencies
    own: State = State.RECOVER         # the node's own check, damped
    detail: str = "not checked yet"
    ok_detail: str = ""                # the last success's and the last failure's detail
    fail_detail: str = ""
    reason: str = ""                   # why the effective state is what it is
    since: float = attrs.field(factory=time.time)
    last_check: float | None = None
    last_ok: bool | None = None
    latency: float | None = None
    recent: deque = attrs.field(factory=lambda: deque(maxlen=RECENT))
    checks: int = 0
    failures: int = 0
    decided: bool = False              # has left the initial RECOVER once
    # scheduling (scheduler thread only)
    seq: int = 0
    running: bool = False
    submitted: float = 0.0
    begun: float | None = None
    next_due: float = 0.0
    last_assert: float = 0.0

    def to_wire(self) -> dict:
        node = self.node
        return {"kind": node.check.kind if node.check else "deps",
                "check": node.check.text if node.check else "",
                "target": node.check.target if node.check else " ".join(node.deps),
                "deps": list(node.deps), "own": self.own.value, "detail": self.detail,
                "reason": self.reason, "last_check": self.last_check, "ok": self.last_ok,
                "latency": None if self.latency is None else round(self.latency, 4),
                "recent": "".join("+" if r else "-" for r in self.recent),
                "checks": self.checks, "failures": self.failures, "interval": node.interval,
                "timeout": node.timeout, "fall": node.fall, "rise": node.rise,
                "streak": self.damper.oks or -self.damper.fails,
                "faild": [f"{t.service}@{t.host}" for t in node.faild]}


def _times(n: int) -> str:
    return f" {n} times in a row" if n > 1 else ""


def faild_reason(st: NodeStatus, reason: str) -> str:
    """What faild records (after "hc: ") for a change hc makes: it names the check, so that
    failsh's log says why a service moved ("check web failed 3 times in a row: HTTP 500")."""
    name = st.node.name
    if reason.startswith("check failed"):  # the node's own check, see Runner._evaluate
        return f"check {name} failed{_times(st.damper.fails) or ' once'}: {st.fail_detail}"
    return f"check {name}: {reason}"


class Notifier:
    """Applies state changes outside the scheduler thread, each kind in order.

    faild updates are desired states per (faild, service), retried until they
    succeed or a newer one replaces them; actions run one at a time, each bounded
    by its node's ``action-timeout``.
    """

    RETRY = 1.0

    def __init__(self, curves: dict[str, keys.Curve] | None = None) -> None:
        self.curves = curves or {}  # faild host -> CURVE settings (hc --curve-secret)
        self._cond = threading.Condition()
        self._pending: dict[tuple[str, str], tuple[FaildTarget, State, str, float]] = {}
        self._actions: queue.Queue = queue.Queue()
        self._stop = False
        self._failing: set[tuple[str, str]] = set()
        self._threads = [threading.Thread(target=self._faild_loop, name="hc-faild", daemon=True),
                         threading.Thread(target=self._action_loop, name="hc-action", daemon=True)]
        for t in self._threads:
            t.start()

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._actions.put(None)
        for t in self._threads:
            t.join(timeout)

    def want(self, target: FaildTarget, state: State, reason: str) -> None:
        """FAIL: set FAIL.  RECOVER: clear a FAIL that hc set (never touches UP)."""
        with self._cond:
            self._pending[(target.endpoint, target.service)] = (target, state, reason, 0.0)
            self._cond.notify()

    def idle(self) -> bool:
        with self._cond:
            return not self._pending and self._actions.unfinished_tasks == 0

    def action(self, node: Node, command: str, new: State, old: State, detail: str) -> None:
        self._actions.put((node, command, new, old, detail))

    def _faild_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop:
                    now = time.monotonic()
                    due = [k for k, v in self._pending.items() if v[3] <= now]
                    if due:
                        break
                    waits = [v[3] - now for v in self._pending.values()]
                    self._cond.wait(min(waits) if waits else None)
                if self._stop:
                    return
                work = [(k, self._pending[k]) for k in due]
            for key, (target, state, reason, _) in work:
                ok = self._apply(target, state, reason)
                with self._cond:
                    if self._pending.get(key, (None,))[:3] == (target, state, reason):
                        if ok:
                            del self._pending[key]
                        else:
                            self._pending[key] = (target, state, reason, time.monotonic() + self.RETRY)

    def _apply(self, target: FaildTarget, state: State, reason: str) -> bool:
        key = (target.endpoint, target.service)
        try:
            with Client(target.endpoint, target.community, timeout=target.timeout, retries=0,
                        curve=self.curves.get(target.host), agent="hc") as c:
                if state is State.FAIL:
                    rec = c.set(target.service, State.FAIL, reason)
                    log.debug("faild %s: %s is %s", target.host, target.service, rec.state)
                else:
                    self._clear(c, target, reason)
        except ClientError as exc:
            level = logging.DEBUG if key in self._failing else logging.WARNING
            log.log(level, "cannot set %s on faild %s: %s (will retry)", target.service, target.host, exc)
            self._failing.add(key)
            return False
        if key in self._failing:
            log.info("faild %s reachable again", target.host)
            self._failing.discard(key)
        return True

    @staticmethod
    def _clear(c: Client, target: FaildTarget, reason: str) -> None:
        try:
            rec = c.get(target.service)
        except ClientError as exc:
            if getattr(exc, "code", "") == "NOSERVICE":
                return
            raise
        if rec.state is not State.FAIL:
            return
        last = c.history(target.service, limit=1)
        if not last or not last[-1].reason.startswith(REASON_PREFIX):
            log.info("%s on faild %s is FAIL, but not because of hc: leaving it", target.service, target.host)
            return
        c.set(target.service, State.RECOVER, reason)
        log.info("faild %s: %s FAIL -> RECOVER (%s)", target.host, target.service, reason)

    def _action_loop(self) -> None:
        while True:
            item = self._actions.get()
            try:
                if item is None:
                    return
                node, command, new, old, detail = item
                env = {"HC_NODE": node.name, "HC_STATE": new.value, "HC_OLD_STATE": old.value,
                       "HC_DETAIL": detail, "HC_CHECK": node.check.text if node.check else ""}
                ok, out = run_command(command, node.action_timeout, (node.name, new.value, old.value), env)
                (log.info if ok else log.warning)("action for %s %s -> %s: %s: %s", node.name, old, new,
                                                  command, out)
            finally:
                self._actions.task_done()


class Runner:
    """Schedules the checks of a Config and keeps every node's status."""

    def __init__(self, config: Config, store: Store | None = None, workers: int | None = None,
                 check: CheckFn = run_check, notifier: Notifier | None = None, grace: float = GRACE) -> None:
        self.lock = threading.RLock()  # guards store and status for the monitor thread
        self.store = store if store is not None else Store(None)
        self.notifier = notifier or Notifier()
        self._check = check
        self.grace = grace
        nchecks = sum(1 for n in config.nodes.values() if n.check)
        self.workers = max(1, min(workers or min(MAX_WORKERS, nchecks), 256))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="hc-check")
        self._results: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.config = config
        self.status: dict[str, NodeStatus] = {}
        self._install(config)

    # life cycle ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="hc-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._results.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.notifier.close()

    def reload(self, config: Config) -> None:
        """Switch to a new Config on the scheduler thread; unchanged nodes keep their state."""
        self._results.put(("reload", config))

    def snapshot(self) -> dict[str, dict]:
        with self.lock:
            return {name: {"state": st.state.value, "since": st.since, **st.to_wire()}
                    for name, st in self.status.items()}

    # scheduler thread ------------------------------------------------------------
    def run(self) -> None:
        log.info("checking %d nodes with up to %d checks at a time", len(self.status), self.workers)
        while not self._stop.is_set():
            wait = self._schedule(time.monotonic())
            try:
                item = self._results.get(timeout=max(0.0, min(wait, 1.0)))
            except queue.Empty:
                item = None
            while item is not None:
                self._handle(item)
                try:
                    item = self._results.get_nowait()
                except queue.Empty:
                    item = None
            self._evaluate()

    def _install(self, config: Config) -> None:
        old = self.status
        new: dict[str, NodeStatus] = {}
        with self.lock:
            for name in config.order:
                node = config.nodes[name]
                prev = old.get(name)
                if prev is not None and prev.node == node:
                    new[name] = prev
                else:
                    new[name] = NodeStatus(node=node, damper=Damper(node.fall, node.rise))
                    if prev is not None:
                        prev.seq += 1  # drop a result still on its way
                    why = "check changed" if self.store.get(name) is not None else "new check"
                    self.store.set(name, State.RECOVER, f"{REASON_PREFIX}{why}")
            for name in set(old) - set(new):
                self.store.remove(name)
                log.info("node %s removed", name)
            self.status = new
            self.config = config

    def _schedule(self, now: float) -> float:
        """Start due checks, give up on overdue ones; return seconds until the next event."""
        wake = now + 1.0
        for st in self.status.values():
            node = st.node
            if node.check is None:
                continue
            if st.running:
                begun = st.begun
                if begun is not None and now > begun + node.timeout + self.grace:
                    log.warning("check of %s did not return %g s after its timeout; counted as failed",
                                node.name, self.grace)
                    st.seq += 1
                    self._record(st, False, f"check did not return within {node.timeout + self.grace:g} s",
                                 now - begun)
                    continue
                wake = min(wake, (begun or now) + node.timeout + self.grace)
                continue
            if now >= st.next_due:
                st.seq += 1
                st.running, st.submitted, st.begun = True, now, None
                st.next_due = now + node.interval
                self._pool.submit(self._work, st, st.seq)
            wake = min(wake, st.next_due)
        return wake - now

    def _work(self, st: NodeStatus, seq: int) -> None:
        st.begun = begun = time.monotonic()
        node = st.node
        if node.check is None:  # _schedule runs only nodes with a check
            return
        try:
            ok, detail = self._check(node.check, node.timeout)
        except Exception as exc:  # run_check never raises; injected checks might
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self._results.put(("result", st, seq, ok, detail, time.monotonic() - begun))

    def _handle(self, item: tuple) -> None:
        if item[0] == "reload":
            self._install(item[1])
            log.info("reloaded %s: %d nodes", item[1].path, len(self.status))
            return
        _, st, seq, ok, detail, latency = item
        current = self.status.get(st.node.name)
        if current is None or current is not st or seq != st.seq:
            log.debug("dropping late result of %s", st.node.name)
            return
        self._record(current, ok, detail, latency)

    def _record(self, st: NodeStatus, ok: bool, detail: str, latency: float) -> None:
        with self.lock:
            st.running = False
            st.checks += 1
            st.failures += not ok
            st.last_ok, st.detail, st.latency = ok, detail, latency
            if ok:
                st.ok_detail = detail
            else:
                st.fail_detail = detail
            st.last_check = time.time()
            st.recent.append(ok)
            before = st.damper.state
            st.own = st.damper.feed(ok)
        log.debug("%s: %s (%s), %s%s", st.node.name, "ok" if ok else "FAILED", detail, st.own,
                  "" if st.own is before else f" (was {before})")

    def _evaluate(self) -> None:
        """Recompute effective states in dependency order; publish the changes."""
        now = time.monotonic()
        for name in self.config.order:
            st = self.status[name]
            node = st.node
            deps = [self.status[d] for d in node.deps]
            failed = [d.node.name for d in deps if d.state is State.FAIL]
            unknown = [d.node.name for d in deps if d.state is State.RECOVER]
            own = st.own if node.check else State.UP
            if failed:
                state, reason = State.FAIL, f"dependency {', '.join(failed)} is FAIL"
            elif own is State.FAIL:
                state, reason = State.FAIL, f"check failed{_times(node.fall)}: {st.fail_detail}"
            elif own is State.RECOVER or unknown:
                state = State.RECOVER
                reason = (f"dependency {', '.join(unknown)} not known yet" if unknown
                          else f"waiting for {node.rise} good or {node.fall} bad results in a row")
            else:
                state = State.UP
                reason = (f"check passed{_times(node.rise)}: {st.ok_detail}" if node.check
                          else f"dependencies {', '.join(node.deps)} are UP")
            if node.check and not failed and not unknown and own is not State.RECOVER:
                streak = st.damper.fails if own is State.UP else st.damper.oks
                if streak:  # damping: a short streak against the state, shown but not acted on
                    limit = node.fall if own is State.UP else node.rise
                    reason += f" (now {streak} of {limit} {'failures' if own is State.UP else 'successes'})"
            old = st.state
            st.reason = reason
            if state is not old:
                with self.lock:
                    st.state, st.since = state, time.time()
                    self.store.set(name, state, REASON_PREFIX + reason)
                log.info("%s %s -> %s: %s", name, old, state, reason)
                self._publish(st, old, state, reason, now)
            elif state is State.FAIL and node.faild and now - st.last_assert >= node.interval:
                self._publish_faild(st, state, reason, now)  # keep asserting FAIL while it lasts

    def _publish(self, st: NodeStatus, old: State, new: State, reason: str, now: float) -> None:
        first = not st.decided
        st.decided = st.decided or new is not State.RECOVER
        if new in (State.FAIL, State.UP):
            self._publish_faild(st, new, reason, now)
        if first and new is State.UP:
            return  # hc starting up and finding the service fine is not an event
        for command in st.node.actions:
            self.notifier.action(st.node, command, new, old, reason)

    def _publish_faild(self, st: NodeStatus, state: State, reason: str, now: float) -> None:
        st.last_assert = now
        desired = State.FAIL if state is State.FAIL else State.RECOVER
        for target in st.node.faild:
            self.notifier.want(target, desired, f"{REASON_PREFIX}{faild_reason(st, reason)}"[:250])
