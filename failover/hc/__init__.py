"""hc, the health checker: service-level checks that feed faild (docs/hc.md).

* :mod:`failover.hc.hcfile`  the Hcfile grammar and its parser (errors carry file:line);
* :mod:`failover.hc.checks`  one function per check kind, each bounded by a timeout;
* :mod:`failover.hc.runner`  scheduling on a bounded thread pool, flap damping,
  dependencies, faild updates and actions;
* :mod:`failover.hc.monitor` the results over faild's wire protocol, ``healthy()``.
"""
