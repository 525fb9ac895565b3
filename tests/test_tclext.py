"""The Tcl side of failsh with a real interpreter (TclHost + Commands), no network.

Policies are loaded with ``source`` from files in tmp_path, as failsh does, so error
locations are real file:line pairs.
"""

from __future__ import annotations

import os
import threading
import time
import tkinter
from pathlib import Path

import pytest
from conftest import wait_for

from failover.shell.commands import Commands
from failover.shell.policy import MIN_INTERVAL, Policy
from failover.shell.procedures import Outcome, OutcomeKind, _children, cancel_running, run_procedure
from failover.shell.tclhost import PolicyError, TclCommandError, TclHost
from failover.states import State

pytestmark = pytest.mark.fast


def tcl_error(tcl: TclHost, script: str) -> tuple[str, str]:
    """(message, errorcode) of a script that must fail."""
    out = tcl.interp.eval(f"list [catch {{{script}}} msg opts] $msg [dict get $opts -errorcode]")
    rc, msg, code = tcl.split(out)
    assert rc == "1", f"{script!r} did not fail"
    return msg, code


def write(tmp_path: Path, text: str, name: str = "policy.tcl") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# failsvc ----------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["failsvc web masters {www2 www3}", "failsvc web masters www2 www3",
                                  "failsvc web masters {www2} www3", "failsvc web masters [list www2 www3]"])
def test_masters_as_one_list_or_several_words(tcl: TclHost, cmds: Commands, form: str) -> None:
    tcl.interp.eval(form)
    assert cmds.policy.services["web"].masters == ["www2", "www3"]
    assert set(cmds.policy.hosts) == {"www2", "www3"}


def test_local_node_is_dropped_from_its_lists(tcl: TclHost, cmds: Commands) -> None:
    tcl.interp.eval("failsvc web masters {www1 www0}; failsvc web slaves {www2 www1 www2}")
    svc = cmds.policy.services["web"]
    assert (svc.masters, svc.slaves) == (["www0"], ["www2"])
    assert "www1" not in cmds.policy.hosts


def test_failsvc_values_and_description(tcl: TclHost, cmds: Commands) -> None:
    tcl.interp.eval("""
        failsvc web interval 2.5
        failsvc web timeout 7
        failsvc web start {startweb now}
        failsvc web stop stopweb
        failsvc web reclaim reclaimweb
        failsvc web check {fo::hasip 10.0.0.1 eth0}
        failsvc web slaves www2
    """)
    svc = cmds.policy.services["web"]
    assert (svc.interval, svc.timeout, svc.start, svc.check) == (2.5, 7.0, "startweb now", "fo::hasip 10.0.0.1 eth0")
    desc = tcl.split(tcl.interp.eval("failsvc web"))
    assert dict(zip(desc[::2], desc[1::2], strict=True))["slaves"] == "www2"
    assert tcl.interp.eval("dict get [failsvc web] interval") == "2.5"


@pytest.mark.parametrize(("script", "code", "message"), [
    ("failsvc web flavour vanilla", "FAILOVER BADSUBCOMMAND flavour", 'unknown failsvc subcommand "flavour"'),
    ("failsvc web interval soon", "FAILOVER BADVALUE soon", 'expected a number of seconds for interval but got "soon"'),
    ("failsvc web interval 0", "FAILOVER BADVALUE 0", f"interval must be between {MIN_INTERVAL:g} and 86400"),
    ("failsvc web interval -1", "FAILOVER BADVALUE -1", "interval must be between"),
    ("failsvc web interval NaN", "FAILOVER BADVALUE NaN", "interval must be between"),
    ("failsvc web interval 1 2", "FAILOVER USAGE", 'wrong # args: should be "failsvc web interval value"'),
    ("failsvc web timeout 0", "FAILOVER BADVALUE 0", "timeout must be between"),
    ("failsvc {bad name} interval 1", "FAILOVER BADNAME {bad name}", 'invalid service name "bad name"'),
    ("failsvc web masters {ok no/slash}", "FAILOVER BADNAME no/slash", 'invalid host name "no/slash"'),
    ('failsvc web masters "a \\{b"', "FAILOVER BADVALUE", "invalid host list for masters"),
    ("failsvc", "FAILOVER USAGE", 'wrong # args: should be "failsvc service ?subcommand value ...?"'),
    ("failsvc nosuch", "FAILOVER NOSERVICE nosuch", 'unknown service "nosuch"'),
])
def test_failsvc_errors(tcl: TclHost, cmds: Commands, script: str, code: str, message: str) -> None:
    msg, errorcode = tcl_error(tcl, script)
    assert message in msg
    assert errorcode == code
    assert cmds.policy.services == {}  # a failed command leaves no half-made service


# failhost ---------------------------------------------------------------------------
def test_failhost_settings(tcl: TclHost, cmds: Commands) -> None:
    tcl.interp.eval("""
        failhost www2 port 1900
        failhost www2 protocol udp
        failhost www3 protocol TCP
        failhost www2 address 10.0.0.2
        failhost www4 address {[2001:db8::4]:1900}
        failhost www2 community s3cret
        failhost www2 deadtime 4
        failhost www2 monitor 1900
        failhost www3 monitor 0
    """)
    h = cmds.policy.hosts["www2"]
    assert (h.port, h.protocol, h.address, h.community, h.deadtime, h.monitor) == \
        (1900, "udp", "10.0.0.2", "s3cret", 4.0, 1900)
    assert (cmds.policy.hosts["www3"].protocol, cmds.policy.hosts["www3"].monitor) == ("tcp", 0)
    assert cmds.policy.hosts["www4"].monitor == 1848  # the failsh feed's default port


def test_failhost_of_the_local_node_is_checked_and_ignored(tcl: TclHost, cmds: Commands) -> None:
    """One policy file serves all hosts: www1's own lines must load on www1."""
    tcl.interp.eval("failhost www1 port 1900; failhost www1 monitor 0")
    assert cmds.policy.hosts == {}
    assert tcl_error(tcl, "failhost www1 port 0")[1] == "FAILOVER BADVALUE 0"


@pytest.mark.parametrize(("script", "code", "message"), [
    ("failhost www2 port 0", "FAILOVER BADVALUE 0", 'invalid port "0": expected 1..65535'),
    ("failhost www2 port 65536", "FAILOVER BADVALUE 65536", 'invalid port "65536"'),
    ("failhost www2 port http", "FAILOVER BADVALUE http", 'invalid port "http"'),
    ("failhost www2 monitor 65536", "FAILOVER BADVALUE 65536", 'invalid port "65536": expected 0..65535'),
    ("failhost www2 monitor -1", "FAILOVER BADVALUE -1", 'invalid port "-1"'),
    ("failhost www2 protocol sctp", "FAILOVER BADVALUE sctp", 'invalid protocol "sctp": must be tcp or udp'),
    ("failhost www2 colour blue", "FAILOVER BADSUBCOMMAND colour", 'unknown failhost subcommand "colour"'),
    ("failhost www2 port", "FAILOVER USAGE", 'wrong # args: should be "failhost hostname'),
    ("failhost www2 deadtime 0", "FAILOVER BADVALUE 0", "deadtime must be between"),
    ("failhost www2 address {a b}", "FAILOVER BADVALUE {a b}", 'invalid address "a b"'),
    ("failhost www2 address {a;b}", "FAILOVER BADVALUE {a;b}", 'invalid address "a;b"'),
    ("failhost www2 address tcp://h:1", "FAILOVER BADVALUE tcp://h:1", 'invalid address "tcp://h:1"'),
])
def test_failhost_errors(tcl: TclHost, cmds: Commands, script: str, code: str, message: str) -> None:
    msg, errorcode = tcl_error(tcl, script)
    assert message in msg
    assert errorcode == code
    assert cmds.policy.hosts == {}


# failtrap ---------------------------------------------------------------------------
def test_failtrap_register_list_delete(tcl: TclHost, cmds: Commands) -> None:
    tcl.interp.eval("failtrap state web {ontrap s}; failtrap peer * {ontrap p}; failtrap remote * {ontrap r}")
    assert [(t.kind, t.pattern) for t in cmds.policy.traps] == [("state", "web"), ("peer", "*"), ("remote", "*")]
    assert tcl.split(tcl.interp.eval("lindex [failtrap list] 0")) == ["state", "web", "ontrap s"]
    tcl.interp.eval("failtrap delete peer *")
    assert [t.kind for t in cmds.policy.traps] == ["state", "remote"]
    msg, code = tcl_error(tcl, "failtrap reboot * {x}")
    assert 'unknown failtrap event "reboot"' in msg and code == "FAILOVER BADSUBCOMMAND reboot"
    msg, code = tcl_error(tcl, "failtrap state")
    assert code == "FAILOVER USAGE"


def test_trap_callback_gets_its_arguments_as_list_elements(tcl: TclHost) -> None:
    tcl.interp.eval("proc rec {tag args} { set ::got [list $tag {*}$args] }")
    r = tcl.callback("rec state", "web", "RECOVER", "UP", "master www1 down; start returned UP")
    assert r.ok
    assert tcl.split(tcl.interp.getvar("got")) == ["state", "web", "RECOVER", "UP",
                                                   "master www1 down; start returned UP"]


# Python errors become Tcl errors -------------------------------------------------------
def test_python_exceptions_become_tcl_errors(tcl: TclHost) -> None:
    def boom(*_args: str) -> str:
        raise ValueError("lost message?")

    def refuse(*_args: str) -> str:
        raise TclCommandError("not today", "NOPE", "x")

    def two(a: str, b: str) -> str:
        return a + b

    tcl.expose("boom", boom)
    tcl.expose("refuse", refuse)
    tcl.expose("two", two)
    assert tcl_error(tcl, "boom") == ("boom: ValueError: lost message?", "PYTHON ValueError")
    assert tcl_error(tcl, "refuse") == ("not today", "FAILOVER NOPE x")
    assert tcl_error(tcl, "two a") == ('wrong # args for "two"', "TCL WRONGARGS")
    assert tcl.interp.eval("two a b") == "ab"
    # tkinter keeps no exception to raise later from the event loop
    tcl.interp.mainloop()


def test_engine_commands_refused_while_loading(tcl: TclHost, cmds: Commands) -> None:
    for script in ("getstate web", "setstate web UP", "peers", "schedule on", "startservice web"):
        msg, code = tcl_error(tcl, script)
        assert "not available while the policy is loading" in msg and code == "FAILOVER NOTREADY"
    assert tcl.interp.eval("node") == "www1"
    tcl.interp.eval("failsvc web interval 1; failsvc db interval 2")
    assert tcl.interp.eval("services") == "db web"


def test_fo_log(tcl: TclHost, cmds: Commands, caplog: pytest.LogCaptureFixture) -> None:
    tcl.interp.eval("fo::log warning disk almost full")
    assert "disk almost full" in caplog.text
    msg, code = tcl_error(tcl, "fo::log loud x")
    assert code == "FAILOVER USAGE"


# Policy files: errors carry file:line ---------------------------------------------------
def test_syntax_error_names_file_and_line(tcl: TclHost, cmds: Commands, tmp_path: Path) -> None:
    p = write(tmp_path, "failsvc web interval 1\n\nproc startweb {args} {\n    return UP\n")
    with pytest.raises(PolicyError, match=rf"^{p}:3: missing close-brace"):
        tcl.source(p)


def test_unknown_subcommand_in_file_names_its_line(tcl: TclHost, cmds: Commands, tmp_path: Path) -> None:
    p = write(tmp_path, "# web\nfailsvc web interval 1\nfailsvc web masters {www2}\nfailsvc web start-proc x\n")
    with pytest.raises(PolicyError) as info:
        tcl.source(p)
    assert str(info.value).startswith(f"{p}:4: unknown failsvc subcommand \"start-proc\"")


def test_missing_file(tcl: TclHost, tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="couldn't read file"):
        tcl.source(tmp_path / "nope.tcl")


def test_run_time_error_in_a_proc_reports_the_policy_line(tcl: TclHost, cmds: Commands, tmp_path: Path) -> None:
    p = write(tmp_path, """# line 1
proc helper {} {
    return [undefined_command]
}

proc startweb {args} {
    set x 1
    helper
}
namespace eval ::site {
    proc stopweb {args} {
        error "cannot stop"
    }
}
failsvc web start startweb
""")
    tcl.source(p)
    r = tcl.run("startweb")
    assert not r.ok and r.value == 'invalid command name "undefined_command"'
    assert r.where == f"{p}:3"
    r = tcl.run("::site::stopweb")
    assert (r.value, r.where) == ("cannot stop", f"{p}:12")
    out = run_procedure(tcl, "web", "start", "startweb", 5)
    assert (out.state, out.kind) == (State.FAIL, OutcomeKind.FAILED)
    assert out.reason == f'start procedure failed at {p}:3: invalid command name "undefined_command"'


def test_proc_redefined_at_the_prompt_forgets_its_file_line(tcl: TclHost, tmp_path: Path) -> None:
    p = write(tmp_path, "proc f {} {\n    error one\n}\n")
    tcl.source(p)
    assert tcl.run("f").where == f"{p}:2"
    tcl.run("proc f {} {\n    error two\n}")
    assert tcl.run("f").where == 'procedure "f" line 2'


def test_failed_reload_puts_every_proc_back(tcl: TclHost, tmp_path: Path) -> None:
    """A reload that breaks on line 6 must not keep the procs its lines 1-5 redefined."""
    old = write(tmp_path, "proc f {a {b 2}} {\n    error one\n}\nnamespace eval ::my { proc g {} { return g1 } }\n")
    tcl.source(old)
    new = tmp_path / "new.tcl"
    new.write_text("proc f {} { return two }\nproc h {} {}\nnamespace eval ::my { proc g {} { return g2 } }\n"
                   "namespace eval ::new { proc k {} {} }\n\nfailsvc web interval soon\n")
    with pytest.raises(PolicyError, match=f"{new}:6: "):
        tcl.source_or_restore(new)
    assert tcl.run("f x").where == f"{old}:2"                  # the old body, and its file:line
    assert tcl.interp.eval("info args f") == "a b" and tcl.interp.eval("info default f b d; set d") == "2"
    assert tcl.interp.eval("::my::g") == "g1"
    assert tcl.interp.eval("info procs h") == "" and tcl.interp.eval("info procs ::new::k") == ""
    new.write_text("proc f {} { return two }\n")              # a good file loads as before
    tcl.source_or_restore(new)
    assert tcl.interp.eval("f") == "two"


# Procedures ---------------------------------------------------------------------------
OK, FAILED, BAD = OutcomeKind.OK, OutcomeKind.FAILED, OutcomeKind.BAD_RESULT


@pytest.mark.parametrize(("script", "state", "reason", "kind"), [
    ("return UP", State.UP, "start procedure returned UP", OK),
    ("return recover", State.RECOVER, "start procedure returned RECOVER", OK),
    ("return { FAIL }", State.FAIL, "start procedure returned FAIL", OK),
    ("return maybe", State.FAIL, "start procedure returned 'maybe', not UP, RECOVER or FAIL", BAD),
    ("return 1", State.FAIL, "start procedure returned '1', not UP, RECOVER or FAIL", BAD),
    ("return {}", State.FAIL, "start procedure returned '', not UP, RECOVER or FAIL", BAD),
    ("error {disk on fire}", State.FAIL, "start procedure failed: disk on fire", FAILED),
    ("exec false", State.FAIL, "start procedure failed: child process exited abnormally", FAILED),
])
def test_procedure_results(tcl: TclHost, script: str, state: State, reason: str, kind: OutcomeKind) -> None:
    out = run_procedure(tcl, "web", "start", script, 5)
    assert out == Outcome(state, reason, kind)
    assert out.error is (kind is not OK)


@pytest.mark.parametrize(("result", "state"), [("1", State.UP), ("yes", State.UP), ("UP", State.UP),
                                                ("0", State.FAIL), ("false", State.FAIL),
                                                ("RECOVER", State.RECOVER), ("perhaps", State.FAIL)])
def test_check_accepts_states_and_booleans(tcl: TclHost, result: str, state: State) -> None:
    out = run_procedure(tcl, "web", "check", f"return {result}", 5)
    assert out.state is state
    assert out.kind is {"1": OutcomeKind.BOOL_CHECK, "yes": OutcomeKind.BOOL_CHECK, "0": OutcomeKind.BOOL_CHECK,
                        "false": OutcomeKind.BOOL_CHECK, "perhaps": OutcomeKind.BAD_RESULT}.get(result, OK)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_timeout_kills_the_exec_and_only_it(tcl: TclHost, tmp_path: Path) -> None:
    # a daemon an earlier start procedure left running must survive a later timeout
    older = tcl.run("exec sleep 60 &")
    assert older.ok
    older_pid = int(older.value)
    pidfile = tmp_path / "pid"
    t0 = time.monotonic()
    out = run_procedure(tcl, "web", "start", f"exec sh -c {{echo $$ > {pidfile}; exec sleep 30}}", 0.5)
    state, why = out.state, out.reason
    took = time.monotonic() - t0
    assert state is State.FAIL and out.kind is OutcomeKind.TIMEOUT and out.error
    assert why.startswith("start procedure timed out after 0.5 s") and "1 processes it started were killed" in why
    assert took < 3, took
    assert not _alive(int(pidfile.read_text()))
    assert _alive(older_pid)
    assert tcl.run("set after ok").value == "ok"  # the interpreter is usable again
    os.kill(older_pid, 9)
    os.waitpid(older_pid, 0)


def test_timeout_of_a_proc_doing_exec_sleep(tcl: TclHost) -> None:
    tcl.interp.eval("proc slow {args} { exec sleep 30 }")
    t0 = time.monotonic()
    out = run_procedure(tcl, "web", "stop", "slow", 0.5)
    state, why = out.state, out.reason
    assert (state, why.split(";")[0]) == (State.FAIL, "stop procedure timed out after 0.5 s")
    assert time.monotonic() - t0 < 2.5
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():  # no "sleep 30" of ours is left
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        assert not (cmdline == b"sleep\x0030\x00" and ppid == me), f"sleep 30 still runs as {entry.name}"


@pytest.mark.parametrize("script", ["while 1 {}", "while 1 {catch {after 50}}", "after 30000", "vwait forever"])
def test_timeout_cancels_pure_tcl(tcl: TclHost, script: str) -> None:
    before = set(_children(os.getpid()))
    t0 = time.monotonic()
    out = run_procedure(tcl, "web", "reclaim", script, 0.3)
    state, why = out.state, out.reason
    assert state is State.FAIL and "timed out" in why
    assert time.monotonic() - t0 < 2.5
    assert tcl.run("expr {6 * 7}").value == "42"
    assert set(_children(os.getpid())) <= before


def test_whatif_says_what_a_run_would_do_now() -> None:
    """With a running engine whatif decides on the live inputs of a run, every gate
    included (grace, the split-brain guard), and never runs the tie-breaker itself."""
    from failover.model import ServiceRecord
    from failover.shell.engine import Engine, Options
    from failover.shell.peers import PeerView

    engine = Engine(Options(node="www2", scheduling=False))
    engine.tcl.interp.eval("""
        set ::asked 0
        proc ask {args} { incr ::asked; return 1 }
        failsvc web masters www1
        failsvc web tiebreaker ask
    """)
    rec = {"web": ServiceRecord("web", State.UP, time.time(), 3)}

    class FakeNet:  # what the inputs of a run read of the network thread
        snapshot = {"www1": PeerView("www1", "tcp://127.0.0.1:1", status="up", services=rec),
                    "www2": PeerView("www2", "tcp://127.0.0.1:2", status="up")}  # the local faild

    engine.net = FakeNet()  # type: ignore[assignment]
    engine.commands.engine = engine
    engine.states.activated_at = time.monotonic()  # failsh just began deciding
    ev = engine.tcl.interp.eval
    assert ev("whatif web").startswith("wait: grace for master www1")  # faild answers, no lease yet
    assert ev("whatif web www1 DOWN").startswith("ask: would ask the tie-breaker (master www1 silent")
    assert ev("whatif web www1 FAIL") == "start: master www1 down (set FAIL by whatif) and no slave is UP"  # no guard
    assert ev("whatif web local UP") == "none: UP and no master is ready"  # no lease: www1 counts FAIL
    assert ev("set ::asked") == "0"
    engine.scheduler.stop()


def test_a_cancelled_procedure_is_not_a_policy_error(tcl: TclHost) -> None:
    """SIGTERM or Ctrl-C cancels a running procedure: FAIL, kind cancelled, not counted as an error."""
    timer = threading.Timer(0.2, cancel_running, ("cancelled: failsh got SIGTERM",))
    timer.start()
    out = run_procedure(tcl, "web", "stop", "after 30000", 10)
    timer.join()
    assert (out.state, out.kind, out.error) == (State.FAIL, OutcomeKind.CANCELLED, False)
    assert out.reason.startswith("stop procedure cancelled: failsh got SIGTERM")


# whatif -------------------------------------------------------------------------------
def test_whatif(tcl: TclHost, cmds: Commands) -> None:
    tcl.interp.eval("failsvc web masters {a b}; failsvc web slaves c; failsvc web reclaim fix")
    ev = tcl.interp.eval
    # defaults: RECOVER, every peer silent
    assert ev("whatif web") == "start: master a, b down (faild does not answer) and no slave is UP"
    assert ev("whatif web a FAIL b DOWN") == \
        "start: master a, b down (a: set FAIL by whatif; b: faild does not answer) and no slave is UP"
    assert ev("whatif web a DOWN b RECOVER") == "wait: master b is RECOVER"
    assert ev("whatif web local UP a UP") == "stop: master a is UP: handing back"
    assert ev("whatif web c UP") == "wait: no master ready; waiting for slave c to yield"
    assert ev("whatif web local fail") == "reclaim: service is FAIL, trying its reclaim procedure"
    assert tcl_error(tcl, "whatif web d UP") == ('host "d" is neither master nor slave of web', "FAILOVER NOPEER d")
    assert tcl_error(tcl, "whatif web a")[1] == "FAILOVER USAGE"
    assert tcl_error(tcl, "whatif web a SIDEWAYS")[1] == "FAILOVER BADSTATE SIDEWAYS"
    assert tcl_error(tcl, "whatif nosuch")[1] == "FAILOVER NOSERVICE nosuch"


def test_library_is_loadable(tcl: TclHost, cmds: Commands) -> None:
    from failover.shell.engine import TCL_LIBRARY
    tcl.source(TCL_LIBRARY)
    assert tcl.interp.eval("fo::sh true") == "1"
    assert tcl.interp.eval("fo::sh false") == "0"
    assert tcl.interp.eval("fo::hasip 192.0.2.77 lo") == "0"
    assert tcl.interp.eval("fo::hasip 127.0.0.1 lo") == "1"
    assert tcl.interp.eval("fo::hasip 0:0::1 lo") == "1"         # IPv6, any spelling (ip -j, canonical)
    assert tcl.interp.eval("fo::hasip 127.0.0.1 nosuchdev0") == "0"
    assert "127.0.0.1" in tcl.split(tcl.interp.eval("fo::ipaddrs lo"))
    assert "127.0.0.1/8" in tcl.split(tcl.interp.eval("fo::ipaddrs -prefix lo"))   # the length lo has
    assert tcl.interp.eval("fo::ipaddrs -prefix nosuchdev0") == ""
    for bad in ("fo::ipaddrs", "fo::ipaddrs -prefix", "fo::ipaddrs -x lo", "fo::ipaddrs lo lo"):
        assert tcl_error(tcl, bad) == ('wrong # args: should be "fo::ipaddrs ?-prefix? device"',
                                       "FAILOVER TCL WRONGARGS")
    assert tcl.interp.eval("fo::ipcanon FD99:0::0001/64") == "fd99::1"
    with pytest.raises(tkinter.TclError, match='not an IP address: "10.1"'):
        tcl.interp.eval("fo::ipcanon 10.1")
    assert tcl.interp.eval("fo::ipup 10.1 lo") == "FAIL"        # logged, not raised
    # fo::announce (fo::ipup's first announcement, from failsh itself): errors are Tcl errors
    assert tcl_error(tcl, "fo::announce lo") == ('wrong # args: should be "fo::announce device address"',
                                                 "FAILOVER USAGE")
    assert tcl_error(tcl, "fo::announce lo 10.1") == ("fo::announce: not an IP address: '10.1'", "FAILOVER ANNOUNCE")
    message, code = tcl_error(tcl, "fo::announce nosuchdev0 192.0.2.7")
    assert code == "FAILOVER ANNOUNCE" and ("nosuchdev0" in message or "CAP_NET_RAW" in message), message


def test_garp_does_not_hold_the_policy_thread(tcl: TclHost, cmds: Commands, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """fo::garp (in every start and announce of the VIP samples) returns while its announcer
    still runs: it spaces its announcements a second apart, and SIGTERM or other services'
    runs must not wait for it.  A failure is still logged once the command ends."""
    from failover.shell.engine import TCL_LIBRARY
    tcl.source(TCL_LIBRARY)
    release, done = tmp_path / "release", tmp_path / "done"
    fake = tmp_path / "announce"
    fake.write_text(f"#!/bin/sh\nfor i in $(seq 100); do [ -e {release} ] && break; sleep 0.05; done\n"
                    f"echo \"$@\" > {done}\necho no such device >&2\nexit 2\n")
    fake.chmod(0o755)
    tcl.interp.setvar("::fo::announcer", str(fake))
    assert tcl.interp.eval("fo::garp 192.0.2.10/24 eth9") == ""
    assert not done.exists()                       # returned while the announcer waits
    release.touch()
    assert wait_for(lambda: tcl.interp.dooneevent(2) is not None and f"command failed: {fake}" in caplog.text, 10)
    assert done.read_text().split() == ["eth9", "192.0.2.10", "--count", "2", "--delay", "1"]
    assert "no such device" in caplog.text


def test_garpcount_and_garpdelay_reach_the_announcer(tcl: TclHost, cmds: Commands, tmp_path: Path) -> None:
    """::fo::garpcount/::fo::garpdelay, set by the policy after the library loaded, are read
    at every fo::garp (the namespace test bed counts the frames: tests/test_announce.py)."""
    from failover.shell.engine import TCL_LIBRARY
    tcl.source(TCL_LIBRARY)
    assert (tcl.interp.eval("set ::fo::garpcount"), tcl.interp.eval("set ::fo::garpdelay")) == ("2", "1")
    done = tmp_path / "done"
    fake = tmp_path / "announce"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {done}\n")
    fake.chmod(0o755)
    tcl.interp.setvar("::fo::announcer", str(fake))
    tcl.interp.eval("set ::fo::garpcount 5; set ::fo::garpdelay 0.5; fo::garp 2001:DB8:0::10/64 eth9")
    assert wait_for(lambda: tcl.interp.dooneevent(2) is not None and done.exists() and done.read_text(), 10)
    assert done.read_text().split() == ["eth9", "2001:db8::10", "--count", "5", "--delay", "0.5"]


def test_ipdown_stops_a_garp_still_running(tcl: TclHost, cmds: Commands, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """The second announcement of fo::garp comes a second after the first: if the address is
    given up meanwhile, it would send the clients back to a host that no longer has it."""
    from failover.shell.engine import TCL_LIBRARY
    tcl.source(TCL_LIBRARY)
    started = tmp_path / "started"
    fake = tmp_path / "announce"
    fake.write_text(f"#!/bin/sh\ntouch {started}\nexec sleep 30\n")  # one process, as the announcer is
    fake.chmod(0o755)
    tcl.interp.setvar("::fo::announcer", str(fake))
    tcl.interp.eval("fo::garp 192.0.2.10/24 eth9")
    wait_for(started.exists, 10, "the fake announcer to start")
    assert tcl.interp.eval("fo::ipdown 192.0.2.10/24 eth9") == "RECOVER"   # eth9 does not exist: nothing to del
    assert wait_for(lambda: tcl.interp.dooneevent(2) is not None and tcl.interp.eval("array size ::fo::bgout") == "0",
                    10, "the killed announcer to be reaped")  # well before its 30 s
    assert "command failed" not in caplog.text


def test_tkinter_errors_do_not_leak(tcl: TclHost, cmds: Commands) -> None:
    with pytest.raises(tkinter.TclError, match="unknown failsvc subcommand"):
        tcl.interp.eval("failsvc web nope 1")


def test_a_hanging_trap_is_cancelled(tcl: TclHost, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    from failover.shell import traps

    monkeypatch.setattr(traps, "TRAP_TIMEOUT", 0.3)
    tcl.interp.eval("proc slowtrap {args} { after 30000 }")
    t0 = time.monotonic()
    traps.Traps(tcl, lambda: Policy("www1")).run("slowtrap", "web", "RECOVER", "UP", "why")
    assert time.monotonic() - t0 < 2.5
    assert "failtrap script 'slowtrap' timed out after 0.3 s" in caplog.text
    assert tcl.run("set ok 1").value == "1"


def test_no_nested_runs_of_a_service_while_its_procedure_waits_in_the_event_loop() -> None:
    """A procedure that enters the event loop (vwait, update) must not let the scheduler
    run the same service again inside it: that would start it twice."""
    from failover.shell.engine import Engine, Options
    from failover.shell.peers import PeerView

    engine = Engine(Options(node="www1"))
    engine.tcl.interp.eval("""
        set ::starts 0
        proc startweb {args} {
            incr ::starts
            after 100 {set ::waited 1}
            vwait ::waited
            return UP
        }
        failsvc web interval 0.05
        failsvc web start startweb
    """)

    class FakeNet:  # what run_service reads of the network thread
        snapshot = {"www1": PeerView("www1", "tcp://127.0.0.1:1", status="up")}

        def is_alive(self) -> bool:
            return True

    engine.net = FakeNet()  # type: ignore[assignment]
    engine.states.local["web"] = State.RECOVER
    engine.states.active = False  # nothing is written anywhere
    engine.scheduler.sync({"web": 0.05})  # ticks fire while startweb waits in vwait
    engine.run_service("web")
    engine.scheduler.stop()
    assert engine.tcl.interp.getvar("::starts") == 1
    assert engine.states.local["web"] is State.UP


def test_healthy_without_an_hc(tcl: TclHost, cmds: Commands) -> None:
    """No hc answers: 0, or what -unreachable says; fo::hcok (for reclaim procedures) says 1."""
    from failover.lab.loopback import free_port
    from failover.shell.engine import TCL_LIBRARY
    tcl.source(TCL_LIBRARY)
    nobody = f"127.0.0.1:{free_port()}"
    ev = tcl.interp.eval
    assert ev(f"healthy web {nobody} 0.1") == "0"
    assert ev(f"healthy -unreachable 1 web {nobody} 0.1") == "1"
    assert ev(f"healthy -unreachable 0 web {nobody} 0.1") == "0"
    assert ev(f"fo::hcok web {nobody}") == "1"
    for bad in ("healthy", "healthy -unreachable", "healthy -unreachable yes web", "healthy a b c d"):
        assert tcl_error(tcl, bad)[1] == "FAILOVER USAGE", bad
