"""A client that keeps requesting the vipserver service on the VIP and logs every outcome.

Run inside the client namespace (``ip netns exec NS python -m failover.lab.vipclient ...``).  It
opens a fresh TCP connection every ``--interval-ms`` whether or not earlier requests have
finished (up to ``timeout/interval + 1`` in flight), so the moment the service is back is seen
within one interval even while earlier requests are still hanging on a dead host.  A fresh
connection per request also means a fresh ARP lookup result is used, like a real client.

Each outcome is one JSON line: ``{"seq", "t0", "t1", "ok", "host", "err"}`` where t0/t1 are
``time.monotonic()`` at send and completion (the clock is shared by every namespace, so a
benchmark can compare them with its own monotonic fault times), ``host`` is the node name the
server answered with, and ``err`` is "timeout" or an errno name.  The first line is a header
``{"ev": "start", ...}``.  ``read_results``/``first_ok``/``longest_gap`` analyse such a file.
"""

from __future__ import annotations

import argparse
import errno
import json
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import attrs

from failover import ports


@attrs.frozen
class Result:
    """One request's outcome; t0/t1 are monotonic seconds."""

    seq: int
    t0: float
    t1: float
    ok: bool
    host: str | None = None
    err: str | None = None

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"))


def _errname(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def probe(addr: str, port: int = ports.LAB_WEB, timeout: float = 1.0) -> Result:
    """One blocking request; used for readiness checks (``--once``)."""
    t0 = time.monotonic()
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            buf = b""
            while b"\n" not in buf and time.monotonic() - t0 < timeout:
                chunk = s.recv(256)
                if not chunk:
                    break
                buf += chunk
    except TimeoutError:
        return Result(0, t0, time.monotonic(), False, err="timeout")
    except OSError as e:
        return Result(0, t0, time.monotonic(), False, err=_errname(e.errno or 0))
    if b"\n" not in buf:
        return Result(0, t0, time.monotonic(), False, err="eof")
    return Result(0, t0, time.monotonic(), True, host=buf.split(b"\n", 1)[0].decode(errors="replace"))


class _Stop:
    flag = False


def run(addr: str, port: int, interval: float, timeout: float, out: IO[str],
        duration: float, count: int | None = None) -> tuple[int, int]:
    """Request every `interval` s for `duration` s (or `count` requests); returns (ok, failed)."""
    sel = selectors.DefaultSelector()
    # sock -> [seq, t0, buffer]
    pending: dict[socket.socket, list] = {}
    max_inflight = int(timeout / interval) + 2
    n_ok = n_fail = seq = 0
    start = time.monotonic()
    deadline = start + duration
    next_send = start

    def finish(s: socket.socket, ok: bool, host: str | None = None, err: str | None = None) -> None:
        nonlocal n_ok, n_fail
        rseq, t0, _ = pending.pop(s)
        sel.unregister(s)
        if not ok:
            # RST instead of FIN: an abandoned attempt leaves nothing behind in either namespace.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        out.write(Result(rseq, t0, time.monotonic(), ok, host, err).to_json() + "\n")
        out.flush()  # readers tail the file while we run
        if ok:
            n_ok += 1
        else:
            n_fail += 1

    family = socket.AF_INET6 if ":" in addr else socket.AF_INET  # a literal address, IPv4 or IPv6
    while not _Stop.flag:
        now = time.monotonic()
        if now >= deadline or (count is not None and seq >= count and not pending):
            break
        if now >= next_send and (count is None or seq < count) and len(pending) < max_inflight:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((addr, port))
            pending[s] = [seq, now, b""]
            sel.register(s, selectors.EVENT_WRITE)
            seq += 1
            if rc not in (0, errno.EINPROGRESS):
                finish(s, False, err=_errname(rc))
            # After a stall, do not burst to catch up: the schedule restarts from now.
            next_send = max(next_send + interval, now)
        for s, (_, t0, _) in list(pending.items()):
            if now - t0 >= timeout:
                finish(s, False, err="timeout")
        wait = next_send - now
        if pending:
            wait = min(wait, min(t0 + timeout for _, t0, _ in pending.values()) - now)
        for key, _ in sel.select(max(0.0, min(wait, 0.5))):
            s = key.fileobj  # type: ignore[assignment]
            if s not in pending:
                continue
            if key.events & selectors.EVENT_WRITE:
                code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    finish(s, False, err=_errname(code))
                else:
                    sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                chunk = s.recv(256)
            except OSError as e:
                finish(s, False, err=_errname(e.errno or 0))
                continue
            pending[s][2] += chunk
            buf = pending[s][2]
            if b"\n" in buf:
                finish(s, True, host=buf.split(b"\n", 1)[0].decode(errors="replace"))
            elif not chunk:
                finish(s, False, err="eof")
    for s in list(pending):
        finish(s, False, err="stopped")
    sel.close()
    return n_ok, n_fail


def read_results(path: str | Path) -> list[Result]:
    """Parse a vipclient output file; the header and a half-written last line are skipped."""
    return [r for line in Path(path).read_text().splitlines() if (r := _result(line)) is not None]


def _result(line: str | bytes) -> Result | None:
    """The result on one line of a vipclient file; None for the header or a partial line."""
    try:
        d = json.loads(line)
    except json.JSONDecodeError:
        return None
    return Result(**d) if "seq" in d else None


class Tail:
    """Incremental reader of a growing vipclient file (long benchmarks: do not re-read it all)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pos = 0
        self._partial = b""
        self.results: list[Result] = []

    def poll(self) -> list[Result]:
        """Read what was appended since the last poll; returns the new results."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return []
        self._pos += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # incomplete until its newline arrives
        new = [r for line in lines if (r := _result(line)) is not None]
        self.results.extend(new)
        return new

    def since(self, t: float) -> list[Result]:
        """Results completed at or after monotonic time `t` (polls first)."""
        self.poll()
        return [r for r in self.results if r.t1 >= t]


def first_ok(results: Iterable[Result], after: float, host: str | None = None,
             exclude: str | None = None) -> Result | None:
    """The earliest-completed success with t1 >= `after`, optionally from/not from a host."""
    best = None
    for r in results:
        if not r.ok or r.t1 < after or (host is not None and r.host != host) or \
                (exclude is not None and r.host == exclude):
            continue
        if best is None or r.t1 < best.t1:
            best = r
    return best


def longest_gap(results: Iterable[Result], start: float, end: float) -> float:
    """Longest time in [start, end] without a successful completion (the client's outage)."""
    times = sorted(r.t1 for r in results if r.ok and start <= r.t1 <= end)
    edges = [start, *times, end]
    return max(b - a for a, b in zip(edges, edges[1:], strict=False))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vipclient", description=__doc__.splitlines()[0])
    ap.add_argument("--addr", required=True, help="the VIP (or any address) to request")
    ap.add_argument("--port", type=int, default=ports.LAB_WEB)
    ap.add_argument("--interval-ms", type=float, default=10.0)
    ap.add_argument("--timeout-ms", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=600.0, help="stop after this many seconds")
    ap.add_argument("--count", type=int, help="stop after this many requests")
    ap.add_argument("--out", help="JSON lines output file (default stdout)")
    ap.add_argument("--once", action="store_true", help="one blocking request; exit 0 if served")
    args = ap.parse_args(argv)
    if args.once:
        r = probe(args.addr, args.port, args.timeout_ms / 1000)
        print(r.to_json(), flush=True)
        return 0 if r.ok else 1
    if args.interval_ms <= 0 or args.timeout_ms <= 0:
        ap.error("--interval-ms and --timeout-ms must be positive")
    signal.signal(signal.SIGTERM, lambda *_: setattr(_Stop, "flag", True))
    out = open(args.out, "a", buffering=1) if args.out else sys.stdout  # noqa: SIM115
    try:
        out.write(json.dumps({"ev": "start", "addr": args.addr, "port": args.port,
                              "interval_ms": args.interval_ms, "timeout_ms": args.timeout_ms,
                              "mono": time.monotonic(), "wall": time.time()}) + "\n")
        out.flush()
        n_ok, n_fail = run(args.addr, args.port, args.interval_ms / 1000, args.timeout_ms / 1000,
                           out, args.duration, args.count)
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"vipclient: {n_ok} ok, {n_fail} failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
