"""The policy model that failsvc, failhost and failtrap build from a Tcl script."""

from __future__ import annotations

import attrs

from failover import ports
from failover.protocol import DEFAULT_COMMUNITY

DEFAULT_INTERVAL = 1.0      # seconds between runs of a service (0.5 left it unspecified)
MIN_INTERVAL = 0.02         # the shortest interval (20 ms: bench/failover_time.py's 20ms profile)
DEFAULT_TIMEOUT = 30.0      # seconds a start/stop/reclaim/check procedure may take
DEAD_FACTOR = 2.5           # a peer silent for DEAD_FACTOR intervals counts as FAIL
TRAP_TIMEOUT = 10.0         # seconds a failtrap script may take
FLAP_COUNT = 6              # flap protection by default: more than 6 holder changes ...
FLAP_MINUTES = 5.0          # ... within 5 minutes hold the service where it is
FAILBACK = ("auto", "manual", "delay")
ARBITER_TTL = 10.0          # seconds an etcd lease lasts (failarbiter -ttl)
ARBITER_PREFIX = "/failover/"  # etcd keys: PREFIX + service name


@attrs.define
class ServiceConfig:
    name: str
    interval: float = DEFAULT_INTERVAL
    masters: list[str] = attrs.Factory(list)
    slaves: list[str] = attrs.Factory(list)
    start: str = ""
    stop: str = ""
    reclaim: str = ""
    check: str = ""
    timeout: float = DEFAULT_TIMEOUT
    holddown: float = 0.0           # minimum time UP before handing back (flap protection)
    witnesses: list[str] = attrs.Factory(list)  # third hosts that must be reachable to take over
    quorum: int = 0                 # witnesses needed; 0: a majority of them
    tiebreaker: str = ""            # script that must return true to take over from a silent master
    announce: str = ""              # script run when UP here and another host gave the service up
    failback: str = "auto"          # auto: hand back to a ready master; manual: never; delay: once ready that long
    failback_delay: float = 0.0     # failback delay: seconds a master must have been ready
    flap_count: int = FLAP_COUNT    # more holder changes than this within flap_minutes: held; 0: off
    flap_minutes: float = FLAP_MINUTES
    arbiter: str = ""               # "etcd": may be UP only while holding its key there (docs/arbiter.md)
    where: dict[str, str] = attrs.Factory(dict)  # subcommand -> FILE:LINE of the failsvc that set it
    named: dict[str, list[str]] = attrs.Factory(dict)  # masters/slaves as the file gave them, this node included

    def peers(self) -> list[str]:
        """The hosts the decision rule looks at."""
        return self.masters + self.slaves

    def polled(self) -> list[str]:
        """Every host whose faild failsh polls for this service."""
        return self.masters + self.slaves + [w for w in self.witnesses if w not in self.peers()]

    def needed_witnesses(self) -> int:
        return self.quorum or len(self.witnesses) // 2 + 1

    def listed(self) -> set[str]:
        """Every host its masters and slaves lists name, this node included."""
        return {h for names in self.named.values() for h in names}

    def failback_text(self) -> str:
        return f"delay {self.failback_delay:g}" if self.failback == "delay" else self.failback

    def flap_text(self) -> str:
        return f"{self.flap_count} {self.flap_minutes:g}" if self.flap_count else "off"


@attrs.define
class HostConfig:
    name: str
    port: int = ports.FAILD
    protocol: str = "tcp"
    address: str | None = None
    community: str = DEFAULT_COMMUNITY
    deadtime: float | None = None   # default: DEAD_FACTOR x the shortest interval polling it
    monitor: int = ports.FAILSH_FEED     # its failsh's feed, for change hints; 0: none
    where: dict[str, str] = attrs.Factory(dict)  # subcommand -> FILE:LINE of the failhost that set it


@attrs.frozen
class ArbiterConfig:
    """``failarbiter etcd ENDPOINT ...``: the etcd v3 cluster that decides who may hold an
    arbitrated service (docs/arbiter.md)."""

    kind: str
    endpoints: tuple[str, ...]
    prefix: str = ARBITER_PREFIX
    ttl: float = ARBITER_TTL
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    failsafe: bool = True  # etcd down for every host: the holder keeps the service (docs/arbiter.md)


@attrs.frozen
class Trap:
    kind: str       # "state" (local transitions), "peer" (host up/down), "remote" (peer's state)
    pattern: str    # service or host name, or "*"
    script: str
    where: str = attrs.field(default="", eq=False)  # FILE:LINE of the failtrap (failsh --check)

    def matches(self, kind: str, name: str) -> bool:
        return self.kind == kind and self.pattern in ("*", name)


@attrs.define
class Policy:
    node: str
    services: dict[str, ServiceConfig] = attrs.Factory(dict)
    hosts: dict[str, HostConfig] = attrs.Factory(dict)
    traps: list[Trap] = attrs.Factory(list)
    arbiter: ArbiterConfig | None = None

    def service(self, name: str) -> ServiceConfig:
        return self.services.setdefault(name, ServiceConfig(name))

    def host(self, name: str) -> HostConfig:
        return self.hosts.setdefault(name, HostConfig(name))

    def set_hosts(self, svc: ServiceConfig, which: str, names: list[str]) -> None:
        """Set masters or slaves; the local node is left out so one file serves all hosts."""
        if which in ("masters", "slaves"):
            svc.named[which] = list(names)
        kept = [n for n in dict.fromkeys(names) if n != self.node]
        setattr(svc, which, kept)
        for n in kept:
            self.host(n)

    def named(self) -> set[str]:
        """Every host named in a masters or slaves list, this node included."""
        return {h for svc in self.services.values() for h in svc.listed()}

    def interval_for(self, host: str) -> float:
        intervals = [s.interval for s in self.services.values() if host in s.polled()]
        return min(intervals, default=DEFAULT_INTERVAL)

    def services_of(self, host: str) -> list[str]:
        return [s.name for s in self.services.values() if host in s.polled()]
