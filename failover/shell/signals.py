"""Signals of a running failsh, delivered to the Tcl thread (docs/failsh.md, "Signals")."""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import tkinter
from collections.abc import Callable

from failover.shell import procedures
from failover.shell.tclhost import TclHost
from failover.shell.wakeup import Wakeup

log = logging.getLogger("failover.scheduler")


class Signals:
    """Python runs its handlers on the main thread between bytecodes, never while Tcl
    blocks in an ``exec`` or loops; so the C handler's wake-up byte is read on a thread of
    its own.  That thread acts at once where the Tcl thread may be busy (``interrupt``:
    cancel a running procedure or command), then hands the signal to the Tcl thread
    through a pipe, where ``actions`` run.  No handler ever raises: a KeyboardInterrupt
    inside a Tcl callback would print a traceback and be lost.

    ``halt`` stops new service runs at once (SIGTERM, SIGQUIT); ``stopping`` tells
    whether the Tcl thread has begun to stop."""

    STOP = (signal.SIGTERM, signal.SIGQUIT)
    STUCK_AFTER = 1.0  # s: SIGTERM not taken up by the Tcl thread by then: unwind what it runs

    def __init__(self, tcl: TclHost, actions: dict[int, Callable[[], None]], halt: Callable[[], None],
                 stopping: Callable[[], bool], interrupt: Callable[[int], None] | None = None) -> None:
        self.actions = actions
        self.halt = halt
        self.stopping = stopping
        self.interrupt = interrupt
        self.interp_addr = tcl.interp.interpaddr()
        self.pending: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.to_tcl = Wakeup()
        tcl.interp.createfilehandler(self.to_tcl.fd, tkinter.READABLE, self._dispatch)
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        for signum in actions:
            signal.signal(signum, lambda *_: None)  # the C handler writes write_fd; the thread acts
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name="failsh-signals", daemon=True).start()

    def _watch(self) -> None:
        while True:
            for signum in os.read(self.read_fd, 64):
                if signum not in self.actions:
                    continue
                name = signal.Signals(signum).name
                if signum in self.STOP:
                    self.halt()  # no new run between the cancel and the stop
                    if procedures.cancel_running(f"cancelled: failsh got {name}"):
                        log.warning("%s: running procedure cancelled", name)
                    threading.Timer(self.STUCK_AFTER, self._unwind_if_stuck, (name,)).start()
                if self.interrupt is not None:
                    self.interrupt(signum)
                self.pending.put(signum)
                self.to_tcl.poke()

    def _unwind_if_stuck(self, name: str) -> None:
        """The Tcl thread did not begin to stop: a script outside any time bound holds it
        (``after 0 {while 1 {}}``).  Unwind it so the stop procedures can run."""
        if not self.stopping() and procedures.cancel_stuck(self.interp_addr):
            log.error("%s: the policy thread did not respond within %g s: its running Tcl script "
                      "was cancelled", name, self.STUCK_AFTER)

    def _dispatch(self, _fd: int, _mask: int) -> None:
        self.to_tcl.drain()
        while not self.pending.empty():
            signum = self.pending.get_nowait()
            try:
                self.actions[signum]()
            except Exception:  # never end the event loop on a handler's bug
                log.exception("handling %s failed", signal.Signals(signum).name)
