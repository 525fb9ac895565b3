"""The default ports, one table (docs/architecture.md, "Processes and ports")."""

FAILD = 1847           # faild: ZeroMQ REP, the faild protocol (faild -p, failhost NAME port)
FAILSH_FEED = 1848     # failsh's feed: snapshots for failmon, change hints for peers (failsh -m); 0.5's failmon port
FAILSH_CONTROL = 1849  # failsh's control port on 127.0.0.1: the faild protocol for faildebug (failsh -D)
HC_MONITOR = 1850      # hc -m: the check states over the faild protocol
HEARTBEAT = 1851       # failsh's heartbeats, UDP: signed datagrams between peers (failsh --heartbeat-port)
LAB_WEB = 18080        # the lab's web server on a virtual address (failover/lab/vipserver.py)
