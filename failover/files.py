"""Files an admin gives failover: read bounded, written atomically, directories made with a mode.

Every file failover reads from an admin (the state file, the community file, key files)
goes through :func:`read_file`, and every file it writes for good (the state file)
through :func:`atomic_write`, so a FIFO or a device cannot hang a daemon, and a
``kill -9`` never leaves a torn file.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import stat
import tempfile
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_problem(path: Path, what: str, unreadable_as: str = "") -> str | None:
    """Why the secret ``path`` (``what`` in the message) must not be used: it cannot be
    looked at, or group or others may read it; None if only its owner may."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"cannot read {unreadable_as or what} {path}: {exc.strerror}"
    if mode & 0o077:
        return f"{what} {path} is open to group or others (mode {mode & 0o777:04o}): chmod 600 {path}"
    return None


def read_file(path: Path, limit: int, what: str = "file", shown: Path | None = None) -> bytes:
    """The bytes of the regular file ``path`` (symlinks followed), at most ``limit`` of them.

    For every file failover reads from an admin (state, community, key files): opened
    non-blocking after a stat, so a FIFO or a device can neither hang the reader nor flood
    its memory.  ValueError (not a regular file, too large) or OSError (cannot open/read),
    each naming ``what`` and ``shown`` (default ``path``)."""
    shown = path if shown is None else shown
    _regular(shown, os.stat(path), what, limit)  # before open: opening some devices has effects
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _regular(shown, os.fstat(fd), what, limit)  # replaced between stat and open?
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # grew while read
                raise ValueError(f"{what} {shown} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)



class KeyFileError(Exception):
    """A key file (CURVE, heartbeat) that cannot be used; the message says why and what to do."""


def read_key_file(path: Path, limit: int, what: str) -> bytes:
    """read_file for a key file: every failure is a KeyFileError naming ``what`` and ``path``."""
    try:
        return read_file(path, limit, what)
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise KeyFileError(str(exc)) from None

def _regular(path: Path, st: os.stat_result, what: str, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = {stat.S_IFIFO: "a FIFO", stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device",
                stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(st.st_mode), "special")
        raise ValueError(f"{what} {path} is {kind}, not a regular file")
    if st.st_size > limit:
        raise ValueError(f"{what} {path} is larger than {limit} bytes ({st.st_size})")


def make_dir(path: Path, mode: int = DIR_MODE) -> None:
    """mkdir -p whose new directories get ``mode`` whatever the umask; existing ones are kept.
    NotADirectoryError if ``path`` (or a parent) is something else."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            continue
        os.chmod(d, mode)


def write_target(path: Path) -> Path:
    """The file to replace: a symlink's target (it must exist: a dangling link is usually a
    file system not mounted yet, and replacing the link would hide the real file)."""
    if not path.is_symlink():
        return path
    try:
        return Path(os.path.realpath(path, strict=True))
    except OSError:
        raise FileNotFoundError(f"{path} is a symlink to {os.readlink(path)!r}, which does not exist") from None


def atomic_write(path: Path, payload: bytes, mode: int = FILE_MODE) -> None:
    """Write temp file + fsync + rename + fsync(dir): never a torn file.  The file gets
    ``mode`` whatever the umask; the temporary file is named as :func:`stale_temps` finds it."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def stale_temps(path: Path) -> list[Path]:
    """The temporary files an :func:`atomic_write` of ``path`` that was killed left behind
    (named as mkstemp names them; ``.NAME.bak`` and the like are the admin's)."""
    ours = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}")
    return [tmp for tmp in path.parent.glob(f".{glob.escape(path.name)}.*") if ours.fullmatch(tmp.name)]
