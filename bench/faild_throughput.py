#!/usr/bin/env python3
"""faild throughput and latency against a bare pyzmq REQ/REP echo server.

Run with the project's virtualenv:  .venv/bin/python bench/faild_throughput.py

Starts a real faild subprocess (temporary state file, one service 'web' set to UP) and a
bare REP echo server subprocess that answers every request with a fixed reply of the same
size as faild's 'get' reply.  Then, for 1 and 4 concurrent client processes, each client
sends ``--requests`` 'get web' requests (after ``--warmup``) on one REQ socket, one at a
time, and times each round trip.  Both servers get the identical request frame, so the
client side costs the same; the difference is faild's request path (decode, access check,
lookup, encode) and its poll loop.

Printed per server and client count: aggregate requests/s (all requests / wall time from
the first client's start to the last client's end), p50 and p99 round-trip latency, and
the server process's CPU time per request (user + system, from /proc); then the
faild/echo throughput ratio (goal >= 0.7).  Each configuration is run ``--rounds``
times, interleaved, and the round with the median faild/echo ratio is reported.

On a shared machine the throughput ratio swings with other load; the CPU time per
request is much steadier, and echo/faild CPU per request is printed as a cross-check.

``--curve``: both servers require CURVE (faild with --curve-secret/--curve-allow, the echo
server with the same server key and no ZAP handler) and every client socket uses it;
compare a run with and without the flag for the cost of CURVE (docs/security.md).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from failover import keys, protocol, transport
from failover.client import Client
from failover.lab.loopback import free_port

GOAL = 0.7
CURVE: keys.Curve | None = None  # --curve: set in main(), inherited by the forked clients


def secure(sock: zmq.Socket) -> None:
    """Apply the client side of CURVE to a new socket, with --curve."""
    if CURVE is not None:
        transport.curve_client(sock, CURVE.identity, CURVE.server)


def wait_ready(endpoint: str, proc: subprocess.Popen, deadline_s: float = 10.0) -> None:
    """Ping until the server answers; fail if the process dies or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before answering")
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.REQ)
        s.linger = 0
        secure(s)
        s.connect(endpoint)
        try:
            s.send(protocol.encode({"v": 1, "id": 0, "op": "ping"}))
            if s.poll(200, zmq.POLLIN):
                s.recv()
                return
        finally:
            s.close(linger=0)
    raise SystemExit(f"{endpoint} did not answer within {deadline_s} s")


def echo_server(port: int, size: int, curve_secret: str | None = None) -> None:
    """The baseline: a bare REP loop, blocking recv, fixed reply."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    if curve_secret:
        transport.curve_server(sock, keys.load_identity(Path(curve_secret)))
    sock.bind(f"tcp://127.0.0.1:{port}")
    reply = b"x" * size
    while True:
        sock.recv()
        sock.send(reply)


def client(endpoint: str, frame: bytes, n: int, warmup: int, barrier, results) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.rcvtimeo = 5000
    secure(sock)
    sock.connect(endpoint)
    try:
        for _ in range(warmup):
            sock.send(frame)
            sock.recv()
        lat = [0.0] * n
        barrier.wait(timeout=30)
        clock = time.perf_counter  # CLOCK_MONOTONIC: comparable across processes
        t0 = clock()
        for i in range(n):
            t = clock()
            sock.send(frame)
            sock.recv()
            lat[i] = clock() - t
        t1 = clock()
        results.put((t0, t1, lat))
    except Exception as exc:  # reported to the parent, which fails the run
        results.put(exc)
    finally:
        sock.close(linger=0)
        ctx.term()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(endpoint: str, frame: bytes, clients: int, n: int, warmup: int, server_pid: int) -> dict:
    mpctx = mp.get_context("fork")
    barrier = mpctx.Barrier(clients + 1)  # and this process
    results = mpctx.Queue()
    procs = [mpctx.Process(target=client, args=(endpoint, frame, n, warmup, barrier, results))
             for _ in range(clients)]
    for p in procs:
        p.start()
    barrier.wait(timeout=60)  # all clients are past warm-up: the timed part starts
    cpu0 = cpu_seconds(server_pid)
    got = [results.get(timeout=120) for _ in procs]
    cpu1 = cpu_seconds(server_pid)
    for p in procs:
        p.join(timeout=10)
    errors = [g for g in got if isinstance(g, Exception)]
    if errors:
        raise SystemExit(f"client failed: {errors[0]!r}")
    start = min(g[0] for g in got)
    end = max(g[1] for g in got)
    lat = sorted(x for g in got for x in g[2])
    return {"clients": clients, "requests": len(lat), "rps": len(lat) / (end - start),
            "p50": lat[len(lat) // 2] * 1e6, "p99": lat[int(len(lat) * 0.99)] * 1e6,
            "cpu": (cpu1 - cpu0) / len(lat) * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000, help="timed requests per client")
    ap.add_argument("--warmup", type=int, default=500, help="untimed requests per client first")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--curve", action="store_true", help="both servers and all clients use CURVE")
    ap.add_argument("--echo-server", nargs=2, type=int, metavar=("PORT", "SIZE"), help=argparse.SUPPRESS)
    ap.add_argument("--echo-curve", metavar="SECRET", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo_server:
        echo_server(*args.echo_server, args.echo_curve)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="faild-bench-"))
    fport, eport = free_port(), free_port()
    fendpoint, eendpoint = f"tcp://127.0.0.1:{fport}", f"tcp://127.0.0.1:{eport}"
    server_curve: list[str] = []
    if args.curve:
        global CURVE
        keys.generate(tmp / "keys", "bench")
        keys.generate(tmp / "keys", "client")
        CURVE = keys.load_curve(tmp / "keys" / "client.key_secret", tmp / "keys" / "bench.key")
        server_curve = ["--curve-secret", str(tmp / "keys" / "bench.key_secret"), "--curve-allow", str(tmp / "keys")]
    faild = subprocess.Popen(
        [sys.executable, "-m", "failover.cli.faild", "-F", "-l", "127.0.0.1", "-p", str(fport),
         "-s", str(tmp / "faild.state"), "-r", str(tmp / "faild.pid"), "-N", "bench", *server_curve],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "faild.log", "w"))  # noqa: SIM115
    echo = None
    try:
        wait_ready(fendpoint, faild)
        with Client(fendpoint, curve=CURVE) as c:
            c.set("web", "UP", "benchmark")
        frame = protocol.encode(protocol.Request(op="get", id=f"{os.getpid()}-1", service="web").to_wire())
        with zmq.Context.instance().socket(zmq.REQ) as s:
            s.linger = 0
            secure(s)
            s.connect(fendpoint)
            s.send(frame)
            assert s.poll(2000), "faild did not answer the sample 'get'"
            sample = s.recv()
        reply = protocol.decode_reply(sample)
        assert reply["ok"] and reply["services"][0]["state"] == "UP", reply
        echo = subprocess.Popen([sys.executable, __file__, "--echo-server", str(eport), str(len(sample)),
                                 *(["--echo-curve", server_curve[1]] if args.curve else [])])
        wait_ready(eendpoint, echo)

        print(f"request {len(frame)} B, reply {len(sample)} B; {args.requests} requests per client "
              f"after {args.warmup} warm-up; {args.rounds} rounds; {os.cpu_count()} CPUs"
              f"{'; CURVE' if args.curve else ''}")
        rows = []
        for clients in args.clients:
            rounds = []
            for _ in range(args.rounds):
                f = measure(fendpoint, frame, clients, args.requests, args.warmup, faild.pid)
                e = measure(eendpoint, frame, clients, args.requests, args.warmup, echo.pid)
                rounds.append((f["rps"] / e["rps"], f, e))
            rounds.sort(key=lambda r: r[0])
            ratio, f, e = rounds[len(rounds) // 2]
            rows.append((clients, f, e, ratio, [r[0] for r in rounds]))

        print(f"\n{'server':<7}{'clients':>8}{'requests':>10}{'req/s':>10}{'p50 µs':>9}{'p99 µs':>9}"
              f"{'srv CPU µs/req':>16}")
        for _clients, f, e, _ratio, _all in rows:
            for name, r in (("faild", f), ("echo", e)):
                print(f"{name:<7}{r['clients']:>8}{r['requests']:>10}{r['rps']:>10.0f}"
                      f"{r['p50']:>9.0f}{r['p99']:>9.0f}{r['cpu']:>16.1f}")
        print()
        worst = min(r[3] for r in rows)
        for clients, f, e, ratio, every in rows:
            rounds_text = ", ".join(f"{x:.2f}" for x in every)
            cpu_ratio = e["cpu"] / max(f["cpu"], 1e-9)
            print(f"faild/echo throughput, {clients} client(s): {ratio:.2f}  (rounds: {rounds_text});"
                  f"  echo/faild server CPU per request: {cpu_ratio:.2f}")
        print(f"goal >= {GOAL}: {'met' if worst >= GOAL else 'NOT met'}")
        return 0 if worst >= GOAL else 1
    finally:
        for proc in (faild, echo):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    sys.exit(main())
