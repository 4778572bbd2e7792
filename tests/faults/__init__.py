"""Fault-injection suite (issue 7): real servers killed and restarted under a known workload."""
