"""Benchmark: a worker's job writes (claim, then finish) from many threads on one SQLite database.

With and without app.db.write_lock_for's lock, in one run: SQLite lets one writer in at a time and
makes the others retry in its busy handler, which sleeps 1, 2, 5, 10... ms between tries; queued on
a lock, the next writer starts as soon as the last commits. Prints each write's p50/p90/max latency
and the time all writes took.

    python bench/sqlite_writes.py [--threads 16] [--rounds 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/sqlite_writes.py` puts bench/, not the repo root, on sys.path

from sqlalchemy import orm  # noqa: E402

from app.db import make_engine, write_lock_for  # noqa: E402
from app.jobs import store as job_store  # noqa: E402
from app.jobs.store import JobOutcome  # noqa: E402
from app.models import Job, JobStatus  # noqa: E402


def fresh_database(work: Path) -> orm.sessionmaker[orm.Session]:
    url = f"sqlite:///{work / 'writes.db'}"
    env = os.environ | {"DATABASE_URL": url}
    migrate = [sys.executable, "-m", "alembic", "upgrade", "head"]
    subprocess.run(migrate, cwd=ROOT, env=env, check=True, capture_output=True)
    return orm.sessionmaker(make_engine(url), expire_on_commit=False)


def _insert(session: orm.Session, request: dict[str, Any]) -> Job:
    job = Job(profile="p", request=request, request_hash=job_store.request_hash(request), task_id="t")
    session.add(job)
    session.commit()
    return job


def run(lock: AbstractContextManager[Any], threads: int, rounds: int) -> tuple[list[float], float]:
    """Each thread claims and finishes `rounds` jobs, all threads starting each round together."""
    sessions = fresh_database(Path(tempfile.mkdtemp(prefix="bench-sqlite-")))
    request = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4}
    with sessions() as session:
        ids = [_insert(session, request).id for _ in range(threads * rounds)]
    latencies: list[float] = []
    barrier = threading.Barrier(threads)

    def worker(index: int) -> None:
        for job_id in ids[index * rounds : (index + 1) * rounds]:
            barrier.wait()
            started = time.perf_counter()
            with lock, sessions() as session:
                job_store.claim_job(session, job_id, "bench@host")
            claimed = time.perf_counter()
            outcome = JobOutcome(JobStatus.SUCCEEDED, content="y" * 200, finish_reason="stop")
            with lock, sessions() as session:
                job_store.finish_job(session, job_id, outcome)
            latencies.extend(((claimed - started) * 1000, (time.perf_counter() - claimed) * 1000))

    pool = [threading.Thread(target=worker, args=(index,)) for index in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sorted(latencies), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    results: dict[str, list[tuple[list[float], float]]] = {"lock": [], "no lock": []}
    for _ in range(2):  # interleaved
        results["lock"].append(run(write_lock_for("sqlite://"), args.threads, args.rounds))
        results["no lock"].append(run(nullcontext(), args.threads, args.rounds))
    for name, runs in results.items():
        for latencies, wall in runs:
            p50, p90 = statistics.median(latencies), latencies[int(len(latencies) * 0.9)]
            print(f"{name:8s} write p50 {p50:6.2f} ms  p90 {p90:6.2f} ms  max {latencies[-1]:7.2f} ms  "
                  f"all {len(latencies)} writes {wall:5.2f} s")  # fmt: skip
    medians = {
        name: statistics.median(statistics.median(latencies) for latencies, _ in runs)
        for name, runs in results.items()
    }
    print(f"p50 write latency, lock / no lock: {medians['lock'] / medians['no lock']:.2f}")


if __name__ == "__main__":
    main()
