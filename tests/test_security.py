"""CURVE between hosts (docs/security.md): real faild, failc, failstat and failsh processes.

Key pairs are made once per module with keys.generate (the code behind failkey).  A
faild started with --curve-secret answers only clients whose public key is in its
--curve-allow directory; everybody else (another key, plaintext, the wrong server key)
gets no answer at all, so failc/failstat exit 3 after their timeout, and faild logs
the refusal.  Every wait is bounded; the fixtures kill what they started.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster, FailshProcess
from conftest import FaildProcess, cli_command, run_cli, wait_for

from failover import keys
from failover.client import Client, RequestFailed, Unreachable

pytestmark = pytest.mark.process

# One directory per role.  hosts/ doubles as the faild allow-list and as failsh's
# --curve-keys directory: it holds every host's public key (and, here, their secrets).
HOSTS = ("www1", "www2")


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    for name in HOSTS:
        keys.generate(root / "hosts", name)
    keys.generate(root / "hosts", "admin")       # an operator's failc, allowed everywhere
    keys.generate(root / "outside", "intruder")  # a valid key pair nobody allowed
    return {"hosts": root / "hosts", "outside": root / "outside"}


def curve(keyring: dict[str, Path], me: str, server: str, where: str = "hosts") -> keys.Curve:
    return keys.load_curve(keyring[where] / f"{me}.key_secret", keyring["hosts"] / f"{server}.key")


def curve_args(keyring: dict[str, Path], me: str, server: str = "www1", where: str = "hosts") -> list[str]:
    return ["--curve-secret", str(keyring[where] / f"{me}.key_secret"),
            "--server-key", str(keyring["hosts"] / f"{server}.key")]


class CurveFaild(FaildProcess):
    """A faild that requires CURVE: its own key pair, the hosts/ directory as allow-list."""

    def __init__(self, directory: Path, keyring: dict[str, Path], node: str = "www1",
                 port: int | None = None, allow: Path | None = None) -> None:
        secret, allow = keyring["hosts"] / f"{node}.key_secret", allow or keyring["hosts"]
        super().__init__(directory, port=port, node=node,
                         extra=["--curve-secret", str(secret), "--curve-allow", str(allow)])
        self.curve = curve(keyring, "admin", node)

    def client(self, community: str = "public", timeout: float = 2.0, retries: int = 0) -> Client:
        return Client(self.endpoint, community=community, timeout=timeout, retries=retries, curve=self.curve)


@pytest.fixture
def secure(tmp_path: Path, keyring: dict[str, Path]) -> Iterator[CurveFaild]:
    f = CurveFaild(tmp_path / "faild", keyring).start()
    yield f
    if f.running():
        f.kill9()


def failc(*args: str) -> tuple[int, str, float]:
    """(exit status, stderr, seconds) of one failc run."""
    t0 = time.monotonic()
    r = run_cli("failc", *args)
    return r.returncode, r.stderr, time.monotonic() - t0


# Key files ---------------------------------------------------------------------------

def test_failkey_and_faild_genkey(tmp_path: Path) -> None:
    r = run_cli("failkey", "-d", str(tmp_path / "k"), "www1")
    assert r.returncode == 0, r.stderr
    public, secret = tmp_path / "k" / "www1.key", tmp_path / "k" / "www1.key_secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and public.stat().st_mode & 0o777 == 0o644
    assert keys.load_identity(secret).public == keys.load_public(public)
    shown = run_cli("failkey", "--show", str(public))
    assert shown.stdout.strip() == keys.load_public(public).decode()

    again = run_cli("failkey", "-d", str(tmp_path / "k"), "www1")  # never overwrites a key
    assert again.returncode == 5 and "exists" in again.stderr and "Traceback" not in again.stderr
    assert run_cli("failkey", "-d", str(tmp_path / "k"), "../escape").returncode == 2

    r = run_cli("faild", "--genkey", str(tmp_path / "g"), "www2")
    assert r.returncode == 0, r.stderr
    assert keys.load_identity(tmp_path / "g" / "www2.key_secret").public != keys.load_public(public)


def test_key_file_problems_are_one_line_exit_5(tmp_path: Path, keyring: dict[str, Path]) -> None:
    hosts = keyring["hosts"]
    policy = tmp_path / "p.tcl"
    policy.write_text("failsvc web masters www1\nfailsvc web slaves {nokey}\n")
    cases: list[tuple[str, list[str]]] = [
        ("faild", ["-F", "-s", str(tmp_path / "s"), "-r", str(tmp_path / "pid"),
                   "--curve-secret", str(tmp_path / "missing.key_secret"), "--curve-allow", str(hosts)]),
        ("faild", ["-F", "-s", str(tmp_path / "s"), "-r", str(tmp_path / "pid"),  # a public key only
                   "--curve-secret", str(hosts / "www1.key"), "--curve-allow", str(hosts)]),
        ("faild", ["-F", "-s", str(tmp_path / "s"), "-r", str(tmp_path / "pid"),
                   "--curve-secret", str(hosts / "www1.key_secret"), "--curve-allow", str(tmp_path / "nodir")]),
        ("failc", ["-h", "127.0.0.1:9", "--curve-secret", str(hosts / "admin.key_secret"),
                   "--server-key", str(tmp_path / "missing.key"), "web"]),
        ("failstat", ["--curve-secret", str(tmp_path / "missing.key_secret"), "--server-keys", str(hosts)]),
        ("failstat", ["--curve-secret", str(hosts / "admin.key_secret"), "--server-keys", str(hosts),
                      "nokey:9"]),
        ("failsh", ["-F", "-N", "www2", "-f", str(policy), "-m", "0", "-D", "0",
                    "--curve-secret", str(hosts / "www2.key_secret"), "--curve-keys", str(hosts)]),
    ]
    for prog, args in cases:
        r = run_cli(prog, *args)
        assert r.returncode == 5, (prog, args, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{prog}: ") and "key" in lines[0], (prog, r.stderr)
    usage = [("faild", ["--curve-secret", str(hosts / "www1.key_secret")]),
             ("failc", ["--curve-secret", str(hosts / "admin.key_secret"), "web"]),
             ("failc", ["--server-key", str(hosts / "www1.key"), "web"]),
             ("failsh", ["-f", str(policy), "--curve-secret", str(hosts / "www2.key_secret")])]
    for prog, args in usage:
        r = run_cli(prog, *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (prog, r.stderr)


# faild with CURVE required -------------------------------------------------------------

def test_only_allowed_keys_read_or_write(secure: CurveFaild, keyring: dict[str, Path], tmp_path: Path) -> None:
    host = ["-h", secure.address, "-t", "0.3", "-r", "1"]
    rc, err, _ = failc(*host, *curve_args(keyring, "admin"), "-m", "before", "web", "UP")
    assert rc == 0, err
    with secure.client() as c:
        before = c.get("web")
        c.call("lease", ttl=600)  # as a live failsh would: web UP is not stale for failstat
    by_host = tmp_path / "by-host"  # --server-keys DIR: the key of HOST is DIR/HOST.key
    by_host.mkdir()
    shutil.copy(keyring["hosts"] / "www1.key", by_host / "127.0.0.1.key")
    r = run_cli("failstat", "--curve-secret", str(keyring["hosts"] / "admin.key_secret"),
                "--server-keys", str(by_host), secure.address)
    assert r.returncode == 0 and " web " in r.stdout, r.stderr

    outsiders = {
        "unknown key": curve_args(keyring, "intruder", where="outside"),
        "plaintext": [],
        "wrong server key": curve_args(keyring, "admin", server="www2"),
    }
    for what, args in outsiders.items():
        for query in (["web", "FAIL"], ["web"]):  # a write, then a read
            rc, err, took = failc(*host, *args, *query)
            assert rc == 3, (what, query, rc, err)
            assert "no reply" in err and took < 0.6 + 3.0, (what, took)  # -t x (-r + 1), plus start-up
        r = run_cli("failstat", "-t", "0.3", "-r", "0", *args, secure.address)
        assert r.returncode == 3 and "web" not in r.stdout, (what, r.stdout, r.stderr)

    with secure.client() as c:
        assert c.get("web") == before  # same state, time and counter: nothing got through
        assert [t.reason for t in c.history()] == ["before"]
    wait_for(lambda: "client key" in secure.log() and "not in the allow-list" in secure.log(), 5,
             "the allow-list refusal in faild's log")
    wait_for(lambda: "disagree on CURVE" in secure.log(), 5, "the plaintext refusal in faild's log")
    assert "failover.security" in secure.log()


def test_faildebug_with_curve(secure: CurveFaild, keyring: dict[str, Path]) -> None:
    host = ["-h", secure.address, "--faild", "-t", "0.5"]
    r = run_cli("faildebug", *host, *curve_args(keyring, "admin"), "server", "debug")
    assert r.returncode == 0 and "log level of server set to debug" in r.stdout, r.stderr
    r = run_cli("faildebug", *host, *curve_args(keyring, "intruder", where="outside"), "server", "info")
    assert r.returncode == 3 and "no reply" in r.stderr, r.stderr
    r = run_cli("faildebug", "--curve-secret", str(keyring["hosts"] / "admin.key_secret"),
                "--server-key", str(keyring["hosts"] / "www1.key"), "scheduler", "debug")
    assert r.returncode == 2 and "failsh's control port speaks plaintext" in r.stderr


def test_hc_sets_fail_in_a_curve_faild(secure: CurveFaild, keyring: dict[str, Path], tmp_path: Path) -> None:
    hcfile = tmp_path / "Hcfile"
    hcfile.write_text(f"web:\n    check command false\n    interval 0.2\n    fall 1\n"
                      f"    faild {secure.address} service web\n")
    args = ["-F", "-f", str(hcfile), "--curve-secret", str(keyring["hosts"] / "admin.key_secret")]
    missing = run_cli("hc", *args, "--server-key", str(tmp_path / "none.key"))
    assert missing.returncode == 5 and "none.key" in missing.stderr, missing.stderr
    hc = subprocess.Popen([*cli_command("hc"), *args, "--server-key", str(keyring["hosts"] / "www1.key")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def failed() -> bool:
            with secure.client() as c:
                try:
                    return c.get("web").state == "FAIL"
                except RequestFailed:
                    return False
        wait_for(failed, 10, "hc to set web FAIL over CURVE")
    finally:
        hc.terminate()
        hc.wait(10)


def test_allow_list_is_reread_on_sighup(secure: CurveFaild, keyring: dict[str, Path]) -> None:
    intruder = curve(keyring, "intruder", "www1", where="outside")
    with Client(secure.endpoint, timeout=0.3, retries=0, curve=intruder) as c:
        with pytest.raises(Unreachable):
            c.ping()
        shutil.copy(keyring["outside"] / "intruder.key", keyring["hosts"] / "intruder.key")
        try:
            secure.send(signal.SIGHUP)
            wait_for(lambda: "reloaded allow-list" in secure.log(), 5, "the reload")

            def answers() -> bool:  # the same client: it connects again after a refusal
                try:
                    return c.ping().name == "www1"
                except Unreachable:
                    return False
            wait_for(answers, 5, "the newly allowed key to get in")
        finally:
            (keyring["hosts"] / "intruder.key").unlink()


# failsh pair with CURVE ----------------------------------------------------------------

POLICY = r"""
proc startweb {args} { return [svc_start web] }
proc stopweb {args} { return [svc_stop web] }
failsvc web interval 0.3
failsvc web masters {www1}
failsvc web slaves {www2}
failsvc web start startweb
failsvc web stop stopweb
failhost www1 deadtime 3
"""


class CurveCluster(Cluster):
    """tests/cluster.py's Cluster with CURVE faild processes and failsh --curve-* options."""

    def __init__(self, directory: Path, keyring: dict[str, Path]) -> None:
        super().__init__(directory, HOSTS, POLICY)
        self.keyring = keyring
        self.failds = {n: CurveFaild(directory / f"faild-{n}", keyring, node=n) for n in self.names}

    def start_failsh(self, name: str, policy: Path | None = None, extra: tuple[str, ...] = (),
                     peers: dict[str, int] | None = None) -> FailshProcess:
        hosts = self.keyring["hosts"]
        return super().start_failsh(name, policy, ["--curve-secret", str(hosts / f"{name}.key_secret"),
                                                   "--curve-keys", str(hosts), *extra], peers)


@pytest.fixture
def curve_cluster(tmp_path: Path, keyring: dict[str, Path]) -> Iterator[CurveCluster]:
    c = CurveCluster(tmp_path / "cluster", keyring)
    yield c
    c.close()


def test_failsh_pair_with_curve_fails_over(curve_cluster: CurveCluster) -> None:
    c = curve_cluster
    c.start("www2")
    c.start_failsh("www1")
    c.wait_states("web", {"www1": "UP", "www2": "RECOVER"}, effective=True)
    c.failsh["www1"].kill9()
    took = c.wait_states("web", {"www2": "UP"})
    assert took < 5, f"slave took {took:.1f} s"
    c.start_failsh("www1")  # handback, as without CURVE
    c.wait_states("web", {"www1": "UP", "www2": "RECOVER"}, effective=True)
    for name in HOSTS:
        assert "refused a connection" not in c.failds[name].log(), c.failds[name].log()


def test_failsh_polls_again_once_its_key_is_allowed(curve_cluster: CurveCluster, tmp_path: Path,
                                                   keyring: dict[str, Path]) -> None:
    """www1's faild does not allow www2's key at first: www2 sees the master as down and
    takes the service.  Once the key is added (SIGHUP), www2's failsh connects again on
    its own (libzmq alone would never retry a refused handshake) and hands back."""
    c = curve_cluster
    allow = tmp_path / "allow-www1"
    allow.mkdir()
    for name in ("www1", "admin"):
        shutil.copy(keyring["hosts"] / f"{name}.key", allow)
    c.failds["www1"] = CurveFaild(c.dir / "faild-www1", keyring, node="www1", allow=allow)
    c.start()
    c.wait_states("web", {"www1": "UP", "www2": "UP"})  # misconfigured: www2 cannot see www1
    wait_for(lambda: "not in the allow-list" in c.failds["www1"].log(), 5, "the refusal in www1's log")
    shutil.copy(keyring["hosts"] / "www2.key", allow)
    c.failds["www1"].send(signal.SIGHUP)
    took = c.wait_states("web", {"www1": "UP", "www2": "RECOVER"})
    assert took < 8, f"www2 took {took:.1f} s to see www1 again"


def test_failsh_with_an_unknown_key_gets_nothing(curve_cluster: CurveCluster, tmp_path: Path,
                                                 keyring: dict[str, Path]) -> None:
    """A failsh whose key no faild allows: its local faild refuses it, so it holds no lease
    and writes nothing, and the real slave takes the service as if the host were down."""
    c = curve_cluster
    c.start("www2")
    rogue = tmp_path / "rogue"
    shutil.copytree(keyring["hosts"], rogue, ignore=shutil.ignore_patterns("*.key_secret"))
    keys.generate(tmp_path / "rogue-secret", "www1")
    p = c.start_failsh("www1", extra=("--curve-secret", str(tmp_path / "rogue-secret" / "www1.key_secret"),
                                      "--curve-keys", str(rogue)))
    took = c.wait_states("web", {"www2": "UP"})
    assert took < 8
    state, lease = c.info("www1", "web")
    assert state is None and lease is None  # the rogue failsh wrote nothing, holds no lease
    assert p.running()
    wait_for(lambda: "not in the allow-list" in c.failds["www1"].log(), 5, "the refusal in www1's faild log")



def test_failctl_over_curve(secure: CurveFaild, keyring: dict[str, Path]) -> None:
    """failctl takes failc's CURVE options: an allowed key reads and pauses, an unknown key
    gets no answer (exit 3), and nothing is written."""
    with secure.client() as c:
        c.set("web", "UP")
        c.call("lease", ttl=600)
    host = ["-H", secure.address, "-t", "0.3", "-r", "1"]
    r = run_cli("failctl", *host, *curve_args(keyring, "admin"), "status")
    assert r.returncode == 0 and "web      www1" in r.stdout, (r.stdout, r.stderr)
    r = run_cli("failctl", *host, *curve_args(keyring, "admin"), "pause", "--host", "www1", "-m", "over CURVE")
    assert (r.returncode, r.stdout) == (0, "www1: the whole host paused\n"), r.stderr
    r = run_cli("failctl", *host, *curve_args(keyring, "intruder", where="outside"), "resume", "--host", "www1")
    assert r.returncode == 3 and "Traceback" not in r.stderr
    with secure.client() as c:
        assert c.ask("list").maintenance["*"].reason == "over CURVE"
