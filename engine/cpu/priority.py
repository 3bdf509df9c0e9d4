"""On a CPU box, let the API, Redis and the job threads cut in ahead of torch's OpenMP workers.

The engine's generation thread owns an OpenMP pool whose workers spin between parallel regions, so
the engine keeps every core busy. Everything else on the box (the web process answering a submit,
Redis, the worker's Celery and job threads) then waits for a time slice at each wake-up, and a job
thread that holds the GIL while it waits also stalls the engine. After the engine's first step has
created the pool, its native threads (threads Python did not start: OpenMP and other library pools)
get a higher nice value: idle cores still go to them, but a woken service thread runs at once. The
generation thread itself keeps its priority: it holds the GIL, and lowering it would stall the
worker's other threads behind it.

Measured with bench/pipeline.py (demo model, 64 jobs, 16 clients, 2 cores), two interleaved runs
each way: throughput ratio 0.94 and 0.98 against 0.90 and 0.82, p50 overhead 121 and 137 ms against
190 and 199 ms (a later run with it: 0.86, 129 ms; runs vary by about 5%). GPTOSS_CPU_NICE sets the
value (default 10; 0 leaves priorities alone). In the engine child the whole process runs at that
value (engine/process.py), so a woken service thread gets in ahead of its spinning pool; a busy
neighbour is left to engine/cpu/threads.py CoreShare, which takes threads out of the pool.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_NICE = 10


def nice_from_env() -> int:
    value = os.environ.get("GPTOSS_CPU_NICE", str(DEFAULT_NICE))
    try:
        nice = int(value)
    except ValueError:
        raise ValueError(f"GPTOSS_CPU_NICE must be an integer from 0 to 19, not {value!r}") from None
    if not 0 <= nice <= 19:
        raise ValueError(f"GPTOSS_CPU_NICE must be an integer from 0 to 19, not {value!r}")
    return nice


def native_thread_ids() -> list[int]:
    """This process's threads that Python did not start (Linux; empty elsewhere)."""
    try:
        all_ids = {int(name) for name in os.listdir("/proc/self/task")}
    except OSError:
        return []
    python_ids = {thread.native_id for thread in threading.enumerate()}
    return sorted(all_ids - python_ids)


def lower_native_threads(nice: int) -> list[int]:
    """Raise the nice value of the native threads to `nice` (never lower it); the ids changed."""
    changed = []
    for thread_id in native_thread_ids():
        try:
            if os.getpriority(os.PRIO_PROCESS, thread_id) < nice:
                os.setpriority(os.PRIO_PROCESS, thread_id, nice)
                changed.append(thread_id)
        except OSError:  # the thread ended meanwhile
            continue
    return changed


def lower_pool_after_first_step(manager: Any, nice: int) -> None:
    """Wrap the batch manager's generation step once: after the first step, lower the pool's threads."""
    if nice <= 0:
        return
    step = manager._generation_step

    def first_step_then_lower() -> None:
        step()
        manager._generation_step = step  # back to the step as it was (the class's, or another wrapper)
        changed = lower_native_threads(nice)
        log.info("engine: %d native thread(s) now run at nice %d", len(changed), nice)

    manager._generation_step = first_step_then_lower
