"""Ports for the processes a test starts, each given out once per test run.

A process binds its port seconds after the test chose it; until then the kernel hands the same free
port to the next caller (two stacks: one's Flower took the other's worker metrics port).
"""

from __future__ import annotations

import socket

from app.ops.private_redis import free_port

_HANDED_OUT: set[int] = set()  # ports given out in this test run, bound or not yet


def fresh_port(width: int = 1) -> int:
    """A free port (and the `width - 1` after it) that this test run gave no one else."""
    while True:
        port = free_port()
        wanted = range(port, port + width)
        if any(each in _HANDED_OUT for each in wanted):
            continue
        try:
            for each in wanted[1:]:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", each))
        except OSError:
            continue
        _HANDED_OUT.update(wanted)
        return port
