"""failsh end to end: real faild and failsh processes on loopback (tests/cluster.py).

Intervals are 0.3 s, so a failsh killed with -9 is counted FAIL by its peers after its
lease (2.5 intervals) runs out.  Every wait is a bounded poll; the fixtures kill every
process they started, whatever the outcome.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import stat
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster import Cluster, both_up
from conftest import FaildProcess, run_cli, wait_for

from failover.client import Client, RequestFailed

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent

# The brief's smoke test: one file for both hosts (each is dropped from its own lists)
WEB = r"""
proc startweb {args} { return [svc_start web] }
proc stopweb {args} { return [svc_stop web] }
proc reclaimweb {args} { return [svc_reclaim web] }
proc trap {kind args} {
    set f [open [fo_file trap log] a]; puts $f "$kind [join $args |]"; close $f
}
failsvc web interval 0.3
failsvc web masters {www1}
failsvc web slaves {www2}
failsvc web start startweb
failsvc web stop stopweb
failsvc web reclaim reclaimweb
failtrap peer * {trap peer}
failtrap remote web {trap remote}
failtrap state * {trap state}
"""


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(names: list[str], policy: str, **options: object) -> Cluster:
        c = Cluster(tmp_path / f"cluster{len(made)}", names, policy, **options)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def trap_lines(c: Cluster, name: str) -> list[str]:
    try:
        return (c.dir / f"{name}.trap.log").read_text().splitlines()
    except OSError:
        return []


def test_kill9_of_failsh_is_noticed_at_the_next_poll(make_cluster: Callable[..., Cluster]) -> None:
    """failsh names its process in its lease, so faild ends the lease when failsh dies: the
    slave takes over at its next poll (interval 3 s), not after the lease's 7.5 s."""
    c = make_cluster(["www1", "www2"], WEB + "failsvc web interval 3\n")
    c.start_master_then_slave()
    c.failsh["www1"].kill9()
    took = c.wait_states("web", {"www2": "UP"}, timeout=15)
    assert took < 6, f"the slave took over only after {took:.1f} s: the lease ran its ttl"


def test_master_slave_failover_and_handback(make_cluster: Callable[..., Cluster]) -> None:
    # a long deadtime for www1 makes www2's start-up grace (waiting for www1's lease) sure
    c = make_cluster(["www1", "www2"], WEB + "failhost www1 deadtime 3\n")
    c.start("www2")
    c.start_failsh("www1")
    boot = c.sample("web", lambda s: s == {"www1": "UP", "www2": "RECOVER"}, effective=True)
    assert not any(s["www2"] == "UP" for s in boot), "the slave started while the master was booting"
    wait_for(lambda: any(line.startswith("remote web|www1|") and line.endswith("|UP")
                         for line in trap_lines(c, "www2")), 5, "www2 to see www1 UP")

    # kill -9 of the master's failsh: its lease runs out, the slave takes over
    c.failsh["www1"].kill9()
    took = c.wait_states("web", {"www2": "UP"})
    assert took < 5, f"slave took {took:.1f} s"
    assert c.state("www1", "web") == "UP"  # stale in faild, but without a lease: counted FAIL
    wait_for(lambda: "remote web|www1|UP|FAIL" in trap_lines(c, "www2"), 5, "remote trap on www2")
    lines = trap_lines(c, "www2")
    assert "peer www1|unknown|up" in lines
    assert any(line.startswith("state web|RECOVER|UP|master www1 down") for line in lines), lines

    # the master comes back: it stops what the dead failsh left UP, then takes the service
    # back; the peers (which only believe a host with a lease) never see two UP
    c.start_failsh("www1")
    samples = c.sample("web", lambda s: s == {"www1": "UP", "www2": "RECOVER"}, effective=True)
    assert not any(both_up(s) for s in samples), samples
    assert c.markers("www1", "web")[-3:] == ["start", "stop", "start"]

    # SIGTERM: the master stops its service and gives up its lease at once
    assert c.failsh["www1"].stop() == 0
    assert c.state("www1", "web") == "RECOVER"
    took = c.wait_states("web", {"www2": "UP"})
    assert took < 3

    # restart: handback, and never both UP, not even in faild's raw states
    c.start_failsh("www1")
    samples = c.sample("web", lambda s: s == {"www1": "UP", "www2": "RECOVER"})
    assert not any(both_up(s) for s in samples), samples
    assert c.markers("www2", "web")[-1] == "stop"
    assert c.running("www1", "web") and not c.running("www2", "web")

    # the control port (-D): failsh's own transitions through the faild protocol, read-only
    with Client(f"tcp://127.0.0.1:{c.failsh['www1'].control_port}", timeout=2, retries=0) as ctl:
        host, records = ctl.list()
        assert host.name == "www1"
        assert [(r.name, r.state.value) for r in records] == [("web", "UP")]
        reply = ctl.call("history", limit=10)
        assert reply["history"][-1]["new"] == "UP"
        with pytest.raises(RequestFailed, match="does not serve 'set'"):
            ctl.set("web", "FAIL")


def test_symmetric_two_services_one_file(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(["alpha", "beta"], r"""
foreach {svc master backup} {web alpha beta mail beta alpha} {
    failsvc $svc interval 0.3
    failsvc $svc masters [list $master]
    failsvc $svc slaves [list $backup]
    failsvc $svc start [list svc_start $svc]
    failsvc $svc stop [list svc_stop $svc]
    failsvc $svc reclaim [list svc_reclaim $svc]
}
""")
    c.start()
    c.wait_states("web", {"alpha": "UP", "beta": "RECOVER"})
    c.wait_states("mail", {"alpha": "RECOVER", "beta": "UP"})
    assert c.failsh["alpha"].stop() == 0
    c.wait_states("web", {"beta": "UP"}, timeout=5)
    assert c.state("beta", "mail") == "UP" and c.state("alpha", "mail") == "RECOVER"
    c.start_failsh("alpha")
    c.wait_states("web", {"alpha": "UP", "beta": "RECOVER"})
    assert c.states("mail") == {"alpha": "RECOVER", "beta": "UP"}


CHAIN = r"""
# a > b > c: from each host's point of view the hosts before it are masters
set chain {hosta hostb hostc}
set me $env(FO_NODE)
set i [lsearch $chain $me]
failsvc dir interval 0.3
failsvc dir masters [lrange $chain 0 [expr {$i - 1}]]
failsvc dir slaves [lrange $chain [expr {$i + 1}] end]
failsvc dir start {svc_start dir}
failsvc dir stop {svc_stop dir}
"""


def test_three_host_chain(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(["hosta", "hostb", "hostc"], CHAIN)
    c.start("hosta")
    c.wait_states("dir", {"hosta": "UP"})
    c.start_failsh("hostb")
    c.start_failsh("hostc")
    c.wait_states("dir", {"hosta": "UP", "hostb": "RECOVER", "hostc": "RECOVER"})
    c.failsh["hosta"].kill9()
    samples = c.sample("dir", lambda s: s["hostb"] == "UP") + c.watch("dir", 1.0)
    assert all(s["hostc"] == "RECOVER" for s in samples), "c started although b was ready"
    assert samples[-1]["hostb"] == "UP"
    c.failsh["hostb"].kill9()
    c.wait_states("dir", {"hostc": "UP"}, timeout=8)
    assert c.markers("hostc", "dir") == ["start"]


def test_failhost_udp_and_port_lines_route_to_faild(make_cluster: Callable[..., Cluster]) -> None:
    """No -P: each failsh finds the other's faild through failhost address/port (protocol udp
    is accepted for 0.5 scripts; ZeroMQ talks TCP anyway)."""
    c = make_cluster(["www1", "www2"], WEB)
    ports = {n: f.port for n, f in c.failds.items()}
    c.policy.write_text(c.policy.read_text() + f"""
failhost www1 protocol tcp
failhost www1 address 127.0.0.1
failhost www1 port {ports['www1']}
failhost www2 protocol udp
failhost www2 address 127.0.0.1
failhost www2 port {ports['www2']}
""")
    c.start_failds()
    c.start_failsh("www1", peers={})
    c.wait_states("web", {"www1": "UP"})
    c.start_failsh("www2", peers={})
    c.wait_states("web", {"www1": "UP", "www2": "RECOVER"})
    assert "-P" not in c.failsh["www2"].command()
    assert c.failsh["www1"].stop() == 0
    c.wait_states("web", {"www2": "UP"}, timeout=5)


def test_kill9_of_master_faild(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(["www1", "www2"], WEB)
    c.start("www1")
    c.wait_states("web", {"www1": "UP"})
    c.start_failsh("www2")
    c.wait_states("web", {"www1": "UP", "www2": "RECOVER"})
    c.failds["www1"].kill9()
    c.wait_states("web", {"www2": "UP"}, timeout=5)
    # the master's failsh cannot tell anyone, but it stops its own copy of the service
    wait_for(lambda: not c.running("www1", "web"), 5, "www1's failsh to stop web")
    assert c.markers("www1", "web")[-1] == "stop"
    assert c.failsh["www1"].running()
    # its faild comes back (state file still says UP): failsh rewrites RECOVER before it
    # renews its lease, so the peers never see the stale UP; then the handback
    c.failds["www1"].start()
    samples = c.sample("web", lambda s: s == {"www1": "UP", "www2": "RECOVER"}, effective=True)
    assert not any(both_up(s) for s in samples), samples


def test_quick_restart_of_master_faild_is_not_a_failover(make_cluster: Callable[..., Cluster]) -> None:
    """faild restarted (an upgrade): for a moment it answers without a lease.  The slave
    gives it one dead time (3 s here) instead of taking the service; the master's failsh
    renews its lease as soon as it sees the new faild."""
    c = make_cluster(["www1", "www2"], WEB + "failhost www1 deadtime 3\n")
    c.start("www1")
    c.wait_states("web", {"www1": "UP"})
    c.start_failsh("www2")
    c.wait_states("web", {"www1": "UP", "www2": "RECOVER"})
    c.failds["www1"].restart()
    samples = c.watch("web", 2.0)
    assert all(s["www2"] == "RECOVER" for s in samples), samples
    c.wait_states("web", {"www1": "UP", "www2": "RECOVER"}, effective=True, timeout=5)


def test_slave_alone_takes_over_from_master_without_failsh(make_cluster: Callable[..., Cluster]) -> None:
    """www1's faild answers but no failsh runs there (no lease): its services count FAIL."""
    c = make_cluster(["www1", "www2"], WEB)
    c.start("www2")
    c.wait_states("web", {"www1": None, "www2": "UP"}, timeout=8)
    assert "web: RECOVER -> UP: master www1 down (no failsh lease) and no slave is UP" in c.failsh["www2"].log()


def test_a_refused_poll_is_waited_on_not_taken_as_fail(make_cluster: Callable[..., Cluster]) -> None:
    """www1's faild refuses community public: www2 cannot know the state, so it must not
    start the service (that would be two UP); failhost ... community fixes it."""
    c = make_cluster(["www1", "www2"], WEB, communities={"www1": "* secret RW\n"})
    c.start_failds()
    c.start_failsh("www1", extra=["--faild-community", "secret"])
    wait_for(lambda: c.failsh["www1"].running() and "-> UP" in c.failsh["www1"].log(), 8, "www1 UP")
    c.start_failsh("www2")
    wait_for(lambda: "www1 refused our poll: DENIED" in c.failsh["www2"].log(), 5, "the refusal logged")
    assert all(s["www2"] == "RECOVER" for s in c.watch("web", 1.0))
    # the right community in the policy: www2 sees www1 UP; after www1's failsh dies, takes over
    c.policy.write_text(c.policy.read_text() + "failhost www1 community secret\n")
    c.failsh["www2"].send(signal.SIGHUP)
    c.failsh["www1"].kill9()
    c.wait_states("web", {"www2": "UP"}, timeout=8)


SOLO = r"""
proc startsolo {args} { return [svc_start solo] }
failsvc solo interval 0.3
failsvc solo start startsolo
failsvc solo stop {svc_stop solo}
"""


def test_sighup_reload_and_sigint_dump(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(["h1"], SOLO)
    c.start()
    c.wait_states("solo", {"h1": "UP"})
    # a new service in the file: SIGHUP adds it, the running one stays UP
    c.policy.write_text(c.policy.read_text() + "failsvc extra interval 0.3\nfailsvc extra start {svc_start extra}\n")
    c.failsh["h1"].send(signal.SIGHUP)
    c.wait_states("extra", {"h1": "UP"}, timeout=5)
    assert all(s["h1"] == "UP" for s in c.watch("solo", 0.6))
    assert c.markers("h1", "solo") == ["start"]
    # a broken file: the reload is refused, the running policy goes on
    good = c.policy.read_text()
    c.policy.write_text(good + "failsvc extra interval soon\n")
    c.failsh["h1"].send(signal.SIGHUP)
    wait_for(lambda: "reload failed, keeping the running policy" in c.failsh["h1"].log(), 5, "reload error")
    assert "policy.tcl:" in c.failsh["h1"].log().split("reload failed")[-1].splitlines()[0]
    assert c.failsh["h1"].running()
    # still scheduled under the old policy: an outside change to extra is undone by a restart
    run_cli("failc", "-h", c.failds["h1"].address, "extra", "RECOVER")
    wait_for(lambda: c.markers("h1", "extra").count("start") == 2, 5, "extra restarted")
    assert c.state("h1", "solo") == "UP" and c.state("h1", "extra") == "UP"
    # a service removed from the file is stopped; the others go on
    c.policy.write_text(good.replace("failsvc extra interval 0.3\nfailsvc extra start {svc_start extra}\n", ""))
    c.failsh["h1"].send(signal.SIGHUP)
    c.wait_states("extra", {"h1": "RECOVER"}, timeout=5)
    assert "service removed from the policy" in c.failsh["h1"].log()
    assert c.state("h1", "solo") == "UP"
    # SIGINT writes the dump and failsh keeps running
    c.failsh["h1"].send(signal.SIGINT)
    dump = c.failsh["h1"].dumpfile
    wait_for(lambda: dump.exists() and "solo" in dump.read_text(), 5, "the dump file")
    text = dump.read_text()
    assert text.startswith("failsh on h1")
    assert "solo" in text and "UP" in text and "recent transitions:" in text
    assert c.failsh["h1"].running()
    assert c.failsh["h1"].stop() == 0
    assert c.states("solo") == {"h1": "RECOVER"}
    assert "Traceback" not in c.failsh["h1"].log()


def test_sigint_dump_to_a_fifo_stays_open(make_cluster: Callable[..., Cluster]) -> None:
    """0.5's tracing loop: SIGINT every so often, 'cat' the FIFO; failsh keeps it open."""
    c = make_cluster(["h1"], SOLO)
    fifo = c.dir / "h1.dump"
    os.mkfifo(fifo)
    c.start()
    c.wait_states("solo", {"h1": "UP"})
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        got = b""
        for _ in range(2):
            c.failsh["h1"].send(signal.SIGINT)
            deadline = time.monotonic() + 5
            want = got.count(b"failsh on h1") + 1
            while got.count(b"failsh on h1") < want and time.monotonic() < deadline:
                if select.select([reader], [], [], 0.2)[0]:
                    got += os.read(reader, 65536)
        assert got.count(b"failsh on h1") == 2, got
        assert b"solo" in got
        pid = c.failsh["h1"].proc.pid  # type: ignore[union-attr]
        fds = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                fds.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:  # closed meanwhile
                pass
        assert str(fifo) in fds, "failsh closed the FIFO after the dump"
    finally:
        os.close(reader)
    assert c.failsh["h1"].running()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # not replaced by a regular file


def test_exit_in_the_policy_stops_failsh_cleanly(make_cluster: Callable[..., Cluster]) -> None:
    """Tcl's exit would leave web running with the lease held until it runs out: failsh
    finishes the script, stops its UP services, gives up the lease and exits with the status."""
    policy = WEB.replace("proc startweb {args} { return [svc_start web] }",
                         "proc startweb {args} { set r [svc_start web]; exit 3; return $r }")
    c = make_cluster(["www1", "www2"], policy)
    c.start_failds()
    p = c.start_failsh("www1")
    assert p.proc is not None and p.proc.wait(15) == 3
    assert c.markers("www1", "web") == ["start", "stop"]
    assert c.info("www1", "web") == ("RECOVER", None)
    assert "the policy called exit 3: failsh stops" in p.log()


BAD_POLICIES = {
    "syntax": ("failsvc web interval 1\nproc broken {args} {\n  return UP\n", 2, "missing close-brace"),
    "subcommand": ("failsvc web interval 1\n\nfailsvc web bogus x\n", 3, 'unknown failsvc subcommand "bogus"'),
    "interval": ("# comment\nfailsvc web interval soon\n", 2, 'expected a number of seconds for interval'),
    "port": ("failhost www2 port 99999\n", 1, 'invalid port "99999"'),
    "toplevel": ("set x 1\nproc p {} {\n  error boom\n}\np\n", 3, "boom"),
    "exit": ("failsvc web interval 1\nexit 0\n", 2, "exit: not available while the policy is loading"),
}


@pytest.mark.parametrize("case", sorted(BAD_POLICIES))
def test_check_reports_file_and_line(tmp_path: Path, case: str) -> None:
    text, line, message = BAD_POLICIES[case]
    bad = tmp_path / "bad.tcl"
    bad.write_text(text)
    r = run_cli("failsh", "--check", "-N", "www1", "-f", str(bad))
    assert r.returncode == 5, r
    assert f"{bad}:{line}: " in r.stderr and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [["-P", "www2=a;b"], ["-P", "www2"], ["--dead-factor", "0.5"], ["-m", "70000"]])
def test_bad_command_lines(tmp_path: Path, args: list[str]) -> None:
    r = run_cli("failsh", "--check", "-N", "www1", "-f", str(ROOT / "samples/policies/01-web-master-slave.tcl"), *args)
    assert r.returncode == 2 and r.stderr.startswith("failsh: "), r.stderr


def test_check_good_policy_lists_services(tmp_path: Path) -> None:
    good = tmp_path / "web.tcl"
    good.write_text(WEB.replace("svc_start web", "list UP").replace("svc_stop web", "list RECOVER"))
    r = run_cli("failsh", "--check", "-N", "www2", "-f", str(good))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "web: interval 0.3 masters ['www1'] slaves []"


GARBAGE = r"""
proc flag {} { global env; return [file join $env(FO_DIR) broken] }
proc startsolo {args} {
    if {[file exists [flag]]} { return "all good, honest" }
    return [svc_start solo]
}
proc reclaimsolo {args} {
    mark solo reclaim
    if {[file exists [flag]]} { return FAIL }
    return RECOVER
}
failsvc solo interval 0.3
failsvc solo start startsolo
failsvc solo reclaim reclaimsolo
"""


def test_garbage_result_fails_and_reclaim_recovers(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(["h1"], GARBAGE)
    (c.dir / "broken").touch()
    c.start()
    c.wait_states("solo", {"h1": "FAIL"})
    r = run_cli("failstat", "--json", "--history", c.failds["h1"].address)
    history = json.loads(r.stdout)[0]["history"]
    fail = [t for t in history if t["new"] == "FAIL"][-1]
    assert "start procedure returned 'all good, honest', not UP, RECOVER or FAIL" in fail["reason"]
    wait_for(lambda: "reclaim" in c.markers("h1", "solo"), 5, "a reclaim attempt")
    assert c.state("h1", "solo") == "FAIL"  # reclaim said FAIL: stays
    (c.dir / "broken").unlink()
    c.wait_states("solo", {"h1": "UP"})
    history = json.loads(run_cli("failstat", "--json", "--history", c.failds["h1"].address).stdout)[0]["history"]
    assert [t["new"] for t in history][-3:] == ["FAIL", "RECOVER", "UP"]


NORECLAIM = WEB.replace("failsvc web reclaim reclaimweb\n", "")


def test_external_failc_change_is_followed(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(["www1", "www2"], NORECLAIM)
    c.start("www1")
    c.wait_states("web", {"www1": "UP"})
    c.start_failsh("www2")
    c.wait_states("web", {"www1": "UP", "www2": "RECOVER"})
    # the admin marks the master's web FAIL: failsh follows (no reclaim: it stays FAIL)
    r = run_cli("failc", "-h", c.failds["www1"].address, "-m", "maintenance", "web", "FAIL")
    assert r.returncode == 0, r.stderr
    c.wait_states("web", {"www2": "UP"}, timeout=5)
    wait_for(lambda: "changed outside failsh" in c.failsh["www1"].log(), 5, "www1 following the change")
    assert c.state("www1", "web") == "FAIL"
    # and back: RECOVER hands the service back to the master
    run_cli("failc", "-h", c.failds["www1"].address, "web", "RECOVER")
    samples = c.sample("web", lambda s: s == {"www1": "UP", "www2": "RECOVER"})
    assert not any(both_up(s) for s in samples)


# The prompt ---------------------------------------------------------------------------
class Pty:
    """A program on a pseudo-terminal: send keys, read until a text shows up (bounded)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        # its own session with the terminal as controlling tty, so Ctrl-C sends SIGINT
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.out = b""
        self.pos = 0

    def expect(self, text: str, timeout: float = 10.0) -> str:
        """Wait for ``text`` after what was already matched; return the output up to it."""
        want = text.encode()
        deadline = time.monotonic() + timeout
        while want not in self.out[self.pos:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} not seen; output so far:\n{self.out.decode(errors='replace')}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: the program closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"{text!r} not seen before EOF:\n{self.out.decode(errors='replace')}")
                self.out += chunk
        end = self.out.index(want, self.pos) + len(want)
        seen, self.pos = self.out[self.pos:end].decode(errors="replace"), end
        return seen

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        os.close(self.master)


def test_repl_on_a_terminal(faild: FaildProcess, tmp_path: Path) -> None:
    env = {**os.environ, "TERM": "dumb", "INPUTRC": "/dev/null", "FAILSH_HISTORY": str(tmp_path / "hist")}
    term = Pty([sys.executable, "-m", "failover.cli.failsh", "-N", "x", "--faild", faild.address,
                "-m", "0", "-D", "0"], env)
    try:
        term.expect("failsh% ")
        term.send("failsvc web masters {a b}\r")
        term.expect("failsh% ")
        term.send("proc greet {args} {\r")
        term.expect("> ")
        term.send('  return "hello [join $args ,]"\r')
        term.expect("> ")
        term.send("}\r")
        term.expect("failsh% ")
        for keys, shown in (("greet a b\r", "hello a,b"),
                            ("whatif web a FAIL b FAIL\r", "start: master a, b down (set FAIL by whatif)"),
                            ("whatif web a RECOVER b DOWN\r", "wait: master a is RECOVER"),
                            ("getst\t", "getstate "),  # tab completion
                            ("web\r", "RECOVER"),
                            ("failsvc web flavour x\r", 'error: unknown failsvc subcommand "flavour"')):
            term.send(keys)
            term.expect(shown)
            if keys.endswith("\r"):
                term.expect("failsh% ")  # keys typed ahead of readline can lose a Ctrl-D
        term.send("\x04")
        assert term.proc.wait(10) == 0
    finally:
        term.close()
    # a prompt without scheduling writes nothing into faild
    with faild.client() as c:
        assert c.list()[1] == []


def test_ctrl_c_at_the_prompt_drops_the_line_and_interrupts_commands(faild: FaildProcess, tmp_path: Path) -> None:
    """Ctrl-C as in a shell: the half-typed line (and a partial multi-line command) is
    dropped, a running command (a Tcl loop, a blocking exec) is interrupted; never a
    traceback, and failsh keeps running with its services (here: scheduling on)."""
    env = {**os.environ, "TERM": "dumb", "INPUTRC": "/dev/null", "FAILSH_HISTORY": str(tmp_path / "hist")}
    term = Pty([sys.executable, "-m", "failover.cli.failsh", "-N", faild.node, "--faild", faild.address,
                "-m", "0", "-D", "0"], env)
    try:
        term.expect("failsh% ")
        term.send("failsvc web start {return UP}; schedule on\r")
        term.expect("failsh% ")
        term.send("puts half-typed")
        term.expect("half-typed")
        term.send("\x03")
        term.expect("failsh% ")
        term.send("puts fresh\r")
        assert "half-typed" not in term.expect("fresh\r\n")    # the new line is not glued to the old one
        term.send("proc partial {} {\r")
        term.expect("> ")
        term.send("\x03")
        term.expect("failsh% ")
        term.send("info procs partial\r")
        term.expect("failsh% ")
        for command in ("while 1 {}", "exec sleep 100"):
            term.send(f"puts running; flush stdout; {command}\r")
            term.expect(command)    # the echo
            term.expect("running")  # the command's output: it runs now
            term.send("\x03")
            term.expect("interrupted")
            term.expect("failsh% ")
        # the run that starts web waits for the prompt's commands to finish: wait for it
        with faild.client() as c:
            wait_for(lambda: c.get("web").state.value == "UP", 10, "web UP")
        term.send("getstate web\r")
        term.expect("UP")
        term.expect("failsh% ")  # a Ctrl-D typed before the prompt is lost by the terminal
        assert "Traceback" not in term.out.decode(errors="replace")
        assert term.proc.poll() is None  # Ctrl-C never stopped failsh nor the service
        term.send("\x04")
        assert term.proc.wait(10) == 0
    finally:
        term.close()


def test_repl_piped_keeps_the_event_loop_running(faild: FaildProcess) -> None:
    """stdin not a terminal: Tcl timers fire while failsh waits for the next line."""
    proc = subprocess.Popen([sys.executable, "-m", "failover.cli.failsh", "-N", "x", "--faild", faild.address],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"after 200 {puts tick; flush stdout}\nfailsvc web masters {a b}\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 10
        line = b""
        while b"tick" not in line and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
                line = proc.stdout.readline()
        assert b"tick" in line, "the timer did not fire while failsh waited for input"
        out, err = proc.communicate(b"whatif web a FAIL b UP\nnosuch\n", timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert b"wait: master b is UP" in out
    assert b'error: invalid command name "nosuch"' in err
    assert proc.returncode == 1  # a failed command in piped input
    # exit ends the prompt through failsh's own shutdown, with its status
    r = subprocess.run([sys.executable, "-m", "failover.cli.failsh", "-N", "x", "--faild", faild.address],
                       input=b"puts one\nexit 3\nputs two\n", capture_output=True, timeout=20)
    assert (r.returncode, r.stdout) == (3, b"one\n")
    # so does an exit inside a proc (the command it is in still completes)
    r = subprocess.run([sys.executable, "-m", "failover.cli.failsh", "-N", "x", "--faild", faild.address],
                       input=b"proc bye {} { exit 4; puts tail }\nbye\nputs two\n", capture_output=True, timeout=20)
    assert (r.returncode, r.stdout) == (4, b"tail\n")


SAMPLES = sorted((ROOT / "samples" / "policies").glob("*.tcl"))


@pytest.mark.parametrize("policy", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_policies_load(policy: Path) -> None:
    text = policy.read_text()
    for newer in ("{*}", "dict ", "lassign ", "apply ", "try "):  # failover 0.5 ran on Tcl 8.4
        assert newer not in text, f"{policy.name} uses {newer!r}, which Tcl 8.4 lacks"
    nodes = [n for n in ("www1", "www2", "alpha", "beta", "ldap1", "ldap2", "ldap3", "db1", "db2") if n in text]
    for node in nodes + ["elsewhere"]:  # each host it names, and one it does not
        r = run_cli("failsh", "--check", "-N", node, "-f", str(policy), env={**os.environ, "FO_NODE": node})
        assert r.returncode == 0, f"{policy.name} on {node}: {r.stderr}"
        assert r.stdout.strip(), f"{policy.name} on {node} defines no service"
