"""Keep torch's CPU work on as few long-lived threads as possible, and let them sleep when they wait.

torch's CPU build parallelises with GNU OpenMP, which gives every thread that runs a parallel
region its own pool of worker threads, kept until that thread exits. Once the live pools hold more
threads than there are cores, libgomp stops spinning between regions and every small op of a
decode step pays a futex wake-up: measured here (2 cores), a decode step of the demo model took
59 ms on the engine's thread when the main thread had run torch before, and 34 ms when it had not.

So heavy one-off work (loading, converting, calibrating a model; a benchmark's plain `generate`)
runs on a short-lived thread, whose pool goes away with it, and the engine's generation thread is
left as the only long-lived owner of a pool.

`openmp_env` decides, once, how the engine child's pool runs (see its docstring): libgomp reads
its variables when it loads, and the child loads torch on its first import, so the worker puts them in
the child's environment (engine/process.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def in_short_lived_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `function` on a new thread and wait for it; its OpenMP pool dies with the thread."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:  # re-raised on the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"torch-{getattr(function, '__name__', 'work')}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


OPENMP_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def openmp_env(cores: int, env: Mapping[str, str]) -> dict[str, str]:
    """The OpenMP variables the engine child starts with, from the cores it may use and `env`.

    Threads: one per core the process may run on (its CPU affinity), which is what torch picks by
    itself, so the child computes exactly as torch does in any other process here (on CPU a matmul's
    result can depend on the thread count). Decided once, before torch loads, never changed later.

    Wait policy: PASSIVE. By default libgomp's idle threads spin for a while (GOMP_SPINCOUNT,
    300,000 turns) at the end of every parallel region before they sleep. While the engine has the
    cores to itself that saves a wake-up per region, but beside one busy process (another engine, a
    build, a test run) a spinning thread takes the time slice its team mate needs to finish the
    region, at each of the hundreds of regions of a decode step: the demo model's engine ran 19x
    slower beside one busy process on 2 cores (docs/engine-bench.md, scenario (e)). PASSIVE threads
    sleep at once, so the engine keeps the share of the cores it still gets. Its price on a quiet
    machine: about a third of a 4-job batch's throughput (docs/engine-bench.md, measured against the
    spin on a quiet machine); a worker box always has neighbours (the API, the worker, Redis), so the
    default is PASSIVE, and OMP_WAIT_POLICY=ACTIVE or a GOMP_SPINCOUNT brings the spin back.

    What the operator set is kept as given; a GOMP_SPINCOUNT alone keeps libgomp's own policy,
    which that count then tunes.
    """
    chosen = {"OMP_NUM_THREADS": str(max(1, cores))}
    if not env.get("GOMP_SPINCOUNT"):
        chosen["OMP_WAIT_POLICY"] = "PASSIVE"
    return chosen | {name: env[name] for name in OPENMP_VARIABLES if env.get(name)}


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; all of them where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1
