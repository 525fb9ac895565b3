"""Running a service's start/stop/reclaim/check script and reading the state it returns.

A procedure that runs longer than its timeout is ended from a watchdog thread: the
Tcl evaluation is cancelled (``Tcl_CancelEval``, so ``after``, ``vwait`` and busy
loops end too) and every process started *during* this procedure is killed with its
process group, which ends a blocking ``exec``.  Processes started earlier (a daemon
that a start procedure left running with ``exec ... &``) are left alone.  The result
is then FAIL with the reason "timed out".  Tcl errors and results other than
UP/RECOVER/FAIL also become FAIL, with the policy's file:line.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import os
import re
import signal
import threading
import time
import tkinter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import attrs

from failover.shell.tclhost import PolicyError, ScriptResult, TclHost
from failover.states import BadState, State, parse_state

log = logging.getLogger("failover.procedures")

_TCL_CANCEL_UNWIND = 0x100000   # tcl.h: catch cannot stop the unwinding
_running: list[_Watchdog] = []   # guarded evaluations in progress, innermost last (cancel_running)


class OutcomeKind(enum.StrEnum):
    OK = "ok"                  # returned UP, RECOVER or FAIL
    FAILED = "failed"          # a Tcl error
    TIMEOUT = "timeout"        # ran past its timeout: cancelled, its processes killed
    CANCELLED = "cancelled"    # cancelled by failsh (SIGTERM, Ctrl-C)
    BAD_RESULT = "bad-result"  # returned something else
    BOOL_CHECK = "bool-check"  # a check or tie-breaker returned a Tcl boolean: true is UP, false FAIL


# What counts as an error of the policy (failover_policy_errors_total)
ERRORS = frozenset({OutcomeKind.FAILED, OutcomeKind.TIMEOUT, OutcomeKind.BAD_RESULT})


@attrs.frozen
class Outcome:
    """What a procedure run came to: the new state, a reason for the log and the kind."""

    state: State
    reason: str
    kind: OutcomeKind = OutcomeKind.OK

    @property
    def error(self) -> bool:
        return self.kind in ERRORS


def run_procedure(tcl: TclHost, service: str, kind: str, script: str, timeout: float,
                  env: Mapping[str, str] | None = None) -> Outcome:
    """Evaluate ``script``; return the new state, a reason for the log and the outcome's kind.

    ``kind`` is start, stop, reclaim, check or tiebreaker.  A check (or tie-breaker) may
    also return a Tcl boolean: true keeps the service UP, false makes it FAIL.  ``env``:
    environment variables set while it runs (``$env(NAME)`` in Tcl, and every process it
    execs), e.g. FO_FENCING_TOKEN for the start of an arbitrated service.
    """
    watchdog: list[_Watchdog] = []
    with environment(tcl, env or {}):
        result, killed = run_guarded(tcl, lambda: tcl.run(script), timeout, watchdog)
    if killed is not None:
        why = watchdog[0].why
        log.error("%s: %s procedure %s", service, kind, why)
        return Outcome(State.FAIL, f"{kind} procedure {why}; cancelled, {killed} processes it started were killed",
                       OutcomeKind.CANCELLED if watchdog[0].cancelled else OutcomeKind.TIMEOUT)
    if not result.ok:
        where = f" at {result.where}" if result.where else ""
        log.error("%s: %s procedure failed%s: %s", service, kind, where, result.value)
        return Outcome(State.FAIL, f"{kind} procedure failed{where}: {result.value}", OutcomeKind.FAILED)
    try:
        return Outcome(parse_state(result.value), f"{kind} procedure returned {result.value.strip().upper()}")
    except BadState:
        pass
    if kind in ("check", "tiebreaker"):
        truth = _boolean(tcl, result.value)
        if truth is not None:
            return Outcome(State.UP, "check passed", OutcomeKind.BOOL_CHECK) if truth else \
                Outcome(State.FAIL, f"check returned {result.value.strip()}", OutcomeKind.BOOL_CHECK)
    log.error("%s: %s procedure returned %r, not UP/RECOVER/FAIL", service, kind, result.value[:80])
    return Outcome(State.FAIL, f"{kind} procedure returned {result.value[:80]!r}, not UP, RECOVER or FAIL",
                   OutcomeKind.BAD_RESULT)


@contextmanager
def environment(tcl: TclHost, env: Mapping[str, str]) -> Iterator[None]:
    """``env`` in Tcl's env array (which is the process environment) while the block runs;
    the old values (or their absence) afterwards."""
    old = {name: os.environ.get(name) for name in env}
    for name, value in env.items():
        tcl.interp.setvar(f"::env({name})", value)
    try:
        yield
    finally:
        for name, before in old.items():
            if before is None:
                tcl.interp.call("unset", "-nocomplain", f"::env({name})")
            else:
                tcl.interp.setvar(f"::env({name})", before)


def run_guarded(tcl: TclHost, run: Callable[[], ScriptResult], timeout: float | None,
                out: list | None = None) -> tuple[ScriptResult, int | None]:
    """Call ``run`` (a Tcl evaluation on this thread) under a watchdog of ``timeout`` s
    (None: no time bound, only :func:`cancel_running` ends it: a command typed at the prompt).

    Returns its result and, if the watchdog fired, how many processes it killed (else None).
    ``out`` receives the watchdog (its ``why`` says timeout or cancel).
    """
    watchdog = _Watchdog(tcl, timeout)
    if out is not None:
        out.append(watchdog)
    _running.append(watchdog)
    try:
        result = run()
    finally:
        _running.remove(watchdog)
        fired = watchdog.finish()
    if fired:
        tcl.clear_cancel()
        return result, watchdog.killed
    return result, None


def load_bounded(tcl: TclHost, path: Path, source: Callable[[Path], None], timeout: float) -> None:
    """``source(path)`` (a policy load) cancelled after ``timeout`` s: top-level code that
    never returns (a loop, a blocking exec, vwait) must not freeze failsh.  PolicyError
    names file:line on failure, or the time bound."""
    def run() -> ScriptResult:
        try:
            source(path)
        except PolicyError as exc:
            return ScriptResult(False, str(exc))
        return ScriptResult(True, "")
    watchdog: list[_Watchdog] = []
    result, killed = run_guarded(tcl, run, timeout, watchdog)
    if killed is not None:
        raise PolicyError(f"{path}: loading {watchdog[0].why} (top-level code that never returns: "
                          f"a loop, a blocking exec, vwait?); cancelled, {killed} processes killed")
    if not result.ok:
        raise PolicyError(result.value)


def cancel_running(why: str) -> int:
    """From any thread (SIGTERM, Ctrl-C): end every guarded evaluation now, as if its
    timeout had fired; return how many there were."""
    running = list(_running)
    for watchdog in running:
        watchdog.finish_timer()
        watchdog.fire(why)
    return len(running)


def cancel_stuck(interp_addr: int) -> bool:
    """From any thread: unwind whatever Tcl evaluation runs in that interpreter now, guarded
    or not (an ``after`` script that never returns, when SIGTERM found the thread stuck)."""
    return cancel_eval(interp_addr, _TCL_CANCEL_UNWIND)


def running() -> bool:
    """A guarded evaluation (procedure, trap, policy load) is in progress."""
    return bool(_running)


def busy_until() -> float:
    """The monotonic time by which the time-bounded evaluations in progress end at the
    latest, plus a second for the cancel; 0.0 if none runs.  An unbounded one (a command at
    the prompt) does not count: failsh is not deciding while it runs."""
    deadlines = [w.deadline for w in list(_running) if w.deadline is not None]  # network thread
    return max(deadlines) + 1.0 if deadlines else 0.0


def _boolean(tcl: TclHost, value: str) -> bool | None:
    try:
        return bool(tcl.interp.getboolean(value.strip()))
    except (tkinter.TclError, ValueError):
        return None


class _Watchdog:
    """Ends the running procedure after ``timeout`` seconds, from its own thread."""

    def __init__(self, tcl: TclHost, timeout: float | None) -> None:
        self.before = set(_children(os.getpid()))
        self.interp_addr = tcl.interp.interpaddr()
        # Inside a Tcl command (startservice, a trap) an unwinding cancel would also end the
        # outer evaluation and leave the interpreter cancelled; a plain cancel stops just ours
        self.flags = _TCL_CANCEL_UNWIND if tcl.depth == 0 else 0
        self.lock = threading.Lock()
        self.done = False
        self.fired = False
        self.cancelled = False  # fired by cancel_running, not by the timeout
        self.killed = 0
        self.why = f"timed out after {timeout:g} s" if timeout is not None else "cancelled"
        self.deadline = time.monotonic() + timeout if timeout is not None else None
        self.timer = threading.Timer(timeout, self.fire) if timeout is not None else None
        if self.timer is not None:
            self.timer.daemon = True
            self.timer.start()

    def finish_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def finish(self) -> bool:
        """The procedure returned: disarm; True if the timeout had fired."""
        self.finish_timer()
        with self.lock:
            self.done = True
            return self.fired

    def fire(self, why: str = "") -> None:
        with self.lock:
            if self.done or self.fired:
                return
            self.fired = True
            self.cancelled = bool(why)
            self.why = why or self.why
            cancel_eval(self.interp_addr, self.flags)  # first, so an exec that returns below stops at once
            self.killed = _kill_new_children(self.before)
        log.warning("Tcl evaluation %s: cancelled, killed %d processes", self.why, self.killed)
        threading.Thread(target=self._reap, name="cancel-reaper", daemon=True).start()

    def _reap(self, period: float = 0.05, bound: float = 3.0) -> None:
        """An exec caught between the cancel and its fork starts its process after the kill
        above: keep killing new children until the evaluation has unwound (bounded)."""
        end = time.monotonic() + bound
        while time.monotonic() < end:
            time.sleep(period)
            with self.lock:
                if self.done:
                    return
                self.killed += _kill_new_children(self.before)


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (all its threads), via /proc."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN
            return _children_by_scan(pid)
        except OSError:
            continue
    return found


def _children_by_scan(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = entry.joinpath("stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state ppid ...
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def _subtree(pid: int, limit: int = 10000) -> list[int]:
    """``pid`` and all its descendants."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < limit:
        p = todo.pop()
        found.append(p)
        todo.extend(_children(p))
    return found


def _kill_new_children(before: set[int]) -> int:
    """Kill the children failsh started since ``before`` was taken, with their descendants."""
    mine = os.getpgid(0)
    killed = 0
    for child in _children(os.getpid()):
        if child in before:
            continue  # e.g. a daemon an earlier start procedure left running, and its workers
        for pid in _subtree(child):
            try:
                pgid = os.getpgid(pid)
                if pgid == pid and pgid != mine:  # a group leader (setsid): take its group
                    os.killpg(pgid, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


# Tcl_CancelEval is thread-safe (Tcl manual); tkinter does not expose it, ctypes does.
_cancel_fn = None


def _libtcl():
    global _cancel_fn
    if _cancel_fn is None:
        _cancel_fn = False
        try:
            maps = Path("/proc/self/maps").read_text()
            match = re.search(r"(/\S*libtcl8\.\d+\.so\S*)", maps)
            if match:
                fn = ctypes.CDLL(match.group(1)).Tcl_CancelEval
                fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
                fn.restype = ctypes.c_int
                _cancel_fn = fn
        except (OSError, AttributeError):
            log.warning("Tcl_CancelEval not found: a timed-out pure Tcl procedure cannot be stopped")
    return _cancel_fn


def cancel_eval(interp_addr: int, flags: int = _TCL_CANCEL_UNWIND) -> bool:
    """Cancel the Tcl script running in the interpreter at ``interp_addr`` (any thread)."""
    fn = _libtcl()
    return bool(fn) and fn(interp_addr, None, None, flags) == 0
