"""The tests' port hand-out: a port chosen but not yet bound is free to the kernel, which hands it out
again; the hand-out never gives one twice in a run (two stacks once shared a port that way), also
across the run's xdist workers, which are separate processes."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.support import ports
from tests.support.paths import REPO_ROOT


def test_a_port_the_kernel_hands_out_again_is_not_given_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    first = ports.fresh_port()
    other = ports.free_port()
    while other == first or other in ports.handed_out():
        other = ports.free_port()
    offered = iter([first, first, other])  # the kernel offers the unbound port again, twice
    monkeypatch.setattr(ports, "free_port", lambda: next(offered))
    assert ports.fresh_port() == other


def test_a_range_is_given_whole_and_free() -> None:
    start = ports.fresh_port(width=2)
    for port in (start, start + 1):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # free now
        assert port in ports.handed_out()
    assert ports.fresh_port() not in (start, start + 1)


HAND_OUT = """
import sys
from tests.support import ports
for _ in range(int(sys.argv[1])):
    print(ports.fresh_port(width=2))
"""


def test_processes_of_one_run_never_get_the_same_port() -> None:
    """Processes that share the run's token (as xdist workers do) hand out from one ledger; each holds
    none of its ports bound, so only the ledger keeps them apart."""
    count = 150
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", HAND_OUT, str(count)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    given = [int(line) for run in runs for line in run.communicate(timeout=60)[0].split()]
    assert all(run.returncode == 0 for run in runs)
    assert len(given) == 3 * count
    spans = [port + offset for port in given for offset in (0, 1)]
    assert len(set(spans)) == len(spans)
    assert set(spans) <= ports.handed_out()
