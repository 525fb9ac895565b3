"""A trivial TCP service for the test bed: answers every connection with its node name.

Run inside a host namespace (``ip netns exec NS python -m failover.lab.vipserver --name h1``).  It
binds 0.0.0.0 (``--bind ::``: every IPv4 and IPv6 address), so whichever host currently holds
the VIP answers for it, and the reply tells the client (failover.vipclient) which host that was.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time

from failover import ports


def serve(name: str, port: int, duration: float, bind: str = "0.0.0.0") -> int:
    """Answer connections with ``name + "\\n"`` until `duration` seconds have passed."""
    reply = (name + "\n").encode()
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
        ls.bind((bind, port))
        ls.listen(512)
        # A short accept timeout so the deadline is checked even when nobody connects.
        ls.settimeout(0.5)
        print(f"vipserver {name} listening on {bind}:{port}", flush=True)
        served = 0
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            try:
                conn, _ = ls.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    conn.settimeout(0.5)
                    conn.sendall(reply)
                    served += 1
                except OSError:
                    pass  # the client gave up first; nothing to do
        return served


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vipserver", description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="node name sent in every reply")
    ap.add_argument("--port", type=int, default=ports.LAB_WEB)
    ap.add_argument("--bind", default="0.0.0.0", help="address to listen on; :: for IPv4 and IPv6")
    ap.add_argument("--duration", type=float, default=3600.0, help="exit after this many seconds")
    args = ap.parse_args(argv)
    # SIGTERM exits through SystemExit so the listening socket is closed cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.name, args.port, args.duration, args.bind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
