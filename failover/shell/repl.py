"""failsh's interactive prompt: the policy interpreter with history and completion.

At a terminal, tkinter runs the Tcl event loop while input() waits, so the
scheduler and peer events keep going between commands (tech notes §1.7).  With
stdin not a terminal (a pipe, a file) there is no such input hook: stdin is then
read through the Tcl event loop itself, so timers and peer events still run while
failsh waits for the next line, and no prompt is printed.
"""

from __future__ import annotations

import _tkinter
import atexit
import ctypes
import os
import re
import signal
import sys
import tkinter
from collections import deque
from pathlib import Path

from failover.shell import procedures
from failover.shell.engine import Engine

try:
    import readline
except ImportError:  # pragma: no cover - readline is part of CPython on Linux
    readline = None  # type: ignore[assignment]

_EXIT = re.compile(r"exit(?:\s+(\d{1,3}))?;?")
HISTORY = Path(os.environ.get("FAILSH_HISTORY", Path.home() / ".failsh_history"))
BANNER = """failsh interactive shell on node {node}.  Tcl {tcl} with the failover commands.
Try: failsvc web masters {{a b}} ; whatif web a FAIL b UP ; peers ; services ; schedule on
Scheduling is {sched}; Ctrl-D quits, Ctrl-C drops the line or interrupts a command."""
PROMPT, MORE = "failsh% ", "     > "


class Completer:
    """Completes Tcl commands at command position, service and host names elsewhere."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.matches: list[str] = []

    def candidates(self, text: str, command_position: bool) -> list[str]:
        tcl = self.engine.tcl
        if text.startswith("$"):
            return ["$" + v for v in tcl.split(tcl.interp.call("info", "vars", text[1:] + "*"))]
        if command_position:
            names = {n.lstrip(":") if not text.startswith("::") else n
                     for n in tcl.split(tcl.interp.call("info", "commands", text + "*"))}
            names |= {n.lstrip(":") for n in tcl.split(tcl.interp.call("info", "commands", "::fo::" + text + "*"))
                      if text.startswith("fo::")}
            return sorted(n + " " for n in names if not n.startswith("fo::py::"))
        words = list(self.engine.policy.services) + list(self.engine.policy.hosts)
        words += ["UP", "RECOVER", "FAIL", "interval", "masters", "slaves", "start", "stop", "reclaim"]
        return sorted({w + " " for w in words if w.startswith(text)})

    def complete(self, text: str, state: int) -> str | None:
        try:
            if state == 0:
                before = readline.get_line_buffer()[:readline.get_begidx()].rstrip()
                self.matches = self.candidates(text, before == "" or before[-1] in "[;{")
            return self.matches[state] if state < len(self.matches) else None
        except Exception:  # readline hides exceptions; a failed completion offers nothing
            return None


def _setup_readline(engine: Engine) -> None:
    if readline is None:
        return
    readline.set_completer_delims(" \t\n[]{}();\"")
    readline.set_completer(Completer(engine).complete)
    readline.parse_and_bind("tab: complete")
    readline.set_auto_history(False)
    try:
        readline.read_history_file(HISTORY)
    except OSError:
        pass
    atexit.register(save_history)


def save_history() -> None:
    if readline is None:
        return
    try:
        readline.write_history_file(HISTORY)
    except OSError:
        pass


class LineReader:
    """Lines from a stdin that is not a terminal, read while the Tcl event loop runs."""

    def __init__(self, interp: tkinter.Tk, fd: int = 0) -> None:
        self.interp = interp
        self.fd = fd
        self.pending = b""
        self.lines: deque[str] = deque()
        self.eof = False
        interp.createfilehandler(fd, tkinter.READABLE, self._readable)

    def _readable(self, fd: int, _mask: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
            self.interp.deletefilehandler(fd)
            if self.pending:
                self.lines.append(self.pending.decode(errors="replace"))
                self.pending = b""
            return
        *complete, self.pending = (self.pending + data).split(b"\n")
        self.lines.extend(line.decode(errors="replace") for line in complete)

    def readline(self) -> str | None:
        """The next line without its newline; None at end of input."""
        while not self.lines and not self.eof:
            self.interp.dooneevent(0)  # waits for stdin, a timer or a peer event
        return self.lines.popleft() if self.lines else None


class Prompt:
    """The read-eval-print loop.  Ctrl-C works as in a shell: at the prompt it drops the
    line being typed (and a partial multi-line command); while a command runs it cancels
    that command and what it started.  It never raises KeyboardInterrupt (failsh's signal
    thread calls :meth:`interrupt` and then :meth:`discard_line` on the Tcl thread), so no
    traceback and never an exit that would stop the host's services."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.running = False     # a typed command is being evaluated
        self.discarded = False   # Ctrl-C at the prompt: the partial command is dropped
        self.consumed = 0        # Ctrl-Cs that interrupted a command (not for the prompt)

    def interrupt(self, signum: int) -> None:
        """Signal thread: Ctrl-C cancels the command running now, if any."""
        if signum == signal.SIGINT and self.running:
            self.consumed += 1
            procedures.cancel_running("interrupted (Ctrl-C)")

    def discard_line(self) -> None:
        """Tcl thread, after a Ctrl-C: at the prompt, drop what was typed and prompt again."""
        if self.consumed:
            self.consumed -= 1
            return  # it interrupted a command, whose own error reports it
        self.discarded = True
        sys.stdout.write("^C\n")
        sys.stdout.flush()
        rl = _libreadline()
        if rl is not None and sys.stdin.isatty():
            rl.rl_replace_line(b"", 0)
            rl.rl_set_prompt(PROMPT.encode())
            rl.rl_on_new_line()
            rl.rl_redisplay()

    def interact(self) -> int:
        engine = self.engine
        interp = engine.tcl.interp
        tty = sys.stdin.isatty()
        reader = None
        if tty:
            _setup_readline(engine)
            print(BANNER.format(node=engine.opts.node, tcl=interp.eval("info patchlevel"),
                                sched="on" if engine.scheduling else "off (type: schedule on)"))
        else:
            reader = LineReader(interp, sys.stdin.fileno())
        buf = ""
        failures = 0
        while True:
            if reader is not None:
                sys.stdout.flush()
                line = reader.readline()
                if line is None:
                    if buf.strip():
                        print(f"error: incomplete command at end of input: {buf.strip()[:60]}", file=sys.stderr)
                        return 1
                    return 1 if failures else 0  # piped commands: like a script, report failure
            else:
                try:
                    line = input(PROMPT if not buf else MORE)
                except EOFError:
                    print()
                    return 0
            if self.discarded:
                buf, self.discarded = "", False
            buf += line + "\n"
            if str(interp.call("info", "complete", buf)) == "0":
                continue
            script, buf = buf.strip(), ""
            if not script:
                continue
            if readline is not None and tty:
                readline.add_history(script.replace("\n", " "))
            typed_exit = _EXIT.fullmatch(script)
            if typed_exit:  # Tcl's exit would end the process without the shutdown (lease, history)
                return int(typed_exit.group(1) or 0)
            failures += not self._run(script)
            sys.stdout.flush()
            _pump(interp)
            if engine.exit_status is not None:  # a proc called exit
                return engine.exit_status

    def _run(self, script: str) -> bool:
        """Evaluate one typed command and print its result or error; False on error."""
        self.running = True
        try:
            result, killed = procedures.run_guarded(self.engine.tcl, lambda: self.engine.tcl.run(script), None)
        finally:
            self.running = False
        if killed is not None:
            print(f"interrupted{f'; {killed} processes it started were killed' if killed else ''}", file=sys.stderr)
            return False
        if result.ok:
            if result.value:
                print(result.value)
            return True
        where = f" ({result.where})" if result.where else ""
        print(f"error: {result.value}{where}", file=sys.stderr)
        return False


def _libreadline() -> ctypes.CDLL | None:
    """GNU readline's C API (to drop the typed line from a Ctrl-C handler); None with libedit."""
    if readline is None or "GNU" not in (readline.__doc__ or ""):
        return None
    try:
        lib = ctypes.CDLL(readline.__file__)  # its symbols and those of libreadline it links
        lib.rl_replace_line.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.rl_set_prompt.argtypes = [ctypes.c_char_p]
        return lib
    except (OSError, AttributeError):
        return None


def _pump(interp: tkinter.Tk) -> None:
    """Run due Tcl events; with stdin not a terminal there is no input hook to do it."""
    while interp.dooneevent(_tkinter.DONT_WAIT):
        pass
