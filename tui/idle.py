"""Idle waits: time a thread spends waiting for work on purpose, which the Events and Syscalls screens hide by
default (`i` shows them) and the Overview always leaves out.

The rule, the one the diagnosis uses (it never blames these): a slow syscall is idle when it is a waiting call
(probes/kernel/syscall_table.WAIT_SYSCALLS: epoll_wait, poll, select, futex, nanosleep, clock_nanosleep, accept,
recvfrom, io_getevents, ...); an off-CPU stretch is idle when the thread slept interruptibly (state S: woken by an
event it chose to wait for). Reads and writes are never idle: the probe does not know what a descriptor is, so a
read on an eventfd or a pipe shows. D-state, stopped and frozen threads always show.
"""
from __future__ import annotations

from typing import Any

from gpusleuth.probes.kernel.syscall_table import WAIT_SYSCALLS

IDLE_STATES = frozenset({"S"})
HELP = ("idle waits (hidden until i): slow waiting syscalls (" + ", ".join(sorted(WAIT_SYSCALLS)) + ") and "
        "off-CPU sleeps in state S; read/write always show (the fd's type is not known), as do D, T and frozen")


def is_idle_row(row: dict[str, Any]) -> bool:
    """A syscall latency row of a waiting call (epoll_wait, futex, nanosleep ...)."""
    return row.get("syscall") in WAIT_SYSCALLS


def is_idle_event(e: dict[str, Any]) -> bool:
    """A host event that is a wait for work: a slow waiting syscall, or an interruptible sleep off the CPU."""
    kind, attrs = e.get("kind"), e.get("attrs") or {}
    if kind == "slow_syscall":
        return attrs.get("syscall") in WAIT_SYSCALLS
    if kind == "offcpu":
        return attrs.get("state") in IDLE_STATES
    return False
