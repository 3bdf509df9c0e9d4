"""The engine child's OpenMP thread count and wait policy (engine/cpu/threads.py openmp_env)."""

from __future__ import annotations

import os

import pytest

from engine.cpu.threads import openmp_env, usable_cores


@pytest.mark.parametrize("cores", [1, 2, 16])
def test_by_default_one_thread_per_usable_core_and_idle_threads_sleep(cores: int) -> None:
    assert openmp_env(cores, {}) == {"OMP_NUM_THREADS": str(cores), "OMP_WAIT_POLICY": "PASSIVE"}


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
