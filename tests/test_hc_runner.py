"""hc's scheduler, flap damping, dependencies, faild updates, actions, monitor and CLIs.

Everything runs against real local servers (failover.lab.fakes), a real faild started
as a subprocess, and hc's monitor on a real ZeroMQ port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import BIN, HcProcess, free_port, wait_for

from failover import client
from failover.cli import hc as hc_cli
from failover.cli import hcmon
from failover.faild.server import host_info
from failover.hc import hcfile, monitor
from failover.hc.runner import Damper, Runner
from failover.lab.fakes import FakeHTTP, FakeSMTP, FakeTCP
from failover.states import State

pytestmark = pytest.mark.process


def node_text(name: str, check: str, *extra: str, deps: str = "", interval: str = "0.1",
              timeout: str = "0.5", fall: int = 2, rise: int = 2) -> str:
    lines = [f"{name}: {deps}", f"    check {check}" if check else "", f"    interval {interval}",
             f"    timeout {timeout}", f"    fall {fall}", f"    rise {rise}", *(f"    {e}" for e in extra)]
    return "\n".join(line for line in lines if line) + "\n"


@pytest.fixture
def running():
    """running(text) -> a started Runner for that Hcfile text; all stopped afterwards."""
    runners: list[Runner] = []

    def start(text: str, **kw) -> Runner:
        r = Runner(hcfile.parse(text, "test"), **kw)
        runners.append(r)
        r.start()
        return r

    yield start
    for r in runners:
        r.stop()


def state(runner: Runner, name: str) -> str:
    return runner.snapshot()[name]["state"]


def transitions(runner: Runner, name: str) -> list[tuple[str | None, str]]:
    with runner.lock:
        return [(t.old.value if t.old else None, t.new.value) for t in runner.store.history if t.service == name]


# --- flap damping --------------------------------------------------------------------

def test_damper_needs_streaks():
    d = Damper(fall=3, rise=2)
    assert [d.feed(ok) for ok in (True, False, True, True, False, False, True, False, False, False)] == \
        [State.RECOVER, State.RECOVER, State.RECOVER, State.UP, State.UP, State.UP, State.UP, State.UP,
         State.UP, State.FAIL]
    assert [d.feed(ok) for ok in (True, False, True, True)] == [State.FAIL, State.FAIL, State.FAIL, State.UP]


@given(fall=st.integers(1, 5), rise=st.integers(1, 5), results=st.lists(st.booleans(), max_size=60))
def test_damper_changes_only_after_a_full_streak(fall, rise, results):
    d = Damper(fall, rise)
    previous = State.RECOVER
    for i, ok in enumerate(results):
        now = d.feed(ok)
        if now is not previous:
            streak = results[max(0, i + 1 - (rise if ok else fall)):i + 1]
            need = rise if ok else fall
            assert len(streak) == need and all(r == ok for r in streak)
            assert now is (State.UP if ok else State.FAIL)
        previous = now


def test_flapping_server_is_damped(running):
    with FakeHTTP("++-") as web:  # two good answers, one error, over and over
        r = running(node_text("web", f"http {web.url}", interval="0.05", fall=2, rise=2))
        assert wait_for(lambda: r.snapshot()["web"]["checks"] >= 12, 5)
        snap = r.snapshot()["web"]
        assert snap["state"] == "UP"
        assert "-" in snap["recent"] and "+" in snap["recent"]
        assert transitions(r, "web") == [(None, "RECOVER"), ("RECOVER", "UP")]
        web.mode = "+--"  # now two errors in a row happen: FAIL, then UP after two successes? never
        assert wait_for(lambda: state(r, "web") == "FAIL", 3)
        assert transitions(r, "web")[-1] == ("UP", "FAIL")
        n = r.snapshot()["web"]["checks"]
        assert wait_for(lambda: r.snapshot()["web"]["checks"] >= n + 9, 3)
        assert state(r, "web") == "FAIL"  # one success at a time never reaches rise 2


# --- concurrency and timeouts ----------------------------------------------------------

def test_hanging_server_does_not_stall_other_checks(running):
    with FakeHTTP("hang") as slow, FakeTCP() as fast:
        text = node_text("slow", f"http {slow.url}", interval="0.1", timeout="0.4", fall=2) + \
            node_text("fast", f"tcp 127.0.0.1:{fast.port}", interval="0.05", rise=1)
        start = time.monotonic()
        r = running(text, workers=2)
        assert wait_for(lambda: state(r, "slow") == "FAIL", 3)
        took = time.monotonic() - start
        snap = r.snapshot()
    assert 0.75 < took < 2.0  # two timeouts of 0.4 s, back to back
    assert snap["slow"]["detail"] == "timed out after 0.4 s"
    assert snap["fast"]["state"] == "UP"
    assert snap["fast"]["checks"] >= 8, snap["fast"]  # kept its 50 ms rhythm meanwhile


def test_a_check_that_never_returns_is_given_up(running):
    release = threading.Event()

    def stuck(spec, timeout):
        release.wait(10)
        return True, "too late"

    try:
        r = running(node_text("stuck", "tcp 127.0.0.1:9", interval="0.1", timeout="0.2", fall=1),
                    check=stuck, grace=0.2)
        assert wait_for(lambda: state(r, "stuck") == "FAIL", 3)
        assert r.snapshot()["stuck"]["detail"] == "check did not return within 0.4 s"
    finally:
        release.set()


def test_error_server_fails_and_recovers(running):
    with FakeSMTP("error") as smtp:
        r = running(node_text("mail", f"smtp 127.0.0.1:{smtp.port}", fall=2, rise=2))
        assert wait_for(lambda: state(r, "mail") == "FAIL", 3)
        assert "554" in r.snapshot()["mail"]["reason"]
        smtp.mode = "ok"
        assert wait_for(lambda: state(r, "mail") == "UP", 3)
        assert transitions(r, "mail") == [(None, "RECOVER"), ("RECOVER", "FAIL"), ("FAIL", "UP")]


def test_dependencies_propagate_failure(running):
    with FakeTCP("error") as db:  # "error": accepts and closes; a connect check still passes
        text = (node_text("db", f"tcp 127.0.0.1:{db.port} expect SSH", fall=1, rise=1)
                + node_text("app", "command true", deps="db", fall=1, rise=1)
                + "site: app\n")
        r = running(text)
        assert wait_for(lambda: state(r, "site") == "FAIL", 3)
        snap = r.snapshot()
        assert (snap["db"]["state"], snap["app"]["state"], snap["app"]["own"]) == ("FAIL", "FAIL", "UP")
        assert snap["site"]["reason"] == "dependency app is FAIL"
        db.mode = "ok"
        assert wait_for(lambda: state(r, "site") == "UP", 3)
        assert r.snapshot()["site"]["reason"] == "dependencies app are UP"


def test_actions_run_on_changes_with_arguments_and_environment(running, tmp_path):
    out = tmp_path / "actions.log"
    with FakeHTTP() as web:
        action = f'action echo "$1 $2 $3 $HC_NODE $HC_STATE" >> {out}'
        r = running(node_text("web", f"http {web.url}", action, fall=1, rise=1))
        assert wait_for(lambda: state(r, "web") == "UP", 3)
        time.sleep(0.2)
        assert not out.exists()  # finding the service fine at start-up is not an event
        web.mode = "error"
        assert wait_for(lambda: out.exists() and "FAIL" in out.read_text(), 3)
        web.mode = "ok"
        assert wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 2, 3)
    assert out.read_text().splitlines() == ["web FAIL UP web FAIL", "web UP FAIL web UP"]


def test_reload_keeps_unchanged_nodes(running):
    with FakeTCP() as srv:
        a = node_text("a", f"tcp 127.0.0.1:{srv.port}", rise=1)
        r = running(a + node_text("b", "command true", rise=1))
        assert wait_for(lambda: state(r, "a") == "UP" and state(r, "b") == "UP", 3)
        r.reload(hcfile.parse(a + node_text("c", "command false", fall=1), "test"))
        assert wait_for(lambda: set(r.snapshot()) == {"a", "c"} and state(r, "c") == "FAIL", 3)
        assert transitions(r, "a") == [(None, "RECOVER"), ("RECOVER", "UP")]
        with r.lock:
            assert "b" not in r.store.records


# --- faild ---------------------------------------------------------------------------

def test_failed_check_sets_fail_and_recovery_sets_recover_never_up(running, faild):
    f = faild
    with f.client() as c:
        c.set("web", "UP", "failsh started it")
    with FakeHTTP() as web:
        r = running(node_text("web", f"http {web.url}", f"faild {f.address} service web", fall=2, rise=2))
        assert wait_for(lambda: state(r, "web") == "UP", 3)
        time.sleep(0.2)
        assert f.state("web") == "UP"  # hc never touches an UP service when healthy
        web.mode = "error"
        assert wait_for(lambda: f.state("web") == "FAIL", 3)
        with f.client() as c:
            last = c.history("web", limit=1)[-1]
            assert last.reason.startswith("hc: check web failed 2 times in a row: HTTP 500")
            assert last.by == "hc from 127.0.0.1"  # hc names itself (agent), faild adds the address
            # someone (failsh's reclaim, failc) sets it back while the check still fails: hc insists
            c.set("web", "RECOVER", "manual")
        assert wait_for(lambda: f.state("web") == "FAIL", 3)
        web.mode = "ok"
        assert wait_for(lambda: f.state("web") == "RECOVER", 3)
        time.sleep(0.3)
        assert f.state("web") == "RECOVER"  # failsh decides about UP


def test_a_fail_hc_did_not_set_is_left_alone(running, faild):
    f = faild
    with f.client() as c:
        c.set("web", "FAIL", "start procedure failed")
    with FakeHTTP() as web:
        r = running(node_text("web", f"http {web.url}", f"faild {f.address}", rise=1))
        assert wait_for(lambda: state(r, "web") == "UP", 3)
        time.sleep(0.3)
    assert f.state("web") == "FAIL"


def test_faild_that_comes_later_still_gets_the_fail(running, faild_factory):
    port = free_port()
    r = running(node_text("web", f"tcp 127.0.0.1:{free_port()}", f"faild 127.0.0.1:{port} timeout 0.2", fall=1))
    assert wait_for(lambda: state(r, "web") == "FAIL", 3)
    time.sleep(0.3)  # a few tries fail
    f = faild_factory(port=port)
    assert wait_for(lambda: f.state("web") == "FAIL", 5)


# --- monitor ---------------------------------------------------------------------------

@pytest.fixture
def monitored(running):
    """A runner with a healthy, a failing and a checkless node, and its monitor."""
    web = FakeHTTP().__enter__()
    r = running(node_text("web", f"http {web.url} body ok", rise=1)
                + node_text("broken", f"tcp 127.0.0.1:{free_port()}", fall=1)
                + "site: web broken\n")
    port = free_port()
    m = monitor.Monitor(r, host_info("hc-test"))
    m.start(f"tcp://127.0.0.1:{port}")
    assert wait_for(lambda: state(r, "web") == "UP" and state(r, "site") == "FAIL", 3)
    yield f"127.0.0.1:{port}"
    m.stop()
    web.stop()


def test_monitor_speaks_faild_protocol(monitored):
    with client.Client(client.endpoint_for(monitored), timeout=1, retries=0) as c:
        assert c.ping().name == "hc-test"
        host, records = c.list()
        assert {r.name: r.state.value for r in records} == {"web": "UP", "broken": "FAIL", "site": "FAIL"}
        reply = c.call("list")
        details = {s["name"]: s["hc"] for s in reply["services"]}
        assert details["web"]["kind"] == "http" and details["web"]["ok"] is True
        assert details["broken"]["detail"] == "connection refused"
        assert details["site"]["deps"] == ["web", "broken"]
        assert c.get("web").state is State.UP
        assert [(t.old, t.new) for t in c.history("broken")][-1] == (State.RECOVER, State.FAIL)
        with pytest.raises(client.RequestFailed) as info:
            c.set("web", "FAIL")
        assert info.value.code == "DENIED"
        with pytest.raises(client.RequestFailed) as info:
            c.get("nosuch")
        assert info.value.code == "NOSERVICE"


def test_healthy(monitored):
    assert monitor.healthy(monitored, "web") is True
    assert monitor.healthy(monitored, "broken") is False
    assert monitor.healthy(monitored, "site") is False
    assert monitor.healthy(f"tcp://{monitored}", "web") is True
    with pytest.raises(client.RequestFailed):
        monitor.healthy(monitored, "nosuch")
    dead = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    assert monitor.healthy(dead, "web", timeout=0.2) is False
    assert monitor.healthy(dead, "web", timeout=0.2, unreachable=True) is True
    assert time.monotonic() - start < 1.0


def test_failstat_shows_hc_checks(monitored, capsys):
    from failover.cli import failstat
    assert failstat.main([monitored]) == 0
    out = capsys.readouterr().out
    assert "broken" in out and "FAIL" in out and "web" in out


def test_hcmon_renders_the_page(monitored, capsys):
    assert hcmon.main([monitored, "--history", "10"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "hc on hc-test" in page and 'class="FAIL">FAIL' in page and "connection refused" in page
    assert "RECOVER &rarr;" in page  # the history table
    assert "Content-Type" not in page
    one = hcmon.page([monitored], check="broken")  # the same page for a dashboard
    assert "connection refused" in one and ">web<" not in one


def test_hcmon_as_cgi(monitored):
    env = {**os.environ, "GATEWAY_INTERFACE": "CGI/1.1", "HCMON_HOSTS": monitored,
           "QUERY_STRING": f"host={monitored}&check=broken", "SCRIPT_NAME": "/cgi-bin/hcmon.cgi"}
    out = subprocess.run([str(BIN / "hcmon"), "ignored-isindex-word"], env=env, capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 0, out.stderr
    head, _, page = out.stdout.partition("\n\n")
    assert head == "Content-Type: text/html; charset=utf-8"
    assert "broken" in page and ">web<" not in page  # narrowed to one check
    assert 'href="/cgi-bin/hcmon.cgi?host=' in page
    env["QUERY_STRING"] = "host=evil.example:1850"
    out = subprocess.run([str(BIN / "hcmon")], env=env, capture_output=True, text=True, timeout=20)
    assert out.stdout.startswith("Status: 400 Bad Request\n") and "not one of HCMON_HOSTS" in out.stdout


def test_hcmon_escapes_and_reports_unreachable_hosts(capsys):
    results = [{"host": "h1", "name": "n", "started": time.time(), "history": [],
                "services": [{"name": "x", "state": "FAIL", "last_change": time.time(), "counter": 1,
                              "hc": {"kind": "http", "detail": "<script>alert(1)</script>", "recent": "+-",
                              "last_check": time.time(), "ok": False}}]},
               {"host": "h2", "error": "no reply & no luck"}]
    page = hcmon.render(results)
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "no reply &amp; no luck" in page
    port = free_port()
    assert hcmon.main([f"127.0.0.1:{port}", "-t", "0.2"]) == 3
    captured = capsys.readouterr()
    assert "no reply" in captured.out and "no reply" in captured.err


# --- the hc command --------------------------------------------------------------------

def test_bad_hcfile_is_one_line_and_exit_5(tmp_path, capsys):
    f = tmp_path / "Hcfile"
    f.write_text("web:\n    check htp http://x/\n")
    assert hc_cli.main(["-f", str(f), "-F"]) == 5
    err = capsys.readouterr().err
    assert err == f"hc: {f}:2: unknown check kind 'htp' (known: tcp, http, dns, smtp, ldap, command)\n"
    assert hc_cli.main(["-f", str(tmp_path / "missing")]) == 5
    assert "missing: cannot read: No such file or directory" in capsys.readouterr().err


def test_check_only_and_once(tmp_path, capsys):
    with FakeHTTP() as web:
        f = tmp_path / "Hcfile"
        f.write_text(node_text("web", f"http {web.url}") + node_text("db", f"tcp 127.0.0.1:{free_port()}")
                     + "site: web db\n")
        assert hc_cli.main(["-n", "-f", str(f)]) == 0
        assert capsys.readouterr().out == f"{f}: 3 nodes (web, db, site)\n"
        assert hc_cli.main(["-1", "-f", str(f)]) == 1
        lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("web   ok    HTTP 200 OK in")
    assert lines[1] == "db    FAIL  connection refused"
    assert lines[2] == "site  FAIL  dependency db failed"


def test_hc_daemon_monitor_reload_and_stop(tmp_path):
    f = tmp_path / "Hcfile"
    f.write_text(node_text("one", "command true", rise=1))
    hc = HcProcess(tmp_path, f).start()
    log, addr = hc.logfile, hc.address
    try:
        assert wait_for(lambda: monitor.healthy(addr, "one", timeout=0.2), 10), log.read_text()
        assert hc.proc is not None and hc.pidfile.read_text().strip() == str(hc.proc.pid)
        f.write_text("broken:\n")
        hc.send(signal.SIGHUP)
        assert wait_for(lambda: "keeping the previous configuration" in log.read_text(), 5)
        assert monitor.healthy(addr, "one", timeout=0.5)
        f.write_text(node_text("two", "command false", fall=1))
        hc.send(signal.SIGHUP)
        with client.Client(client.endpoint_for(addr), timeout=0.5, retries=0) as c:
            assert wait_for(lambda: [r.name for r in c.list()[1]] == ["two"], 5)
        assert wait_for(lambda: "two RECOVER -> FAIL" in log.read_text(), 5)
        assert hc.stop(timeout=5) == 0
    finally:
        hc.kill9()
    text = log.read_text()
    assert f"{f}:1: node 'broken' has neither" in text and "Traceback" not in text
    assert not (tmp_path / "hc.pid").exists()


def test_monitor_port_in_use_is_exit_5(tmp_path):
    f = tmp_path / "Hcfile"
    f.write_text(node_text("one", "command true"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        out = subprocess.run([str(BIN / "hc"), "-F", "-m", "-l", "127.0.0.1", "-p", str(port), "-f", str(f)],
                             capture_output=True, text=True, timeout=30)
    assert out.returncode == 5
    assert "cannot serve the monitor on 127.0.0.1 port" in out.stderr and "Traceback" not in out.stderr
