"""Ports for the processes a test starts, each given out once per test run, across its xdist workers.

A process binds its port seconds after the test chose it; until then the kernel hands the same free
port to the next caller (two stacks: one's Flower took the other's worker metrics port). The workers
of one run (`make test` runs several) share a ledger file, locked while it is read and extended, so
one worker's chosen but unbound port is not another's.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from pathlib import Path

from app.ops.private_redis import free_port
from tests.support.leftovers import VARIABLE


def ledger_path() -> Path:
    """The run's ledger: its workers inherit the run's token (tests/support/leftovers.py) and share it."""
    return Path(tempfile.gettempdir()) / f"gptoss-test-ports-{os.environ.get(VARIABLE, os.getpid())}"


def handed_out() -> set[int]:
    """The ports this run (any of its workers) has given out so far."""
    try:
        return _ports_in(ledger_path().read_text())
    except FileNotFoundError:
        return set()


def _ports_in(ledger: str) -> set[int]:
    return {int(each) for each in ledger.split()}  # one port a line


def fresh_port(width: int = 1) -> int:
    """A free port (and the `width - 1` after it) that this test run gave no one else."""
    with open(ledger_path(), "a+") as ledger:
        fcntl.flock(ledger, fcntl.LOCK_EX)  # released when the file closes
        ledger.seek(0)
        taken = _ports_in(ledger.read())
        while True:
            port = free_port()
            wanted = range(port, port + width)
            if any(each in taken for each in wanted):
                continue
            try:
                for each in wanted[1:]:
                    with socket.socket() as probe:
                        probe.bind(("127.0.0.1", each))
            except OSError:
                continue
            ledger.write("".join(f"{each}\n" for each in wanted))
            return port


def pytest_unconfigure(config: object) -> None:
    """The run's end (in its controller, after its workers): the ledger goes."""
    if getattr(config, "workerinput", None) is None:
        ledger_path().unlink(missing_ok=True)
