"""Keep torch's CPU work on as few long-lived threads as possible, and let them sleep when they wait.

torch's CPU build parallelises with GNU OpenMP, which gives every thread that runs a parallel
region its own pool of worker threads, kept until that thread exits. Once the live pools hold more
threads than there are cores, libgomp stops spinning between regions and every small op of a
decode step pays a futex wake-up: measured here (2 cores), a decode step of the demo model took
59 ms on the engine's thread when the main thread had run torch before, and 34 ms when it had not.

So heavy one-off work (loading, converting, calibrating a model; a benchmark's plain `generate`)
runs on a short-lived thread, whose pool goes away with it, and the engine's generation thread is
left as the only long-lived owner of a pool.

`openmp_env` decides, once, how many threads the engine child's pool starts with (see its docstring):
libgomp reads its variables when it loads, and the child loads torch on its first import, so the worker
puts them in the child's environment (engine/process.py). `CoreShare` then keeps the pool to the cores
the rest of the machine leaves the engine, while it generates.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

log = logging.getLogger(__name__)

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
    itself, so the child computes exactly as torch does in any other process here. CoreShare lowers
    the count while other processes keep cores busy.

    Wait policy: libgomp's own. Its idle threads spin for a while (GOMP_SPINCOUNT, 300,000 turns) at
    the end of every parallel region before they sleep, which saves a wake-up at each of the hundreds
    of regions of a decode step: on a quiet machine (2 cores) the demo model's engine ran 4 jobs at
    64 tok/s spinning against 23-29 with OMP_WAIT_POLICY=PASSIVE (docs/engine-bench.md, scenario (e)).
    The spin's danger is a busy neighbour: a spinning thread takes the time slice its team mate needs
    to finish the region, and the engine ran 30-60x slower beside one busy process. CoreShare avoids
    that by giving the pool one thread per core left free, so no team mate waits for a core.

    What the operator set is kept as given (OMP_WAIT_POLICY=PASSIVE: threads sleep at once).
    """
    chosen = {"OMP_NUM_THREADS": str(max(1, cores))}
    return chosen | {name: env[name] for name in OPENMP_VARIABLES if env.get(name)}


HYSTERESIS_CORES = 0.1


class CoreShare:
    """While the engine runs, its pool takes the cores the rest of the machine leaves it.

    A watcher thread looks every `interval` seconds at the busy CPU time of the CPUs this process may
    use (/proc/stat, per CPU of its affinity mask, read once) against this process's own: what other
    processes used, in cores, is taken from the usable cores, rounded (at least 1 thread; a change
    needs 0.1 core beyond the half-way mark). The generation thread applies that count before its
    next step (OpenMP reads a thread count per thread: the one that starts the parallel regions must
    set it). Beside one busy process on 2 cores the engine then computes on 1 thread instead of a
    team of 2 whose spinning member steals its mate's core; once the neighbour stops, it goes back
    to 2. Where /proc/stat cannot be read it does nothing.
    """

    def __init__(
        self,
        cores: int,
        interval: float = 0.1,
        read_times: Callable[[], tuple[float, float] | None] | None = None,
        set_threads: Callable[[int], None] | None = None,
        cpus: int | None = None,
    ) -> None:
        watched = usable_cpu_ids()
        self.cores = max(1, cores)  # the most threads the pool gets (torch's count at start)
        self.cpus = max(self.cores, cpus or len(watched or ()))  # the CPUs watched
        self.interval = interval
        self.threads = self.cores  # what the pool has
        self.wanted = self.cores  # what the watcher last decided
        self.others = 0.0  # cores other processes kept busy, at the last look
        self._read_times = read_times or functools.partial(machine_and_own_cpu_seconds, watched)
        self._set_threads = set_threads or _torch_set_num_threads
        self._last: tuple[float, float, float] | None = None  # wall, machine busy, own
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None

    def threads_for(self, others_cores: float, current: int) -> int:
        """The pool size when other processes keep `others_cores` of the watched CPUs busy: the CPUs left
        (at most `cores`), rounded, once they differ from `current` by more than half a core and a margin
        (no flapping around a half)."""
        free = min(float(self.cores), self.cpus - others_cores)
        if abs(free - current) < 0.5 + HYSTERESIS_CORES:
            return current
        return max(1, min(self.cores, round(free)))

    def observe(self) -> bool:
        """One look: `wanted` from the CPU time used since the last; False where there is none to read."""
        times = self._read_times()
        if times is None:
            return False
        now = time.monotonic()
        last, self._last = self._last, (now, *times)
        if last is not None and now > last[0]:
            self.others = max(0.0, ((times[0] - last[1]) - (times[1] - last[2])) / (now - last[0]))
            self.wanted = self.threads_for(self.others, self.wanted)
        return True

    def before_step(self) -> None:
        wanted = self.wanted
        if wanted != self.threads:
            log.info(
                "engine: %d thread(s), was %d: other processes keep %.1f core(s) busy",
                wanted,
                self.threads,
                self.others,
            )
            self.threads = wanted
            self._set_threads(wanted)

    def install(self, manager: Any) -> None:
        """Watch from now on, and apply the count ahead of each of the batch manager's generation steps."""
        step = manager._generation_step

        def step_within_share() -> None:
            self.before_step()
            step()

        manager._generation_step = step_within_share
        self._watcher = threading.Thread(target=self._watch, name="core-share", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop watching (`wanted` no longer changes once this returns) and give torch its count back:
        torch keeps the last count set, by any thread, for the threads that start using it later."""
        self._stopped.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5)
        if self.threads != self.cores:
            self.threads = self.cores
            self._set_threads(self.cores)

    def _watch(self) -> None:
        while self.observe() and not self._stopped.wait(self.interval):
            pass


def machine_and_own_cpu_seconds(cpus: set[int] | None) -> tuple[float, float] | None:
    """CPU seconds the CPUs in `cpus` (the whole machine where None) have been busy, not idle, waiting
    on I/O or stolen, and this process has used; None where /proc/stat is missing. Only the process's own
    CPUs count: in a container pinned to some of a host's cores, the other tenants' are not its business."""
    try:
        with open("/proc/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    busy = busy_seconds(text, cpus)
    if busy is None:
        return None
    own = os.times()
    return busy, own.user + own.system


def busy_seconds(proc_stat: str, cpus: set[int] | None) -> float | None:
    """Busy CPU seconds in a /proc/stat text: of the CPUs in `cpus` (per-CPU lines), or of the whole
    machine where `cpus` is None; None where the text has none of them."""
    ticks, found = 0, False
    for line in proc_stat.splitlines():
        fields = line.split()
        if len(fields) < 8 or not fields[0].startswith("cpu"):
            continue
        index = fields[0][3:]  # "" on the whole machine's line
        wanted = index == "" if cpus is None else index.isdigit() and int(index) in cpus
        if not wanted:
            continue
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
        ticks += user + nice + system + irq + softirq
        found = True
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def _torch_set_num_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def usable_cpu_ids() -> set[int] | None:
    """The CPUs this process may run on (its affinity mask); None where that is unknown (not Linux)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; all of them where that is unknown)."""
    ids = usable_cpu_ids()
    return len(ids) if ids else os.cpu_count() or 1
