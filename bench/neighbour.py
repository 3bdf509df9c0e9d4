"""A busy neighbour for benchmarks: one CPU-bound process beside the engine, always stopped after.

`busy_neighbour()` starts `python -c <loop>` (one core's worth of pure Python arithmetic, at the
benchmark's own nice value) and kills it when the block ends, however it ends (an exception, Ctrl-C).
Should the benchmark itself be killed outright, the loop sees its parent change and exits on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Checks its parent every ~100k iterations (a few ms): the loop stays CPU-bound and never outlives us.
BUSY_LOOP = """
import os
parent = int({parent})
n = 0
while True:
    n += 1
    if n % 100_000 == 0 and os.getppid() != parent:
        break
"""


@contextmanager
def busy_neighbour() -> Iterator[subprocess.Popen[bytes]]:
    """One busy process for the duration of the block."""
    process = subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(parent=os.getpid())])
    try:
        yield process
    finally:
        process.kill()
        process.wait()
