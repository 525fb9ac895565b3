"""Real installs: the Debian package built with dpkg-buildpackage and installed with apt into
a clean Debian 12 root made with debootstrap, and a pip install on Debian's own Python and
libraries.  Slow (a minute or two, most of it apt): ``pytest -m "not slow"`` leaves them
out; scripts/test.sh (CI) runs them and installs what they need as root.

The debootstrap root is made fresh in a temporary directory.  Only its pristine state right
after debootstrap is cached, as a tarball written atomically under CACHE, and only when
made from the same mirror and suite; each run unpacks its own copy, so nothing a run
installs or breaks reaches the next.  FAILOVER_TEST_NO_CACHE=1 bypasses the cache.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
CACHE = Path("/var/cache/failover-tests")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's python3 and tools, not a pyenv or venv one
PROGRAMS = ("faild", "failsh", "failc", "failstat", "failctl", "failmon", "faildebug", "failkey", "hc", "hcmon")
BUILD_TOOLS = ("dpkg-buildpackage", "dpkg-checkbuilddeps", "dh", "pybuild")


def system_env(**extra: str) -> dict[str, str]:
    return {"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive",
            **extra}


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t, path=SYSTEM_PATH) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/test.sh installs them as root)")


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: dpkg-buildpackage's installs, debootstrap and chroot")


def copy_source(dest: Path) -> Path:
    """The source tree without venvs, build output or caches (dpkg-buildpackage writes the
    .deb next to it)."""
    ignore = shutil.ignore_patterns(".git", ".venv*", "build", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".ruff_cache", ".hypothesis", ".pybuild", ".demo")
    src = dest / "failover-0.6.0"
    shutil.copytree(ROOT, src, ignore=ignore, symlinks=True)
    return src


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_root()
    need(*BUILD_TOOLS)
    src = copy_source(tmp_path_factory.mktemp("deb"))
    deps = subprocess.run(["dpkg-checkbuilddeps"], cwd=src, capture_output=True, text=True, env=system_env())
    if deps.returncode != 0:
        pytest.skip(f"build dependencies missing ({deps.stderr.strip()}); scripts/test.sh installs them as root")
    started = time.monotonic()
    r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, capture_output=True, text=True,
                       env=system_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    print(f"dpkg-buildpackage took {time.monotonic() - started:.1f} s")
    debs = list(src.parent.glob("failover_*_all.deb"))
    assert len(debs) == 1, debs
    return debs[0]


def deb_listing(deb: Path) -> dict[str, str]:
    """path -> 'mode owner' of every file in the package."""
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    files = {}
    for line in out.splitlines():
        mode, owner, _size, _date, _time, path, *_ = line.split()
        files[path.removeprefix(".")] = f"{mode} {owner}"
    return files


def test_package_contents(deb: Path) -> None:
    files = deb_listing(deb)
    for program in PROGRAMS:
        assert files[f"/usr/bin/{program}"].startswith("-rwxr-xr-x root/root"), program
        assert f"/usr/share/man/man1/{program}.1.gz" in files, program
    site = "/usr/lib/python3/dist-packages/failover"
    for name in ("shell/tcl/failover.tcl", "shell/tcl/demo-web.tcl", "cli/launch.py", "cli/requirements.py"):
        assert f"{site}/{name}" in files, name
    for unit in ("faild", "failsh", "hc"):
        assert f"/lib/systemd/system/{unit}.service" in files
    for doc in ("README.md", "faild.md", "getting-started.md", "tuning.md", "troubleshooting.md",
                "samples/policies/01-web-master-slave.tcl", "samples/systemd/failsh.service",
                "samples/ipfailover-linux/setup.sh"):
        assert f"/usr/share/doc/failover/{doc}" in files, doc
    assert not any(p.startswith("/usr/share/failover") or "/tcl/failover.tcl" in p and not p.startswith(site)
                   for p in files)
    info = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True,
                          check=True).stdout
    depends = {re.split(r"[ (]", d.strip())[0] for d in info.split(",")}
    assert {"python3-tk", "python3-zmq", "python3-attr", "python3-prometheus-client", "iproute2", "adduser",
            "procps"} <= depends


def test_maintainer_scripts(deb: Path, tmp_path: Path) -> None:
    """The scripts that make the user and the community file parse, and never write 'public RW'."""
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "control")], check=True)
    postinst = (tmp_path / "control" / "postinst").read_text()
    for script in ("postinst", "postrm"):
        subprocess.run(["sh", "-n", str(tmp_path / "control" / script)], check=True)
    assert "adduser --system" in postinst and "/dev/urandom" in postinst
    assert not re.search(r"public\s+RW", postinst)
    # the units are not enabled at installation (deb-systemd-invoke starts only enabled ones),
    # an upgrade does not stop them (a failsh restart is a failover), a removal does
    for unit in ("faild", "failsh", "hc"):
        assert f"deb-systemd-helper --quiet was-enabled '{unit}.service'" in postinst
    preinst = tmp_path / "control" / "preinst"
    assert not preinst.exists() or "deb-systemd-invoke stop" not in preinst.read_text()
    assert "deb-systemd-invoke stop" in (tmp_path / "control" / "prerm").read_text()


# ----- a clean Debian 12 root ---------------------------------------------------------------------

def mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    texts = []
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if f.is_file():
            texts.append(f.read_text(errors="replace"))
    text = "\n".join(texts)
    for url in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
        if re.search(r"/debian/?$", url):
            return url
    return "http://deb.debian.org/debian"


def debootstrap(target: Path) -> None:
    """A minbase Debian 12 in ``target``: from the cache when it has one made from the same
    mirror, else debootstrap (which then fills the cache)."""
    url = mirror()
    key = re.sub(r"[^A-Za-z0-9.]+", "_", url.split("://", 1)[-1]).strip("_")
    cached = CACHE / f"{SUITE}-minbase-{key}.tar"
    if cached.exists() and not os.environ.get("FAILOVER_TEST_NO_CACHE"):
        subprocess.run(["tar", "-C", str(target), "--numeric-owner", "-xpf", str(cached)], check=True)
        shutil.copy("/etc/resolv.conf", target / "etc" / "resolv.conf")  # today's, for apt
        return
    r = subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(target), url], capture_output=True,
                       text=True, env=system_env(), timeout=900)
    if r.returncode != 0:
        log = (target / "debootstrap" / "debootstrap.log")
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else r.stderr[-2000:]
        pytest.fail(f"debootstrap {SUITE} from {url} failed:\n{detail}")
    if not os.environ.get("FAILOVER_TEST_NO_CACHE"):
        CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.partial")
        subprocess.run(["tar", "-C", str(target), "--numeric-owner", "-cf", str(partial), "."], check=True)
        os.replace(partial, cached)  # whole or absent: never a half-written root


class Chroot:
    def __init__(self, root: Path) -> None:
        self.root = root

    def argv(self, *cmd: str) -> list[str]:
        return ["chroot", str(self.root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in system_env().items()),
                *cmd]

    def run(self, *cmd: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(self.argv(*cmd), capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r

    def sh(self, script: str, **kw: object) -> subprocess.CompletedProcess:
        return self.run("sh", "-c", script, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def installed(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chroot]:
    """Debian 12 minbase with the package installed by apt, as an administrator would."""
    need("debootstrap", "chroot")
    target = tmp_path_factory.mktemp("debian12") / "root"
    target.mkdir()
    started = time.monotonic()
    debootstrap(target)
    print(f"debian 12 root ready in {time.monotonic() - started:.1f} s")
    shutil.copy(deb, target / "tmp" / deb.name)
    root = Chroot(target)
    started = time.monotonic()
    root.run("apt-get", "-q", "-o", "DPkg::Lock::Timeout=600", "update", timeout=600)
    root.run("apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", f"/tmp/{deb.name}", timeout=900)
    print(f"apt-get install of the package took {time.monotonic() - started:.1f} s")
    try:
        yield root
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_installed_files_and_user(installed: Chroot) -> None:
    installed.run("getent", "passwd", "failover")
    modes = installed.run("stat", "-c", "%a %U:%G %n", "/etc/failover/communities", "/etc/failover/failsh.env",
                          "/var/lib/failover").stdout.split("\n")
    assert modes[:3] == ["640 root:failover /etc/failover/communities", "600 root:root /etc/failover/failsh.env",
                         "750 failover:failover /var/lib/failover"]
    communities = (installed.root / "etc/failover/communities").read_text()
    rules = [line.split() for line in communities.splitlines() if line.strip() and not line.startswith("#")]
    rw = [r[1] for r in rules if r[2] == "RW"]
    assert len(rw) == 1 and rw[0] != "public" and len(rw[0]) >= 32
    assert ["*", "public", "RO"] in rules
    env = (installed.root / "etc/failover/failsh.env").read_text()
    assert f'FAILSH_OPTS="--faild-community {rw[0]}"' in env
    for program in PROGRAMS:
        assert installed.run(program, "--version").stdout.startswith(f"{program} (failover) ")
    assert (installed.root / "usr/share/man/man1/faild.1.gz").exists()


def test_faild_failsh_failstat_in_the_root(installed: Chroot) -> None:
    """faild as the 'failover' user with the generated community file; failsh --check of a
    packaged sample; failc with the RW community, refused with 'public'; failstat reads."""
    port = free_port()
    faild = subprocess.Popen(installed.argv("faild", "-F", "-l", "127.0.0.1", "-p", str(port),
                                            "-s", "/var/lib/failover/faild.state", "-r", "/run/faild.pid",
                                            "-c", "/etc/failover/communities", "-u", "failover"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = f"127.0.0.1:{port}"  # a debootstrap root has no /etc/hosts: no 'localhost'
        deadline = time.monotonic() + 20
        while installed.run("failstat", address, check=False).returncode != 0:
            assert faild.poll() is None and time.monotonic() < deadline, "faild did not come up"
            time.sleep(0.2)
        rw = re.search(r"--faild-community (\S+)\"", (installed.root / "etc/failover/failsh.env").read_text())
        assert rw is not None
        installed.run("failc", "-h", address, "-c", rw.group(1), "web", "RECOVER")
        refused = installed.run("failc", "-h", address, "web", "UP", check=False)  # community 'public'
        assert refused.returncode == 1, refused.stderr
        table = installed.run("failstat", address).stdout
        assert re.search(r"web\s+RECOVER", table), table
        assert (installed.root / "var/lib/failover/faild.state").stat().st_uid != 0  # written as 'failover'
        check = installed.run("failsh", "--check", "-N", "www1", "-f",
                              "/usr/share/doc/failover/samples/policies/01-web-master-slave.tcl")
        assert "web: interval 2 masters [] slaves ['www2']" in check.stdout
        lib = installed.run("failsh", "--check", "-N", "solo", "-f", "/tmp/lib.tcl", check=False)
        assert lib.returncode == 5  # no such file: a clear refusal, not a traceback
        assert "Traceback" not in lib.stderr
        (installed.root / "tmp/lib.tcl").write_text("failsvc web interval 1\nputs [fo::sh true]\n")
        assert installed.run("failsh", "--check", "-N", "solo", "-f", "/tmp/lib.tcl").stdout.startswith("1\n")
    finally:
        faild.send_signal(signal.SIGTERM)
        try:
            faild.wait(10)
        except subprocess.TimeoutExpired:
            faild.kill()
            faild.wait(5)


def test_units_verify_and_man_in_the_root(installed: Chroot) -> None:
    """With systemd and man-db (a standard Debian has both): the packaged units pass
    systemd-analyze verify, and 'man faild' finds the page."""
    installed.run("apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", "systemd", "man-db",
                  timeout=900)
    r = installed.run("systemd-analyze", "verify", "faild.service", "failsh.service", "hc.service", check=False)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert installed.run("man", "-w", "faild").stdout.strip() == "/usr/share/man/man1/faild.1.gz"
    page = installed.sh("MANWIDTH=80 man faild | col -b").stdout
    assert "faild - The failover state daemon" in page and "--communities FILE" in page


def test_missing_tkinter_in_the_root(installed: Chroot) -> None:
    """python3-tk removed behind apt's back: failsh says which package, exit 5."""
    installed.run("dpkg", "--remove", "--force-depends", "python3-tk")
    try:
        r = installed.run("failsh", "--check", "-f", "/usr/share/doc/failover/samples/policies/"
                          "01-web-master-slave.tcl", check=False)
        assert r.returncode == 5 and r.stdout == ""
        assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("failsh: Python's tkinter is missing")
        assert r.stderr.rstrip().endswith("apt-get install python3-tk")
        assert installed.run("faild", "--version").returncode == 0  # faild does not need it
    finally:
        installed.run("apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", "python3-tk",
                      timeout=900)


def test_purge_removes_the_generated_files(installed: Chroot) -> None:
    installed.run("apt-get", "purge", "-y", "-q", "failover", timeout=300)
    assert not (installed.root / "etc/failover/communities").exists()
    assert not (installed.root / "etc/failover/failsh.env").exists()
    assert not (installed.root / "usr/bin/faild").exists()


# ----- pip install on Debian's Python -------------------------------------------------------------

def test_pip_install_on_debians_python(tmp_path: Path) -> None:
    """pip install . into a venv of Debian's python3 that sees Debian's python3-zmq,
    python3-attr, python3-prometheus-client and python3-tk (--system-site-packages): the
    floors admit them, man finds the pages through PATH, the installed demo runs."""
    python = "/usr/bin/python3"
    probe = subprocess.run([python, "-c", "import zmq, attrs, prometheus_client, tkinter, setuptools, wheel, venv"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("needs Debian's python3-venv, python3-zmq, python3-attr, python3-prometheus-client, "
                    "python3-tk, python3-setuptools, python3-wheel (scripts/test.sh installs them as root)")
    need("man")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    src = copy_source(tmp_path)
    # offline: Debian's setuptools builds, Debian's libraries satisfy the dependencies
    r = subprocess.run([str(venv / "bin/pip"), "install", "--no-index", "--no-build-isolation",
                        "--disable-pip-version-check", str(src)], capture_output=True, text=True, timeout=600,
                       env=system_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    env = system_env(PATH=f"{venv}/bin:{SYSTEM_PATH}")
    env.pop("MANPATH", None)
    where = subprocess.run(["man", "-w", "faild"], capture_output=True, text=True, env=env)
    assert where.stdout.strip() == f"{venv}/share/man/man1/faild.1", where.stderr
    versions = subprocess.run([str(venv / "bin/python"), "-c", "import zmq, attrs; print(zmq.__file__)"],
                              capture_output=True, text=True, check=True).stdout
    assert versions.startswith("/usr/lib/python3/dist-packages/")
    demo = subprocess.run([str(venv / "bin/python"), "-m", "failover.lab.demo"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "HANDBACK: www1 serves again" in demo.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
