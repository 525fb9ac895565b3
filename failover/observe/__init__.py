"""Observation: the monitor feed, the live web page and the Prometheus metrics."""
