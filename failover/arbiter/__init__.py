"""Arbiters: an outside consensus store that decides who *may* hold a service (etcd)."""
