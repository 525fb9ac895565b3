"""hc, the health checker: service-level checks that feed faild (docs/hc.md).

* :mod:`failover.hc.hcfile`  the Hcfile grammar and its parser (errors carry file:line);
* :mod:`failover.hc.kinds`   the check kinds: one attrs class per kind, registered by
  name, that parses its Hcfile line and runs itself;
* :mod:`failover.hc.checks`  the probes the kinds run, each bounded by a timeout;
* :mod:`failover.hc.runner`  scheduling on a bounded thread pool, flap damping,
  dependencies, faild updates and actions;
* :mod:`failover.hc.monitor` the results over faild's wire protocol, ``healthy()``.
"""
