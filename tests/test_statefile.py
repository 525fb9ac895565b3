"""faild's state file against what a clumsy admin or a hostile local user leaves there,
through the real faild program: symlinks, special files, huge and invalid content,
counters, stale temporary files, a full disk, and the modes of what faild writes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FaildProcess, run_cli, wait_for

from failover.client import RequestFailed
from failover.faild import store
from failover.states import State

pytestmark = pytest.mark.process

STARTUP = 15.0  # seconds: a refused start takes well under one; this only catches a hang
NOW = 1.7e9


def refused(f: FaildProcess) -> str:
    """Start ``f``, expect exit 5 with one line on stderr (bounded: a hang fails); that line."""
    proc = f.spawn()
    try:
        status = proc.wait(STARTUP)
    except subprocess.TimeoutExpired:
        f.kill9()
        pytest.fail(f"faild hung at start-up:\n{f.log()}")
    lines = f.log().strip().splitlines()
    assert status == 5, (status, lines)
    assert len(lines) == 1 and lines[0].startswith("faild: "), lines
    assert "Traceback" not in f.log() and not f.pidfile.exists()
    return lines[0]


def state_file(*services: dict, counter: int = 10, history: list | None = None) -> str:
    return json.dumps({"format": 1, "counter": counter, "services": list(services), "history": history or []})


def rec(name: object = "web", state: object = "UP", last_change: object = NOW, counter: object = 1) -> dict:
    return {"name": name, "state": state, "last_change": last_change, "counter": counter}


# Symlinks ---------------------------------------------------------------------------------------
def test_dangling_symlink_is_refused_and_kept(faild_factory: Callable[..., FaildProcess], tmp_path: Path) -> None:
    f = faild_factory(start=False)
    target = tmp_path / "not-mounted" / "faild.state"
    f.statefile.symlink_to(target)
    line = refused(f)
    assert str(f.statefile) in line and "symlink" in line and str(target) in line, line
    assert f.statefile.is_symlink() and os.readlink(f.statefile) == str(target)
    assert not target.parent.exists()


def test_symlink_to_a_file_is_followed_and_kept(faild_factory: Callable[..., FaildProcess], tmp_path: Path) -> None:
    f = faild_factory(start=False)
    real = tmp_path / "data" / "real.state"
    real.parent.mkdir()
    real.write_text(state_file(rec("db", "RECOVER", counter=4), counter=4))
    f.statefile.symlink_to(real)
    f.start()
    with f.client() as c:
        assert c.get("db").state is State.RECOVER
        assert c.set("web", State.UP).counter == 5
    assert f.statefile.is_symlink() and os.readlink(f.statefile) == str(real)
    data = json.loads(real.read_text())
    assert [s["name"] for s in data["services"]] == ["db", "web"] and data["counter"] == 5
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert f.stop() == 0
    f.start()  # and read again through the link
    with f.client() as c:
        assert c.get("web").counter == 5


# Files that are not state files ------------------------------------------------------------------
def test_fifo_is_refused_without_hanging(faild_factory: Callable[..., FaildProcess]) -> None:
    f = faild_factory(start=False)
    os.mkfifo(f.statefile)
    assert "is a FIFO, not a regular file" in refused(f)
    assert stat.S_ISFIFO(f.statefile.lstat().st_mode)


def test_directory_is_refused(faild_factory: Callable[..., FaildProcess]) -> None:
    f = faild_factory(start=False)
    f.statefile.mkdir()
    assert "is a directory, not a regular file" in refused(f)


@pytest.mark.parametrize("link", [False, True], ids=["path", "symlink"])
def test_dev_zero_is_refused(faild_factory: Callable[..., FaildProcess], link: bool) -> None:
    f = faild_factory(start=False)
    if link:
        f.statefile.symlink_to("/dev/zero")
    else:
        f.statefile = Path("/dev/zero")
    assert "is a character device, not a regular file" in refused(f)


def test_file_above_the_size_bound_is_refused(faild_factory: Callable[..., FaildProcess]) -> None:
    f = faild_factory(start=False)
    with open(f.statefile, "wb") as out:  # sparse: the size is what counts, not the blocks
        out.truncate(store.MAX_FILE + 1)
    line = refused(f)
    assert f"larger than {store.MAX_FILE} bytes" in line, line
    assert f.statefile.stat().st_size == store.MAX_FILE + 1


# Content ------------------------------------------------------------------------------------------
BAD_CONTENT = {
    "mixed-type names": (state_file(rec(123), rec("web")), "services[0].name"),
    "empty name": (state_file(rec("")), "services[0].name"),
    "invalid name": (state_file(rec("bad/name")), "services[0].name"),
    "name too long": (state_file(rec("x" * 65)), "services[0].name"),
    "duplicate names": (state_file(rec("web"), rec("web", "FAIL")), "services[1].name: service 'web' twice"),
    "bad state": (state_file(rec(state="SIDEWAYS")), "services[0].state"),
    "state a number": (state_file(rec(state=1)), "services[0].state"),
    "NaN time": (state_file(rec()).replace(f'"last_change": {NOW}', '"last_change": NaN'),
                 "services[0].last_change"),
    "time 1e300": (state_file(rec(last_change=1e300)), "services[0].last_change"),
    "negative counter": (state_file(rec(counter=-1)), "services[0].counter"),
    "services an object": ('{"format": 1, "counter": 1, "services": {"web": {}}}', "'services' must be a list"),
    "history time a word": (state_file(rec(), history=[{"service": "web", "old": None, "new": "UP",
                                                         "time": "yesterday", "counter": 1}]), "history[0].time"),
    "history reason a list": (state_file(rec(), history=[{"service": "web", "old": None, "new": "UP",
                                                           "time": NOW, "counter": 1, "reason": ["x"]}]),
                              "history[0].reason"),
    "top counter a string": (state_file(rec()).replace('"counter": 10', '"counter": "10"'), "counter"),
    "record by too long": (state_file({**rec(), "by": "b" * 81}), "services[0].by"),
    "history by a number": (state_file(rec(), history=[{"service": "web", "old": None, "new": "UP",
                                                         "time": NOW, "counter": 1, "by": 5}]), "history[0].by"),
    "maintenance a list": (state_file(rec())[:-1] + ', "maintenance": ["web"]}', "maintenance: expected an object"),
    "maintenance of a bad name": (state_file(rec())[:-1] + ', "maintenance": {"a b": {"since": 1}}}',
                                  "maintenance: not '*' or a service name"),
    "maintenance since NaN": (state_file(rec())[:-1] + ', "maintenance": {"*": {"since": NaN}}}',
                              "maintenance[*].since"),
    "prefer host missing": (state_file(rec())[:-1] + ', "prefer": {"web": {"since": 1}}}', "prefer[web]: no 'host'"),
    "prefer of the host": (state_file(rec())[:-1] + ', "prefer": {"*": {"host": "a", "since": 1}}}',
                           "prefer: not a service name"),
}


@pytest.mark.parametrize(("content", "field"), BAD_CONTENT.values(), ids=BAD_CONTENT.keys())
def test_invalid_content_is_refused_naming_the_field(faild_factory: Callable[..., FaildProcess], content: str,
                                                     field: str) -> None:
    f = faild_factory(start=False)
    f.statefile.write_text(content)
    line = refused(f)
    assert line.startswith(f"faild: invalid state file {f.statefile}: ") and field in line, line
    assert len(line) < 400, line
    assert f.statefile.read_text() == content


def test_counter_below_the_records_is_raised(faild_factory: Callable[..., FaildProcess]) -> None:
    f = faild_factory(start=False)
    f.statefile.write_text(state_file(rec("web", counter=5), rec("db", counter=3), counter=2,
                                      history=[{"service": "web", "old": None, "new": "UP", "time": NOW,
                                                "counter": 7, "reason": "x"}]))
    f.start()
    wait_for(lambda: "raised to 7" in f.log(), 5, "the counter warning")
    with f.client() as c:
        assert c.set("new", State.FAIL).counter == 8
        assert c.set("web", State.FAIL).counter == 9
    assert f.stop() == 0
    assert json.loads(f.statefile.read_text())["counter"] == 9


# Temporary files ------------------------------------------------------------------------------------
def test_stale_temp_files_are_removed_at_start(faild_factory: Callable[..., FaildProcess]) -> None:
    f = faild_factory(start=False)
    f.statefile.write_text(state_file(rec()))
    stale = [f.directory / ".faild.state.k3j_9x0a", f.directory / ".faild.state.00000000"]
    kept = [f.directory / ".faild.state.bak", f.directory / ".other.state.k3j_9x0a", f.directory / "faild.state.old"]
    for p in stale + kept:
        p.write_text("{half a state file")
    f.start()
    assert [p for p in stale if p.exists()] == []
    assert all(p.read_text() == "{half a state file" for p in kept)
    assert "removed stale temporary file" in f.log()
    with f.client() as c:
        assert c.get("web").state is State.UP


# A full disk ------------------------------------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only), unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the file system is full; the file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"x" * 1024)
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC
    return filler


def test_failed_write_leaves_memory_and_disk_in_agreement(faild_factory: Callable[..., FaildProcess],
                                                          small_fs: Path) -> None:
    f = faild_factory(start=False)
    f.statefile = small_fs / "faild.state"  # only the state file on the small file system
    f.start()
    with f.client() as c:
        c.set("web", State.UP, "first")
        before = f.statefile.read_text()
        filler = fill(small_fs)
        with pytest.raises(RequestFailed) as err:
            c.set("web", State.FAIL, "on a full disk")
        assert err.value.code == "STORE" and "No space left" in str(err.value)
        assert c.get("web").state is State.UP
        assert [t.reason for t in c.history()] == ["first"]
        assert f.statefile.read_text() == before
        assert sorted(p.name for p in small_fs.iterdir()) == ["faild.state", "filler"]  # no temp file left
        filler.unlink()
        rec_ = c.set("web", State.FAIL, "after freeing space")
        host, records = c.list()
        history = c.history()
    data = json.loads(f.statefile.read_text())
    assert data["services"] == [r.to_wire() for r in records] and rec_.counter == data["counter"] == 2
    assert data["history"] == [t.to_wire() for t in history]
    assert [t["reason"] for t in data["history"]] == ["first", "after freeing space"]
    assert "No space left" in f.log() and f.running()


# Modes ------------------------------------------------------------------------------------------------
class UmaskFaild(FaildProcess):
    """faild started under umask 000."""

    def spawn(self) -> subprocess.Popen[bytes]:
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, umask=0)
        return self.proc


def test_modes_under_umask_000(tmp_path: Path) -> None:
    f = UmaskFaild(tmp_path / "f")
    f.statefile = tmp_path / "var" / "lib" / "failover" / "faild.state"
    try:
        f.start()
        with f.client() as c:
            c.set("web", State.UP)
        assert stat.S_IMODE(f.statefile.stat().st_mode) == 0o600
        for d in (tmp_path / "var", tmp_path / "var" / "lib", f.statefile.parent):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        assert stat.S_IMODE(f.pidfile.stat().st_mode) == 0o644
        assert f.pidfile.read_text().strip() == str(f.proc.pid if f.proc else 0)
    finally:
        f.kill9()


def test_pidfile_symlink_is_not_followed(faild_factory: Callable[..., FaildProcess], tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    f = faild_factory(start=False)
    f.pidfile.symlink_to(victim)
    status = f.spawn().wait(STARTUP)
    assert status == 5 and victim.read_text() == "precious\n", f.log()
    assert "Traceback" not in f.log()
    assert f"cannot write pid file {f.pidfile}: it is a symlink, which faild does not follow" in f.log()


def test_state_dir_that_is_a_file(faild_factory: Callable[..., FaildProcess], tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    f = faild_factory(start=False)
    f.statefile = tmp_path / "plain" / "faild.state"
    assert "Not a directory" in refused(f)


def test_failstat_on_the_recovered_state(faild_factory: Callable[..., FaildProcess]) -> None:
    """What the loader accepts, every reader can show (the mixed-names file broke every list)."""
    f = faild_factory(start=False)
    f.statefile.write_text(state_file(rec("123", counter=1), rec("web", "FAIL", counter=2), counter=2))
    f.start()
    with f.client() as c:
        c.call("lease", ttl=600)  # a live failsh: 123 UP is not stale (failstat would exit 6)
    r = run_cli("failstat", "--json", f.address)
    assert r.returncode == 0, r.stderr
    assert [s["name"] for s in json.loads(r.stdout)[0]["services"]] == ["123", "web"]
