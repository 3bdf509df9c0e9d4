"""The engine's OpenMP pool: the child's thread count and wait policy at start (engine/cpu/threads.py
openmp_env), and the thread count that follows the cores other processes leave free (CoreShare)."""

from __future__ import annotations

import os
import time

import pytest
import torch

from engine.cpu.threads import (
    CoreShare,
    busy_seconds,
    in_short_lived_thread,
    machine_and_own_cpu_seconds,
    openmp_env,
    usable_cores,
    usable_cpu_ids,
)
from engine.engine import CacheSizing, Engine
from engine.types import GenerationRequest, ModelTags


@pytest.mark.parametrize("cores", [1, 2, 16])
def test_by_default_one_thread_per_usable_core_and_libgomps_own_wait_policy(cores: int) -> None:
    assert openmp_env(cores, {}) == {"OMP_NUM_THREADS": str(cores)}


def test_no_usable_core_known_still_gives_one_thread() -> None:
    assert openmp_env(0, {})["OMP_NUM_THREADS"] == "1"


def test_what_the_operator_set_is_kept() -> None:
    env = {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "active", "PATH": "/bin"}
    assert openmp_env(8, env) == {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "active"}


def test_a_spin_count_alone_keeps_libgomps_own_wait_policy() -> None:
    assert openmp_env(2, {"GOMP_SPINCOUNT": "1000"}) == {"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": "1000"}


def test_empty_variables_count_as_unset() -> None:
    assert openmp_env(4, {"OMP_NUM_THREADS": "", "OMP_WAIT_POLICY": ""}) == openmp_env(4, {})


def test_the_default_thread_count_is_torchs_own_so_the_child_computes_as_this_process_does() -> None:
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        pytest.skip("OMP_NUM_THREADS is set here: torch and the child both take it")
    assert int(openmp_env(usable_cores(), {})["OMP_NUM_THREADS"]) == torch.get_num_threads()


class FakeMachine:
    """CPU seconds as /proc/stat and os.times would give them: the machine's busy time and this process's."""

    def __init__(self) -> None:
        self.busy = self.own = 0.0

    def run(self, seconds: float, own_cores: float, other_cores: float) -> None:
        time.sleep(seconds)
        self.own += own_cores * seconds
        self.busy += (own_cores + other_cores) * seconds

    def read(self) -> tuple[float, float]:
        return self.busy, self.own


def watched(machine: FakeMachine, cores: int = 2) -> tuple[CoreShare, list[int]]:
    applied: list[int] = []
    share = CoreShare(cores, interval=60, read_times=machine.read, set_threads=applied.append)
    assert share.observe()  # the first look only sets the baseline
    return share, applied


def test_a_busy_neighbour_takes_a_thread_and_gives_it_back_when_it_stops() -> None:
    machine = FakeMachine()
    share, applied = watched(machine)
    machine.run(0.05, own_cores=2, other_cores=0.1)  # the API and Redis now and then: still 2
    share.observe()
    share.before_step()
    assert (share.threads, applied) == (2, [])
    machine.run(0.05, own_cores=1, other_cores=1)  # a busy process on the other core
    share.observe()
    assert share.threads == 2  # applied by the generation thread, before its next step
    share.before_step()
    assert (share.threads, applied) == (1, [1])
    machine.run(0.05, own_cores=1, other_cores=0)
    share.observe()
    share.before_step()
    assert (share.threads, applied) == (2, [1, 2])


def test_never_fewer_than_one_thread_nor_more_than_the_cores() -> None:
    machine = FakeMachine()
    share, applied = watched(machine, cores=4)
    machine.run(0.05, own_cores=1, other_cores=7)
    share.observe()
    share.before_step()
    assert applied == [1]
    assert share.threads_for(-3.0, 1) == 4


@pytest.mark.parametrize(
    ("others", "current", "expected"), [(0.55, 2, 2), (0.65, 2, 1), (0.45, 1, 1), (0.35, 1, 2)]
)
def test_around_half_a_core_the_count_does_not_flap(others: float, current: int, expected: int) -> None:
    assert CoreShare(2).threads_for(others, current) == expected


def test_with_more_cpus_than_threads_only_what_the_others_leave_short_counts() -> None:
    share = CoreShare(4, cpus=8)  # OMP_NUM_THREADS=4 on an 8-CPU affinity mask
    assert share.threads_for(3.0, 4) == 4  # 5 CPUs left: room for all 4 threads
    assert share.threads_for(6.0, 4) == 2


PROC_STAT = """cpu  700 0 300 9000 10 0 0 5 0 0
cpu0 100 0 50 2000 5 0 0 5 0 0
cpu1 200 0 50 2000 5 0 0 0 0 0
cpu2 400 0 200 5000 0 0 0 0 0 0
intr 12345
"""


def test_busy_time_counts_only_the_cpus_this_process_may_use() -> None:
    hz = os.sysconf("SC_CLK_TCK")
    assert busy_seconds(PROC_STAT, {0, 1}) == pytest.approx(400 / hz)  # user + system of cpu0 and cpu1
    assert busy_seconds(PROC_STAT, None) == pytest.approx(1000 / hz)  # the machine's line
    assert busy_seconds(PROC_STAT, {7}) is None
    assert busy_seconds("intr 1\n", None) is None


def test_where_nothing_can_be_read_the_watcher_stops_and_the_pool_is_left_alone() -> None:
    applied: list[int] = []
    share = CoreShare(2, interval=0.01, read_times=lambda: None, set_threads=applied.append)
    assert not share.observe()
    share.before_step()
    assert applied == []


def test_this_machines_cpu_seconds_grow_and_this_process_is_part_of_them() -> None:
    before = machine_and_own_cpu_seconds(usable_cpu_ids())
    assert before is not None
    end = time.process_time() + 0.2
    while time.process_time() < end:  # burn 0.2 s of CPU
        pass
    after = machine_and_own_cpu_seconds(usable_cpu_ids())
    assert after is not None
    own = after[1] - before[1]
    assert own >= 0.15 and after[0] - before[0] >= own - 0.05  # the machine was busy at least while we were


def test_the_generation_thread_computes_on_the_threads_left_free() -> None:
    """A real engine: once the watcher has seen another process keep a core busy, the engine's own
    generation thread runs its steps with one thread fewer (torch's count is per thread: read there)."""
    from engine.tiny import build_tiny_gptoss

    model, tokenizer = build_tiny_gptoss()
    tags = ModelTags("transformers-cb", "tiny-gptoss", "1m", "cpu", "latency_first")
    engine = Engine(model, tokenizer, tags, is_harmony=True, max_batch=4, sizing=CacheSizing(16, 64, 48))
    try:
        assert engine.core_share is not None
        cores = engine.core_share.cores
        if cores < 2:
            pytest.skip("one usable core: nothing to give up")
        seen: list[int] = []
        step = engine.manager._generation_step

        def recording() -> None:
            step()
            seen.append(torch.get_num_threads())

        engine.manager._generation_step = recording
        engine.core_share.stop()  # the real watcher stops looking; this test decides what it saw
        engine.core_share.wanted = cores - 1
        request = GenerationRequest(
            messages=({"role": "user", "content": "hi"},), max_tokens=3, ignore_eos=True
        )
        engine.submit(request).result(timeout=60)
        assert seen and set(seen) == {cores - 1}
    finally:
        engine.shutdown()
    # torch hands the last count set to threads that start later: the engine gave the full count back
    assert in_short_lived_thread(torch.get_num_threads) == cores
