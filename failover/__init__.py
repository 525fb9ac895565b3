"""failover: a Python re-creation of the failover 0.5 high-availability suite."""

__version__ = "0.6.0"
