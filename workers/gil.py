"""A worker process's GIL switch interval: 0.5 ms beside an engine in the process, Python's 5 ms
beside an engine in a child process (GPTOSS_WORKER_GIL_SWITCH_MS sets it either way;
app/settings.py `default_gil_switch_ms`).

An engine in the worker's own process (GPTOSS_ENGINE_PROCESS=0) runs its generation thread there,
which holds the GIL for the Python work between torch ops, next to Celery's consumer and the job
threads, which wake for a moment at a time (a message, a claim, a DB write). Python hands the GIL to a
waiting thread only after the switch interval, and every Redis or DB call gives it up and waits again:
the job's bookkeeping took 5-10x its own time. `bench/pipeline.py --clients 1`, p50 overhead per job
over interleaved runs: at 0.5 ms 21.8, 19.6, 24.8, 21.5, 23.4 ms (median 21.8); at 5 ms 25.3, 24.1,
25.0, 22.4 ms (median 24.6).

With the engine in its child (the default), no thread of the worker holds the GIL for long, and a
short interval only makes its hundreds of job threads hand the GIL round more often: a batch's lines
(`bench/batches.py --skip-ingest --batch-only --model paced:1000 --max-tokens 1 --max-batch 256
--requests 20000`, alternating) ran at 489, 450, 523 lines/s at 0.5 ms against 542, 576, 593 at 5 ms;
the single-job figures of `bench/pipeline.py --model paced:200` did not move (docs/engine-bench.md).
"""

from __future__ import annotations

import sys


def set_gil_switch_interval(milliseconds: float) -> None:
    """Set this process's GIL switch interval (GPTOSS_WORKER_GIL_SWITCH_MS)."""
    if not 0 < milliseconds <= 100:
        raise ValueError(f"GPTOSS_WORKER_GIL_SWITCH_MS must be in (0, 100] ms, not {milliseconds!r}")
    sys.setswitchinterval(milliseconds / 1000)
