"""failsh's settings, as the command line gives them (cli/failsh.py builds them)."""

from __future__ import annotations

from pathlib import Path

import attrs

from failover import keys, ports, protocol
from failover.shell.policy import DEAD_FACTOR


@attrs.define
class Options:
    node: str
    policy: Path | None = None
    faild: str = f"tcp://127.0.0.1:{ports.FAILD}"
    faild_community: str = protocol.DEFAULT_COMMUNITY
    addresses: dict[str, str] = attrs.Factory(dict)   # -P NAME=ADDR[:PORT]
    monitor: str | None = None
    control: str | None = None
    control_community: str = protocol.DEFAULT_COMMUNITY
    dumpfile: Path = Path("/run/failover/failsh.dump")
    dead_factor: float = DEAD_FACTOR
    scheduling: bool = True
    http: str | None = None   # --http ADDR:PORT: live web page and /metrics (dashboard.py)
    curve: keys.Identity | None = None  # --curve-secret: this failsh's key pair for every faild
    curve_keys: Path | None = None      # --curve-keys DIR: DIR/NAME.key is host NAME's faild key
    load_timeout: float = 10.0          # --load-timeout: a policy (re)load longer than this is refused
    heartbeat_key: bytes | None = attrs.field(default=None, repr=False)  # --heartbeat-key: the cluster's key
    heartbeat_port: int = ports.HEARTBEAT  # --heartbeat-port: UDP; 0: no heartbeats
