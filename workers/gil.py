"""A shorter GIL switch interval for worker processes.

A worker runs the engine's generation thread, which holds the GIL for the Python work between
torch ops, next to Celery's consumer and the job threads, which wake for a moment at a time
(a message, a claim, a DB write). Python hands the GIL to a waiting thread only after the switch
interval (5 ms by default), and every Redis or DB call gives it up and waits again: the job's
bookkeeping took 5-10x its own time. `bench/pipeline.py --clients 1`, p50 overhead per job over
interleaved runs: at 0.5 ms 21.8, 19.6, 24.8, 21.5, 23.4 ms (median 21.8); at 5 ms 25.3, 24.1, 25.0,
22.4 ms (median 24.6). A small gain, within this box's noise run to run; engine throughput did not
change measurably (ratios 0.82-0.92 against 0.80-0.94).
"""

from __future__ import annotations

import sys


def set_gil_switch_interval(milliseconds: float) -> None:
    """Set this process's GIL switch interval (GPTOSS_WORKER_GIL_SWITCH_MS)."""
    if not 0 < milliseconds <= 100:
        raise ValueError(f"GPTOSS_WORKER_GIL_SWITCH_MS must be in (0, 100] ms, not {milliseconds!r}")
    sys.setswitchinterval(milliseconds / 1000)
