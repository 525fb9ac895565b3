"""Whom failsh polls, where and how often: endpoints, CURVE keys, dead times, the lease.

Everything here follows from the policy (failhost, the services' intervals and host
lists) and the command line (-P, --dead-factor, --curve-keys); docs/architecture.md,
"Names and addresses".
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from failover import client, keys
from failover.shell.options import Options
from failover.shell.peerlink import PeerSpec
from failover.shell.policy import DEFAULT_INTERVAL, Policy

log = logging.getLogger("failover.scheduler")

LOCAL_POLL = 0.2  # s: the local faild is polled at least this often (failc, hc and failctl changes)
HEARTBEAT_AGE = 5  # with heartbeats, the local faild is polled this many times per dead time


class Hosts:
    def __init__(self, opts: Options, policy: Callable[[], Policy]) -> None:
        self.opts = opts
        self.policy = policy
        self._curves: dict[str, keys.Curve] = {}  # host -> CURVE settings (curve)

    def peer_specs(self) -> list[PeerSpec]:
        """Every host a service of the policy polls (masters, slaves, witnesses)."""
        policy = self.policy()
        specs = []
        for name, host in policy.hosts.items():
            if not policy.services_of(name):
                continue
            interval = policy.interval_for(name)
            endpoint, community = self._endpoint(name)
            try:
                curve = self.curve(name)
            except keys.KeyFileError as exc:  # a host added at the prompt: not polled, so waited on
                log.error("%s is not polled: %s", name, exc)
                continue
            hint = f"{endpoint.rpartition(':')[0]}:{host.monitor}" if host.monitor else None
            specs.append(PeerSpec(name, endpoint, interval,
                                  host.deadtime or self.opts.dead_factor * interval, community, curve, hint))
        return specs

    def local_spec(self) -> PeerSpec:
        """The local faild, polled every LOCAL_POLL seconds (or the policy's shortest interval,
        if shorter), so that a change made there from outside is acted on at once; its dead
        time follows the shortest interval, as the lease does.  With heartbeats, also every
        HEARTBEAT_AGE-th of the shortest dead time a peer gives us: a heartbeat vouches for
        this host only as of the local faild's last answer."""
        interval = self.min_interval()
        period = min(interval, LOCAL_POLL)
        if self.opts.heartbeat_key is not None and self.opts.heartbeat_port:
            period = min(period, self.opts.dead_factor * interval / HEARTBEAT_AGE)
        return PeerSpec(self.opts.node, self.opts.faild, period, self.opts.dead_factor * interval,
                        self.opts.faild_community, self.curve(self.opts.node))

    def _endpoint(self, name: str) -> tuple[str, str]:
        host = self.policy().host(name)
        address = self.opts.addresses.get(name) or host.address or name
        return client.endpoint_for(address, host.port, resolve=False), host.community

    def curve(self, name: str) -> keys.Curve | None:
        """CURVE settings for host ``name``'s faild, None without --curve-secret;
        KeyFileError if DIR/NAME.key cannot be read.  Cached until the next reload."""
        if self.opts.curve is None or self.opts.curve_keys is None:
            return None
        if name not in self._curves:
            self._curves[name] = keys.Curve(self.opts.curve, keys.load_public(self.opts.curve_keys / f"{name}.key"))
        return self._curves[name]

    def key_errors(self) -> list[str]:
        """With CURVE: why the key of the local node or of a polled host cannot be read."""
        policy = self.policy()
        errors = []
        for name in [self.opts.node, *(h for h in policy.hosts if policy.services_of(h))]:
            try:
                self.curve(name)
            except keys.KeyFileError as exc:
                errors.append(str(exc))
        return errors

    def reread_keys(self) -> Callable[[], None]:
        """Forget the cached keys (a reload re-reads them); returns what puts them back."""
        old, self._curves = self._curves, {}

        def restore() -> None:
            self._curves = old
        return restore

    def deadtime(self, name: str) -> float:
        """How long host ``name`` may be silent before it counts as FAIL."""
        policy = self.policy()
        host = policy.hosts.get(name)
        return host.deadtime if host and host.deadtime else self.opts.dead_factor * policy.interval_for(name)

    def min_interval(self) -> float:
        return min((s.interval for s in self.policy().services.values()), default=DEFAULT_INTERVAL)

    def lease_ttl(self) -> float:
        """The lease this failsh holds in its faild: dead factor x the shortest interval."""
        return self.opts.dead_factor * self.min_interval()
