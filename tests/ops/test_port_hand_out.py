"""The tests' port hand-out: a port chosen but not yet bound is free to the kernel, which hands it out
again; the hand-out never gives one twice in a run (two stacks once shared a port that way)."""

from __future__ import annotations

import socket

import pytest

from tests.support import ports


def test_a_port_the_kernel_hands_out_again_is_not_given_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    first = ports.fresh_port()
    other = ports.free_port()
    while other == first or other in ports._HANDED_OUT:
        other = ports.free_port()
    offered = iter([first, first, other])  # the kernel offers the unbound port again, twice
    monkeypatch.setattr(ports, "free_port", lambda: next(offered))
    assert ports.fresh_port() == other


def test_a_range_is_given_whole_and_free() -> None:
    start = ports.fresh_port(width=2)
    for port in (start, start + 1):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # free now
        assert port in ports._HANDED_OUT
    assert ports.fresh_port() not in (start, start + 1)
