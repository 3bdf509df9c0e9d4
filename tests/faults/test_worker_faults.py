"""Workers that die: SIGKILL mid-generation, a job that kills every worker it reaches, SIGTERM, SQLite load.

Two latency_first workers ("a" and "b") share one SQLite database and one Redis db, with a short
visibility timeout and heartbeat TTL (tests/support/cluster.py) so recovery happens within seconds.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
import redis

from tests.support.cluster import Cluster
from tests.support.live_server import serve
from tests.support.pipeline import FINISHED
from workers.recovery import MAX_ATTEMPTS

FAULTS_REDIS_DB = 9
HELLO = [{"role": "user", "content": "hello"}]  # greedy tiny model: runs to max_tokens


@pytest.fixture(scope="module")
def cluster(cluster_factory, redis_base_url: str) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    redis_url = f"{redis_base_url}/{FAULTS_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    cluster = cluster_factory(redis_url)
    cluster.start("a")
    cluster.start("b")
    cluster.wait_ready("a", "b")
    yield cluster
    for name in list(cluster.workers):
        cluster.stop(name)
    redis.Redis.from_url(redis_url).flushdb()


def restart(cluster: Cluster, name: str) -> None:
    """Start a killed worker again (its earlier process must be gone first)."""
    cluster.workers[name].wait(timeout=30)
    cluster.start(name)


def test_a_job_whose_worker_is_killed_mid_generation_is_redelivered_and_succeeds_once(
    cluster: Cluster,
) -> None:
    job_id = cluster.submit(messages=HELLO, max_tokens=300)
    running = cluster.wait_until(job_id, lambda job: job["first_token_at"] is not None)
    victim = running["worker"].split("@")[0]
    cluster.kill(victim)  # no warm shutdown: the task is never acked and the job stays `running`

    done = cluster.wait_finished(job_id, timeout=90)
    survivor = "b" if victim == "a" else "a"
    assert (done["status"], done["attempts"], done["worker"]) == ("succeeded", 2, f"{survivor}@faults")
    assert done["usage"]["completion_tokens"] == 300 and done["error"] is None
    assert cluster.terminal_events(job_id) == ["done"]  # one result, announced once
    assert f"job {job_id}: worker {victim}@faults is gone; running it here (attempt 2)" in cluster.log(
        survivor
    )
    restart(cluster, victim)  # ready by the time the next test needs it


def test_a_job_that_kills_every_worker_fails_after_max_attempts_without_a_loop(cluster: Cluster) -> None:
    job_id = cluster.submit(messages=HELLO, max_tokens=300)
    killed: list[str] = []
    deadline = time.monotonic() + 150
    while (job := cluster.job(job_id))["status"] != "failed":
        assert job["status"] in ("queued", "running"), job
        if job["status"] == "running" and job["attempts"] > len(killed):
            victim = job["worker"].split("@")[0]  # this request "crashes" whichever worker runs it
            cluster.kill(victim)
            killed.append(victim)
            threading.Thread(target=restart, args=(cluster, victim), daemon=True).start()
        assert time.monotonic() < deadline, f"still {job} after killing {killed}"
        time.sleep(0.05)

    assert len(killed) == MAX_ATTEMPTS and job["attempts"] == MAX_ATTEMPTS
    assert f"gave up after {MAX_ATTEMPTS} attempts" in job["error"]["message"]
    cluster.wait_ready("a", "b")
    time.sleep(10)  # longer than the visibility timeout: any leftover delivery has come and gone
    assert cluster.job(job_id) == job  # never run again
    proof = cluster.submit(messages=HELLO, max_tokens=4)  # and the workers still serve
    assert cluster.wait_finished(proof)["status"] == "succeeded"


def test_a_job_whose_engine_process_is_killed_runs_again_on_a_reloaded_engine(cluster: Cluster) -> None:
    job_id = cluster.submit(messages=HELLO, max_tokens=300)
    running = cluster.wait_until(job_id, lambda job: job["first_token_at"] is not None)
    name = running["worker"].split("@")[0]
    children = psutil.Process(cluster.workers[name].pid).children()
    engines = [child for child in children if "engine.process" in child.cmdline()]
    assert len(engines) == 1, [child.cmdline() for child in children]  # the engine process
    engines[0].send_signal(signal.SIGKILL)  # e.g. the kernel's OOM killer: the worker itself lives on

    done = cluster.wait_finished(job_id, timeout=120)
    assert (done["status"], done["attempts"]) == ("succeeded", 2), done
    assert done["usage"]["completion_tokens"] == 300 and done["error"] is None
    assert cluster.workers[name].poll() is None  # the same worker process
    assert cluster.terminal_events(job_id) == ["done"]
    log = cluster.log(name)
    assert f"job {job_id}: the engine stopped while it ran; requeued" in log
    assert "the engine stopped; loading it again" in log or done["worker"] != running["worker"]


def test_sigterm_lets_running_jobs_finish_and_loses_none(cluster: Cluster) -> None:
    job_ids = [cluster.submit(messages=HELLO, max_tokens=100) for _ in range(6)]
    running_on_a: list[str] = []
    deadline = time.monotonic() + 60
    while not running_on_a:
        jobs = [cluster.job(job_id) for job_id in job_ids]
        running_on_a = [
            job["id"] for job in jobs if (job["status"], job["worker"]) == ("running", "a@faults")
        ]
        assert time.monotonic() < deadline, "worker a never took a job"
        time.sleep(0.05)
    cluster.kill("a", signal.SIGTERM)  # warm shutdown: finish what runs, take nothing new
    assert cluster.workers["a"].wait(timeout=60) == 0
    assert "Warm shutdown" in cluster.log("a")
    for job_id in running_on_a:  # finished by a before it exited, not lost, not run twice
        job = cluster.job(job_id)
        assert (job["status"], job["worker"], job["attempts"]) == ("succeeded", "a@faults", 1), job
    cluster.start("a")  # a new worker comes up while b works through the rest
    jobs = [cluster.wait_finished(job_id, timeout=120) for job_id in job_ids]
    assert [job["status"] for job in jobs] == ["succeeded"] * len(jobs)
    cluster.wait_ready("a")


def test_sqlite_takes_concurrent_submits_while_two_workers_write(cluster: Cluster) -> None:
    statuses: list[int] = []
    job_ids: list[str] = []
    lock = threading.Lock()

    def submit_many(url: str, count: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(count):
                response = client.post("/v1/jobs", json={"messages": HELLO, "max_tokens": 2})
                with lock:
                    statuses.append(response.status_code)
                    if response.status_code == 202:
                        job_ids.append(response.json()["id"])

    with serve(cluster.app) as url:
        threads = [threading.Thread(target=submit_many, args=(url, 15)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [202] * 120
    for job_id in job_ids:
        job = cluster.wait_finished(job_id, timeout=120)
        assert job["status"] == "succeeded", job
    assert {cluster.job(job_id)["worker"] for job_id in job_ids} == {"a@faults", "b@faults"}
    for name in ("a", "b"):
        assert "database is locked" not in cluster.log(name)
    assert all(cluster.job(job_id)["status"] in FINISHED for job_id in job_ids)
