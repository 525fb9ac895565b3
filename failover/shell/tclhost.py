"""The embedded Tcl interpreter: command registration that keeps Python errors,
policy loading with file:line in every error, and running policy scripts safely.

tkinter drops the message of a Python exception raised inside a Tcl command and
re-raises it later from mainloop (tech notes §1.4), so every command goes through
:meth:`TclHost.expose`, which turns exceptions into proper Tcl errors.
"""

from __future__ import annotations

import re
import tkinter
from collections.abc import Callable
from pathlib import Path

import attrs

# Records where each proc was defined, so an error on line K of a proc can be
# reported as file:line of the policy (Tcl itself only says "procedure line K").
_PROC_TRACKER = r"""
namespace eval ::fo { variable procdefs; array set procdefs {} }
if {[info commands ::fo::_proc] eq ""} {
    rename ::proc ::fo::_proc
    ::fo::_proc ::proc {name arglist body} {
        uplevel 1 [list ::fo::_proc $name $arglist $body]
        set frame [info frame -1]
        set full [uplevel 1 [list namespace origin $name]]
        if {[dict exists $frame file] && [dict exists $frame line]} {
            set ::fo::procdefs($full) [list [dict get $frame file] [dict get $frame line]]
        } else {
            unset -nocomplain ::fo::procdefs($full) ;# redefined at the prompt: no file line
        }
        return
    }
}
"""

# A reload that fails half-way must not leave the procs it redefined before the error:
# SaveProcs returns a script that puts every proc (and its file:line) back as it was and
# deletes the procs defined since.
_PROC_SAVER = r"""
proc ::fo::AllProcs {} {
    set procs {}
    set todo [list ::]
    while {[llength $todo]} {
        set ns [lindex $todo 0]
        set todo [lrange $todo 1 end]
        lappend todo {*}[namespace children $ns]
        lappend procs {*}[info procs [string trimright $ns :]::*]
    }
    return $procs
}
proc ::fo::SaveProcs {} {
    set names [::fo::AllProcs]
    set restore {}
    foreach p $names {
        set params {}
        foreach a [info args $p] {
            lappend params [expr {[info default $p $a d] ? [list $a $d] : $a}]
        }
        lappend restore [list ::fo::_proc $p $params [info body $p]]
    }
    lappend restore [list ::fo::DropProcsBut $names] \
        [list array unset ::fo::procdefs] [list array set ::fo::procdefs [array get ::fo::procdefs]]
    return [join $restore \n]
}
proc ::fo::Where {} {
    for {set i [info frame]} {$i > 0} {incr i -1} {
        set f [info frame $i]
        if {[dict exists $f file] && [dict exists $f line]} { return "[dict get $f file]:[dict get $f line]" }
        if {[dict exists $f proc] && [dict exists $f line] && [info exists ::fo::procdefs([dict get $f proc])]} {
            lassign $::fo::procdefs([dict get $f proc]) file line
            return "$file:[expr {$line + [dict get $f line] - 1}]"
        }
    }
    return ""
}
proc ::fo::DropProcsBut {keep} {
    foreach p [::fo::AllProcs] {
        if {$p ni $keep} { rename $p {} }
    }
}
"""

_PROC_LINE = re.compile(r'\(procedure "([^"]+)" line (\d+)\)')
_FILE_LINE = re.compile(r'\(file "([^"]+)" line (\d+)\)')


class TclCommandError(Exception):
    """Raised by command implementations; becomes a Tcl error with this errorcode."""

    def __init__(self, message: str, *code: str) -> None:
        super().__init__(message)
        self.code = ("FAILOVER", *code) if code else ("FAILOVER", "ERROR")


class PolicyError(Exception):
    """A policy file that cannot be loaded; the message names file and line."""


@attrs.frozen
class ScriptResult:
    ok: bool
    value: str          # the result, or the error message
    where: str = ""     # file:line (or procedure line) of an error
    trace: str = ""     # Tcl's errorInfo


class TclHost:
    def __init__(self) -> None:
        self.interp = tkinter.Tcl()
        self.interp.eval(_PROC_TRACKER)
        self.interp.eval(_PROC_SAVER)
        self.depth = 0  # Python commands in progress: >0 means a run() is nested in Tcl

    # Commands ----------------------------------------------------------
    def expose(self, name: str, fn: Callable[..., object]) -> None:
        """Register ``fn`` as Tcl command ``name``; exceptions become Tcl errors."""
        def raw(*args: str) -> tuple:
            self.depth += 1
            try:
                result = fn(*args)
                return ("ok", "" if result is None else result)
            except TclCommandError as exc:
                return ("error", str(exc), exc.code)
            except TypeError as exc:
                return ("error", _arity_message(name, exc), ("TCL", "WRONGARGS"))
            except Exception as exc:  # never let tkinter swallow the message
                return ("error", f"{name}: {type(exc).__name__}: {exc}", ("PYTHON", type(exc).__name__))
            finally:
                self.depth -= 1

        pyname = f"::fo::py::{name.lstrip(':').replace('::', '_')}"
        self.interp.createcommand(pyname, raw)
        self.interp.eval(
            f"proc {name} args {{\n set r [{pyname} {{*}}$args]\n"
            f" if {{[lindex $r 0] eq \"ok\"}} {{ return [lindex $r 1] }}\n"
            f" return -code error -errorcode [lindex $r 2] [lindex $r 1] }}")

    def callback(self, script: str, *args: object) -> ScriptResult:
        """Run a callback script with arguments appended as list elements (failtrap)."""
        self.interp.call("set", "::fo::_args", tuple(str(a) for a in args))  # a Tcl list
        return self.run(f"{script} {{*}}$::fo::_args")

    def where(self) -> str:
        """FILE:LINE of the policy command running now (from inside a command); "" at the prompt."""
        try:
            return str(self.interp.call("::fo::Where"))
        except tkinter.TclError:
            return ""

    def split(self, value: object) -> list[str]:
        """A Tcl list as Python strings (splitlist can hand back Tcl_Obj)."""
        return [str(x) for x in self.interp.splitlist(value)]

    # Policies ----------------------------------------------------------
    def source(self, path: Path) -> None:
        """Load a policy file; raise PolicyError('file:line: message') on any error."""
        try:
            self.interp.call("source", str(path))
        except tkinter.TclError as exc:
            info = str(self.interp.getvar("::errorInfo"))
            where = self.location(info) or f"{path}"
            raise PolicyError(f"{where}: {exc}") from None

    def source_or_restore(self, path: Path) -> None:
        """:meth:`source`, and on error put every proc back as it was before (a failed
        SIGHUP reload must not leave half of the new file's procs in place)."""
        restore = self.interp.call("::fo::SaveProcs")
        try:
            self.source(path)
        except PolicyError:
            self.clear_cancel()  # a load cancelled for its time bound leaves the interpreter cancelled
            self.interp.eval(restore)
            raise

    def run(self, script: str) -> ScriptResult:
        """Evaluate a policy script at global level and catch every error."""
        self.interp.setvar("::fo::_script", script)
        try:
            # eval (not call) so the result comes back as Tcl's string form, not a tuple
            return ScriptResult(True, self.interp.eval("uplevel #0 $::fo::_script"))
        except tkinter.TclError as exc:
            # '::': run() is also called from inside Tcl commands (startservice), where a
            # plain "errorInfo" would be a local variable of the command's proc
            info = str(self.interp.getvar("::errorInfo"))
            return ScriptResult(False, str(exc), self.location(info), info)

    def clear_cancel(self) -> None:
        """After a cancelled evaluation (procedure timeout), make the interpreter usable:
        Tcl fails the next evaluation or two with "eval unwound" until the flag is reset."""
        for _ in range(5):
            try:
                self.interp.call("list")  # Tcl_EvalObjv resets the flag; Tcl_Eval would not
                return
            except tkinter.TclError:
                continue

    def location(self, error_info: str) -> str:
        """The innermost file:line an errorInfo points at, via the proc definitions."""
        procs = _PROC_LINE.findall(error_info)
        for name, line in procs:
            for full in (name, "::" + name.lstrip(":")):
                try:
                    deffile, defline = self.split(self.interp.call("set", f"::fo::procdefs({full})"))
                except tkinter.TclError:
                    continue
                return f"{deffile}:{int(defline) + int(line) - 1}"
        files = _FILE_LINE.findall(error_info)
        if files:
            return f"{files[-1][0]}:{files[-1][1]}"
        if procs:
            return f'procedure "{procs[0][0]}" line {procs[0][1]}'
        return ""


def _arity_message(name: str, exc: TypeError) -> str:
    text = str(exc)
    if "positional argument" in text or "arguments" in text:
        return f'wrong # args for "{name}"'
    return f"{name}: {text}"
