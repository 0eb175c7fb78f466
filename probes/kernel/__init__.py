"""Kernel probes: syscalls, the scheduler, process lifecycle."""
