"""Hostile input (docs/security.md): fuzzed Tcl command arguments, request floods against
a real faild, and slow or silent connections.

The wire decoder's own fuzz tests are in test_protocol.py.  Every loop here is bounded in
count and in time; faild processes are killed by the conftest fixtures.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import tkinter
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
import zmq
from conftest import FaildProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from failover import protocol, transport
from failover.client import Client, ClientError
from failover.faild.store import Store
from failover.shell import runner, traps
from failover.shell.commands import HOST_SUBCOMMANDS, SVC_SUBCOMMANDS, TRAP_KINDS, Commands
from failover.shell.engine import Engine, Options
from failover.shell.policy import MIN_INTERVAL, Policy
from failover.shell.procedures import run_procedure
from failover.shell.tclhost import TclHost

pytestmark = pytest.mark.process

# Tcl commands ----------------------------------------------------------------------

# Every failover command but 'healthy', which asks an hc over the network (a fuzzed host
# name would mean DNS look-ups and connections; tests/test_hc_* cover its arguments).
COMMANDS = ("failsvc", "failhost", "failtrap", "getstate", "setstate", "peers", "startservice",
            "stopservice", "services", "hosts", "node", "whatif", "schedule", "fo::log")
NODE = "www1"
PREAMBLE = """
failsvc web masters {www2}
failsvc web slaves {www3 www4}
failsvc web interval 2
failsvc web start {return UP}
failsvc web stop {return RECOVER}
failhost www2 port 1900
failtrap state * {lappend ::fo_trapped}
"""

# numbers at and beyond the limits, and what Python or Tcl might read as one
NUMBERS = ["0", "1", "0.05", "0.049", "-1", "1e308", "-0", "nan", "inf", "-inf", "86400", "86401", "65535",
           "65536", "00080", "0x50", "1_000", "²", "٣", "１", " 5 ", "5 ", "1e-400", "", "0.0.1", "true"]
WORDS = st.sampled_from([
    # names and subcommands the commands know, so the fuzz reaches past the first check
    "web", "db", "www1", "www2", "www3", "nosuch", "*", "local", "DOWN", "on", "off", "list", "delete",
    "UP", "up", " Up ", "RECOVER", "FAIL", "SIDEWAYS", *SVC_SUBCOMMANDS, *HOST_SUBCOMMANDS, *TRAP_KINDS,
    "debug", "info", "notice", "warning", "error", *NUMBERS,
    # Tcl syntax that must stay data
    "{", "}", "{}", "{a b", "[", "]", "[exit]", "$", "$x", "${x}", "\\", "\\n", '"', ";", "{*}", "#",
    "a b c", "{www2 www3}", "www2 {www3", "\n", "\t", "\x00", "é", "☃", "😀", "\u202e", "\ufeff",
])
TCL_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # Tcl holds no lone surrogate
HUGE = st.sampled_from(["x" * 100_000, "{" * 5000, "[" * 5000, "web " * 20_000, "\\" * 10_001])
ARG = st.one_of(WORDS, WORDS, TCL_TEXT, HUGE)


def one_of_or_any(*choices: str) -> st.SearchStrategy[str]:
    """Usually one of ``choices`` (so the fuzz gets past the first checks), else anything."""
    return st.one_of(st.sampled_from(choices), st.sampled_from(choices), ARG)


NAME = one_of_or_any("web", "db", "www2", "www3", NODE, "nosuch", "*", "local")
STATE = one_of_or_any("UP", "RECOVER", "FAIL", "fail", "DOWN")
OPTIONAL = st.lists(ARG, max_size=2)
# the argument shapes each command expects, with what may go wrong in every position
SHAPES: dict[str, st.SearchStrategy[list[str]]] = {
    "failsvc": st.tuples(NAME, one_of_or_any(*SVC_SUBCOMMANDS), st.lists(ARG, max_size=3)).map(
        lambda t: [t[0], t[1], *t[2]]),
    "failhost": st.tuples(NAME, one_of_or_any(*HOST_SUBCOMMANDS), ARG, OPTIONAL).map(
        lambda t: [t[0], t[1], t[2], *t[3][:1]] if len(t[3]) == 2 else [t[0], t[1], t[2]]),
    "failtrap": st.tuples(one_of_or_any(*TRAP_KINDS, "list", "delete"), NAME, ARG).map(list),
    "getstate": st.lists(NAME, max_size=3),
    "setstate": st.tuples(NAME, STATE, OPTIONAL).map(lambda t: [t[0], t[1], *t[2]]),
    "peers": st.lists(NAME, max_size=2),
    "startservice": st.lists(NAME, max_size=2),
    "stopservice": st.lists(NAME, max_size=2),
    "services": OPTIONAL, "hosts": OPTIONAL, "node": OPTIONAL,
    "whatif": st.tuples(NAME, st.lists(st.one_of(NAME, STATE), max_size=5)).map(lambda t: [t[0], *t[1]]),
    "schedule": st.lists(one_of_or_any("on", "off"), max_size=2),
    "fo::log": st.tuples(one_of_or_any("debug", "info", "notice", "warning", "error"), OPTIONAL).map(
        lambda t: [t[0], *t[1]]),
}
assert set(SHAPES) == set(COMMANDS)
CALL = st.one_of(*(st.tuples(st.just(c), shape) for c, shape in SHAPES.items()),
                 st.tuples(st.sampled_from(COMMANDS), st.lists(ARG, max_size=6)))
CALLS = st.lists(CALL, min_size=1, max_size=12)


def check_policy(policy: Policy) -> None:
    """The invariants failsh relies on, whatever commands ran."""
    assert policy.node == NODE
    for name, svc in policy.services.items():
        assert protocol.valid_name(name) and svc.name == name
        assert MIN_INTERVAL <= svc.interval <= 86400 and 0.01 <= svc.timeout <= 86400
        for which in (svc.masters, svc.slaves):
            assert len(which) == len(set(which))
            for h in which:
                assert protocol.valid_name(h) and h != NODE and h in policy.hosts
        assert all(isinstance(getattr(svc, k), str) for k in ("start", "stop", "reclaim", "check"))
    for name, host in policy.hosts.items():
        assert protocol.valid_name(name) and host.name == name and name != NODE
        assert 0 < host.port < 65536 and host.protocol in ("tcp", "udp")
        assert host.address is None or (host.address and not any(c.isspace() for c in host.address))
        assert 0 < len(host.community) <= 128
        assert host.deadtime is None or 0.05 <= host.deadtime <= 86400
    for trap in policy.traps:
        assert trap.kind in TRAP_KINDS and (trap.pattern == "*" or protocol.valid_name(trap.pattern))


def model(cmds: Commands) -> object:
    """Everything a command may change: the policy and, with an engine, the local states."""
    engine = cmds.engine
    # asdict builds new dicts and lists all the way down: a snapshot
    return (attrs.asdict(cmds.policy), dict(engine.states.local) if engine else None,
            engine.scheduling if engine else None)


def call(tcl: TclHost, cmds: Commands, name: str, args: list[str]) -> None:
    """One command call: a result, or a Tcl error with a message and a FAILOVER/TCL code,
    after which nothing has changed."""
    before = model(cmds)
    try:
        tcl.interp.call(name, *args)
    except tkinter.TclError as exc:
        message = str(exc)
        code = tcl.interp.eval("lindex $::errorCode 0")  # in Tcl: tkinter cuts strings at a NUL
        assert message.strip(), f"{name} {args!r:.200}: empty error message"
        assert code in ("FAILOVER", "TCL"), f"{name} {args!r:.200}: {code}: {message}"
        assert model(cmds) == before, f"{name} {args!r:.200} failed ({message}) but changed the model"
    check_policy(cmds.policy)


@pytest.fixture(scope="module")
def loaded() -> tuple[TclHost, Commands]:
    """A real interpreter with the failover commands and a policy, no engine."""
    tcl = TclHost()
    cmds = Commands(tcl, Policy(NODE))
    tcl.interp.eval(PREAMBLE)
    return tcl, cmds


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """An Engine that is never started (no sockets, no faild) with the commands bound to it.

    'exit' is disabled and procedures and traps get at most 2 s: fuzzed scripts are run
    by startservice and by traps, and this is the test process."""
    e = Engine(Options(node=NODE, scheduling=False))
    e.tcl.interp.eval("catch {rename exit {}}; proc exit args { error {exit is disabled in this test} }")
    e.commands.engine = e
    e.tcl.interp.eval(PREAMBLE)
    yield e
    e.scheduler.stop()


@pytest.fixture
def short_procedures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "run_procedure",
                        lambda tcl, name, kind, script, timeout: run_procedure(tcl, name, kind, script,
                                                                               min(timeout, 2.0)))
    monkeypatch.setattr(traps, "TRAP_TIMEOUT", 2.0)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


@FUZZ
@given(calls=CALLS)
def test_tcl_commands_without_engine(loaded: tuple[TclHost, Commands], calls: list) -> None:
    tcl, cmds = loaded
    for name, args in calls:
        call(tcl, cmds, name, args)
    assert "web" in cmds.policy.services  # no command deletes a service


@FUZZ
@given(calls=CALLS)
def test_tcl_commands_with_an_engine(engine: Engine, short_procedures: None, calls: list) -> None:
    for name, args in calls:
        call(engine.tcl, engine.commands, name, args)
    assert "web" in engine.policy.services
    assert all(s in engine.policy.services for s in engine.states.local)


@FUZZ
@given(sub=st.sampled_from(SVC_SUBCOMMANDS + HOST_SUBCOMMANDS + TRAP_KINDS),
       values=st.lists(st.one_of(st.sampled_from(NUMBERS), ARG), min_size=1, max_size=2))
def test_tcl_subcommand_values(loaded: tuple[TclHost, Commands], sub: str, values: list[str]) -> None:
    """Every value of every failsvc / failhost subcommand and failtrap event."""
    tcl, cmds = loaded
    for command in ("failsvc", "failhost", "failtrap"):
        call(tcl, cmds, command, ["web" if command != "failhost" else "www2", sub, *values])
        call(tcl, cmds, command, [sub, "web", *values])


def test_every_word_in_every_position(loaded: tuple[TclHost, Commands]) -> None:
    """Deterministic companion of the fuzz: each word of WORDS as each argument of each
    subcommand and command (a rare value such as '²' is not left to chance)."""
    tcl, cmds = loaded
    words = list(WORDS.elements)  # type: ignore[attr-defined]
    for word in words:
        cmds.policy.traps.clear()  # else every successful failtrap makes the model bigger
        for sub in SVC_SUBCOMMANDS + HOST_SUBCOMMANDS + TRAP_KINDS:
            call(tcl, cmds, "failsvc", ["web", sub, word])
            call(tcl, cmds, "failhost", ["www2", sub, word])
            call(tcl, cmds, "failtrap", [sub, word, "set x"])
        for command in COMMANDS:
            if command not in ("startservice", "stopservice"):  # need an engine: NOTREADY here
                call(tcl, cmds, command, [word])
                call(tcl, cmds, command, ["web", word])
                call(tcl, cmds, command, ["web", "www2", word])


def test_huge_and_nested_scripts_are_errors_not_crashes(loaded: tuple[TclHost, Commands]) -> None:
    tcl, cmds = loaded
    for args in (["web", "masters", "{" * 100_000], ["web", "masters", "{a " * 30_000],
                 ["web", "start", "x" * 1_000_000], ["web", "masters", *["www9"] * 10_000]):
        call(tcl, cmds, "failsvc", args)
    assert cmds.policy.services["web"].start == "x" * 1_000_000  # a long script is still a script
    tcl.interp.eval("failsvc web start {return UP}")


# faild under a flood ------------------------------------------------------------------

COMMUNITIES = "*  admin  RW\n*  monitor  RO\n"
FLOOD_SECONDS = 3.0


def flood_worker(kind: str, endpoint: str, stop: threading.Event, counts: dict[str, int]) -> None:
    """One hostile client until ``stop``: 'mixed' waits for each reply, 'blast' never reads."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ if kind == "mixed" else zmq.DEALER)
    sock.linger = 0
    sock.sndhwm = 100_000  # our own queue is not the point: faild's is
    if kind == "mixed":
        sock.setsockopt(zmq.REQ_RELAXED, 1)
        sock.setsockopt(zmq.REQ_CORRELATE, 1)
    sock.connect(endpoint)
    big = protocol.encode({"v": 1, "id": 1, "op": "ping", "pad": "x" * 60_000})
    oversized = big + b" " * protocol.MAX_MESSAGE
    bodies = [
        protocol.encode({"v": 1, "id": 1, "op": "list", "community": "monitor"}),
        protocol.encode({"v": 1, "id": 2, "op": "set", "community": "intruder", "service": "web", "state": "FAIL"}),
        protocol.encode({"v": 1, "id": 3, "op": "set", "community": "monitor", "service": "web", "state": "FAIL"}),
        protocol.encode({"v": 1, "id": 4, "op": "set", "community": "admin", "service": "flood", "state": "UP"}),
        protocol.encode({"v": 1, "id": 5, "op": "set", "community": "admin", "service": "flood", "state": "FAIL"}),
        protocol.encode({"v": 1, "id": 6, "op": "history", "community": "monitor", "limit": 1000}),
        b"\xff\xfe garbage", b'{"v":1,"id":7,"op":"get","service":' + b"[" * 10_000, b"[]", b"",
        json.dumps({"v": 2, "id": 8, "op": "set", "service": "web", "state": "FAIL"}).encode(),
        big,
    ]
    deadline = time.monotonic() + FLOOD_SECONDS + 5  # bounded even if stop never comes
    i = 0
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            i += 1
            if kind == "mixed":
                sock.send(bodies[i % len(bodies)] if i % 50 else oversized)
                if sock.poll(200):
                    sock.recv()
                    counts["replies"] = counts.get("replies", 0) + 1
                else:
                    counts["timeouts"] = counts.get("timeouts", 0) + 1
            else:
                body = big if i % 2 else bodies[i % len(bodies)]  # oversized would cut the connection
                try:
                    sock.send_multipart([b"", body], zmq.NOBLOCK)
                    counts["blasted"] = counts.get("blasted", 0) + 1
                except zmq.Again:
                    time.sleep(0.001)
    finally:
        sock.close(linger=0)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.fixture
def guarded(faild_factory: Callable[..., FaildProcess], tmp_path: Path) -> FaildProcess:
    path = tmp_path / "communities"
    path.write_text(COMMUNITIES)
    return faild_factory(communities=path)


def test_flood_of_mixed_oversized_and_unread_requests(guarded: FaildProcess) -> None:
    with guarded.client("admin", timeout=1.0, retries=2) as c:
        before = c.set("web", "UP", "set before the flood")
    stop = threading.Event()
    counts: list[dict[str, int]] = [{} for _ in range(10)]
    kinds = ["mixed"] * 4 + ["blast"] * 6
    threads = [threading.Thread(target=flood_worker, args=(k, guarded.endpoint, stop, n), daemon=True)
               for k, n in zip(kinds, counts, strict=True)]
    for t in threads:
        t.start()
    worst, peak = 0.0, 0
    probe_deadline = time.monotonic() + FLOOD_SECONDS
    with guarded.client("monitor", timeout=1.0, retries=2) as probe:
        while time.monotonic() < probe_deadline:  # a well-behaved client during the flood
            t0 = time.monotonic()
            assert probe.get("web").state == "UP"
            worst = max(worst, time.monotonic() - t0)
            peak = max(peak, rss_kib(guarded.proc.pid))
            time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    total = {k: sum(n.get(k, 0) for n in counts) for k in ("replies", "timeouts", "blasted")}
    assert total["replies"] > 100 and total["blasted"] > 1000, total

    assert guarded.running(), guarded.log()
    with guarded.client("admin", timeout=1.0, retries=2) as c:
        assert c.get("web") == before  # the set made before the flood, untouched
        assert c.history("web")[-1].reason == "set before the flood"
    stored = Store(guarded.statefile)  # the state file is complete and readable
    assert stored.get("web") == before
    assert stored.get("flood") is not None
    # SOCKET_HWM bounds faild's queues: 6 blasting clients x 32 x 64 KiB is 12 MiB; faild
    # peaked at 36 MiB here, and at 213 MiB (still growing) with libzmq's default HWM of 1000
    assert peak < 100_000, f"faild grew to {peak} KiB during the flood"
    assert worst < 2.0, f"a get took {worst:.2f} s during the flood"


def test_slow_and_silent_connections_do_not_stop_faild(faild: FaildProcess) -> None:
    """Raw TCP clients that trickle one byte at a time or say nothing are closed after
    HANDSHAKE_IVL_MS, and faild answers everybody else meanwhile."""
    conns = [socket.create_connection(("127.0.0.1", faild.port), timeout=2) for _ in range(20)]
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f\x03"  # the start of a ZMTP 3 greeting, never finished
    closed_at: dict[int, float] = {}
    t0 = time.monotonic()
    limit = transport.HANDSHAKE_IVL_MS / 1000 + 2.0
    try:
        with faild.client(timeout=1.0, retries=0) as c:
            step = 0
            while len(closed_at) < len(conns) and time.monotonic() - t0 < limit:
                for n, s in enumerate(conns):
                    if n in closed_at:
                        continue
                    try:
                        if n % 2 and step < len(greeting):
                            s.send(greeting[step:step + 1])  # one byte per step
                        s.settimeout(0.001)
                        if s.recv(64) == b"":
                            closed_at[n] = time.monotonic() - t0
                    except (TimeoutError, BlockingIOError):
                        pass
                    except OSError:
                        closed_at[n] = time.monotonic() - t0
                step += 1
                t1 = time.monotonic()
                assert c.ping().name == "testnode"
                assert time.monotonic() - t1 < 0.5
                time.sleep(0.1)
    finally:
        for s in conns:
            s.close()
    assert len(closed_at) == len(conns), f"only {len(closed_at)} of {len(conns)} closed within {limit} s"
    assert max(closed_at.values()) < limit


def test_many_idle_connections_and_a_reconnecting_client(faild: FaildProcess) -> None:
    """Hundreds of half-open TCP connections cost faild nothing visible to its clients."""
    conns: list[socket.socket] = []
    try:
        for _ in range(200):
            conns.append(socket.create_connection(("127.0.0.1", faild.port), timeout=2))
        for _ in range(20):  # a client that reconnects for every request (the Lazy Pirate way)
            with Client(faild.endpoint, timeout=1.0, retries=0) as c:
                assert c.ping().name == "testnode"
    except ClientError as exc:
        pytest.fail(f"faild stopped answering with {len(conns)} idle connections: {exc}")
    finally:
        for s in conns:
            s.close()
    assert faild.running()


def test_timed_out_startservice_leaves_the_interpreter_usable() -> None:
    e = Engine(Options(node=NODE, scheduling=False))
    e.commands.engine = e
    e.tcl.interp.eval("failsvc web slaves www2; failsvc web start {after 1000; return UP}; "
                      "failsvc web timeout 0.2")
    try:
        assert e.tcl.interp.eval("startservice web") == "FAIL"
    finally:
        assert e.tcl.interp.eval("set x 1") == "1"  # the next command works
        e.scheduler.stop()
