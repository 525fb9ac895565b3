"""The heartbeat key on the command line: failkey --heartbeat-key writes one (0600, never
over an existing file), failsh --heartbeat-key refuses a key file it must not use with
exit 5 and the fix, and a heartbeat port in use stops failsh at start (exit 5)."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
from support import free_port, run_cli

from failover import heartbeat

pytestmark = pytest.mark.process

POLICY = """failsvc web interval 1
failsvc web masters {www1}
failsvc web slaves {www2}
failsvc web start {return UP}
failsvc web stop {return RECOVER}
"""


def test_failkey_writes_a_private_key_once(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat.key"
    r = run_cli("failkey", "--heartbeat-key", str(path))
    assert r.returncode == 0, r.stderr
    assert str(path) in r.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = heartbeat.load_key(path)
    r = run_cli("failkey", "--heartbeat-key", str(path))
    assert r.returncode == 5 and "exists" in r.stderr, r
    assert heartbeat.load_key(path) == key  # untouched
    r = run_cli("failkey", "--heartbeat-key", str(tmp_path / "no" / "such" / "dir.key"))
    assert r.returncode == 5 and "cannot write" in r.stderr, r
    r = run_cli("failkey", "--heartbeat-key", str(tmp_path / "k2"), "www1")
    assert r.returncode == 2 and "takes no NAME" in r.stderr, r


def _failsh(tmp_path: Path, *args: str) -> tuple[int, str]:
    policy = tmp_path / "web.tcl"
    policy.write_text(POLICY)
    r = run_cli("failsh", "-F", "-N", "www1", "-f", str(policy), "-P", f"www2=127.0.0.1:{free_port()}",
                "--faild", f"127.0.0.1:{free_port()}", "-m", "0", "-D", "0", "-i", str(tmp_path / "pid"),
                "-l", str(tmp_path / "dump"), *args, timeout=30)
    return r.returncode, r.stderr


def test_failsh_refuses_key_files_it_must_not_use(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat.key"
    heartbeat.write_key(path)
    path.chmod(0o644)
    code, err = _failsh(tmp_path, "--heartbeat-key", str(path))
    assert code == 5 and f"heartbeat key file {path} is open to group or others" in err \
        and f"chmod 600 {path}" in err, err
    path.write_text("not a key\n")
    path.chmod(0o600)
    code, err = _failsh(tmp_path, "--heartbeat-key", str(path))
    assert code == 5 and "is not a heartbeat key" in err and "failkey --heartbeat-key" in err, err
    code, err = _failsh(tmp_path, "--heartbeat-key", str(tmp_path / "missing"))
    assert code == 5 and "cannot read heartbeat key file" in err, err
    code, err = _failsh(tmp_path, "--heartbeat-port", "70000")
    assert code == 2 and "invalid heartbeat port 70000" in err, err


def test_a_heartbeat_port_in_use_stops_failsh(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat.key"
    heartbeat.write_key(path)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as taken:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        taken.bind(("::", 0))
        port = taken.getsockname()[1]
        code, err = _failsh(tmp_path, "--heartbeat-key", str(path), "--heartbeat-port", str(port))
    assert code == 5 and f"cannot bind heartbeat port udp {port}" in err, err
