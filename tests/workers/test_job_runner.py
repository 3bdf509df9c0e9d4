"""The worker's job logic called directly, with the real engine on the tiny gpt-oss model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy import orm

from app.db import write_lock_for
from app.jobs import store as job_store
from app.jobs.cancel import signal_cancel
from app.models import Job, JobStatus
from app.profiles import load_profiles
from engine.request_handle import ENGINE_STOPPED
from engine.types import GenerationRequest, GenerationResult, ModelTags
from tests.support.apps import insert_queued_job
from workers.cancel_watcher import CancelWatcher
from workers.engine_host import EngineHost
from workers.grouped_writes import GroupedWrites
from workers.job_runner import (
    MAX_ATTEMPTS,
    WorkerContext,
    recover_jobs_of_lost_worker,
    run_job,
    run_side_by_side,
)

CANCEL_REDIS_DB = 10
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def engine_host(profiles_file: Path, tiny_model_dir: Path, test_dir: Path) -> Iterator[EngineHost]:
    host = EngineHost(load_profiles(profiles_file), test_dir / "models", pinned_profile="latency_first")
    yield host
    host.shutdown()


@pytest.fixture
def worker(
    sessions: orm.sessionmaker[orm.Session], engine_host: EngineHost, redis_base_url: str
) -> Iterator[WorkerContext]:
    client = redis.Redis.from_url(f"{redis_base_url}/{CANCEL_REDIS_DB}")
    watcher = CancelWatcher(client, interval_s=0.02)
    yield WorkerContext(sessions, engine_host.engine_for, watcher, "test_worker@host")
    watcher.stop()
    client.flushdb()


def queued_job(
    sessions: orm.sessionmaker[orm.Session], profile: str = "latency_first", **request: Any
) -> str:
    request = {"messages": HELLO, "max_tokens": 8, "profile": profile} | request
    with sessions() as session:
        job = insert_queued_job(session, profile, request)
        return job.id


def stored(sessions: orm.sessionmaker[orm.Session], job_id: str) -> Job:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_run_job_stores_the_result_tags_and_times(worker: WorkerContext) -> None:
    job_id = queued_job(worker.sessions, stop=["\n"], temperature=0.7, seed=3, reasoning_effort="high")
    assert run_job(job_id, worker) is JobStatus.SUCCEEDED
    job = stored(worker.sessions, job_id)
    assert (job.status, job.attempts, job.worker_hostname) == ("succeeded", 1, "test_worker@host")
    assert job.finish_reason in {"length", "stop"} and (job.content or "") + (job.reasoning or "")
    assert job.tags() == {
        "engine": "transformers-cb", "model_id": "tiny-gptoss", "model_size": "0.2m",
        "gpu_mode": "cpu", "profile": "latency_first",
    }  # fmt: skip
    assert job.prompt_tokens and job.completion_tokens and job.ttft_s and job.e2e_s
    assert job.started_at and job.first_token_at and job.finished_at
    assert job.created_at <= job.started_at <= job.first_token_at <= job.finished_at


def test_a_second_delivery_is_a_no_op(worker: WorkerContext) -> None:
    job_id = queued_job(worker.sessions)
    assert run_job(job_id, worker) is JobStatus.SUCCEEDED
    first = stored(worker.sessions, job_id)
    assert run_job(job_id, worker) is None
    again = stored(worker.sessions, job_id)
    assert (again.attempts, again.finished_at, again.content) == (1, first.finished_at, first.content)


def test_two_simultaneous_deliveries_run_the_job_once(worker: WorkerContext) -> None:
    job_id = queued_job(worker.sessions)
    outcomes: list[JobStatus | None] = []
    threads = [threading.Thread(target=lambda: outcomes.append(run_job(job_id, worker))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes, key=str) == [None, JobStatus.SUCCEEDED]
    assert stored(worker.sessions, job_id).attempts == 1


def test_the_cancel_signal_stops_a_running_job_and_keeps_its_text(worker: WorkerContext) -> None:
    job_id = queued_job(worker.sessions, max_tokens=1024)
    threading.Thread(target=run_job, args=(job_id, worker), daemon=True).start()
    deadline = time.monotonic() + 30
    while stored(worker.sessions, job_id).first_token_at is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    signal_cancel(worker.cancel_watcher.client, [job_id], ttl_s=60)
    while (job := stored(worker.sessions, job_id)).status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert (job.status, job.finish_reason) == ("cancelled", "cancelled")
    assert 0 < (job.completion_tokens or 0) < 1024 and (job.content or "") + (job.reasoning or "")


def test_a_cancelled_job_is_not_claimed(worker: WorkerContext) -> None:
    job_id = queued_job(worker.sessions)
    with worker.sessions() as session:
        assert job_store.cancel_queued_job(session, job_id)
    assert run_job(job_id, worker) is None
    assert stored(worker.sessions, job_id).attempts == 0


def test_engine_errors_fail_the_job_with_a_clear_message(worker: WorkerContext) -> None:
    job_id = queued_job(worker.sessions, prompt="x" * 4000, messages=None, max_tokens=1024)
    assert run_job(job_id, worker) is JobStatus.FAILED
    job = stored(worker.sessions, job_id)
    assert job.finish_reason == "error" and job.finished_at is not None
    assert job.error and "context" in job.error and "max_tokens" in job.error


def test_a_job_for_another_profile_fails_on_a_pinned_worker(worker: WorkerContext) -> None:
    job_id = queued_job(worker.sessions, profile="quality_first")
    assert run_job(job_id, worker) is JobStatus.FAILED
    assert "serves profile 'latency_first'" in (stored(worker.sessions, job_id).error or "")


def test_jobs_left_running_by_a_dead_worker_are_requeued_then_given_up(
    sessions: orm.sessionmaker[orm.Session],
) -> None:
    hostname = f"lost@{time.time_ns()}"
    retry, give_up = queued_job(sessions), queued_job(sessions)
    with sessions() as session:
        for job_id in (retry, give_up):
            assert job_store.claim_job(session, job_id, hostname)
        session.execute(sa.update(Job).where(Job.id == give_up).values(attempts=MAX_ATTEMPTS))
        session.commit()
    enqueued: list[tuple[str, str, str]] = []
    recovered = recover_jobs_of_lost_worker(sessions, hostname, lambda *args: enqueued.append(args))
    assert recovered == [retry] and enqueued == [(retry, "latency_first", "t", "latency_first")]
    assert stored(sessions, retry).status == "queued"
    lost = stored(sessions, give_up)
    assert lost.status == "failed" and "died" in (lost.error or "")


class _StoppedEngine:
    """An engine whose process dies under every request (as engine/process.py reports it)."""

    tags = ModelTags("transformers-cb", "tiny-gptoss", "0.2m", "cpu", "latency_first")

    def submit(self, request: GenerationRequest, on_delta: Any = None) -> Any:
        rid = request.request_id or ""
        result = GenerationResult(rid, "", "", "error", 3, 0, None, 0.1, error=ENGINE_STOPPED)
        return SimpleNamespace(events=lambda timeout=None: iter([result]), cancel=lambda: None)


def test_a_job_whose_engine_stopped_is_requeued_then_given_up(worker: WorkerContext) -> None:
    enqueued: list[tuple[str, str, str]] = []
    worker.engine_for = lambda profile: _StoppedEngine()
    worker.enqueue = lambda *args: enqueued.append(args)
    job_id = queued_job(worker.sessions)
    assert run_job(job_id, worker) is JobStatus.QUEUED
    assert enqueued == [(job_id, "latency_first", "t", "latency_first")]
    job = stored(worker.sessions, job_id)
    assert (job.status, job.attempts, job.finished_at, job.error) == ("queued", 1, None, None)
    for _ in range(MAX_ATTEMPTS - 1):
        run_job(job_id, worker)
    job = stored(worker.sessions, job_id)
    assert (job.status, job.attempts, len(enqueued)) == ("failed", MAX_ATTEMPTS, MAX_ATTEMPTS - 1)
    assert "gave up after 3 attempts" in (job.error or "")


class _CountingLock:
    """A write lock that counts how often it is taken and checks it is never taken twice at once."""

    def __init__(self) -> None:
        self.taken = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        assert self._lock.acquire(blocking=False), "the write lock was taken twice at once"
        self.taken += 1

    def __exit__(self, *_: object) -> None:
        self._lock.release()


class _RecordedEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def append(self, job_id: str, event_type: str, data: dict[str, Any]) -> None:
        self.events.append((event_type, data))


def run_recorded(worker: WorkerContext, max_tokens: int) -> tuple[_CountingLock, _RecordedEvents, str]:
    """Run a job to success with a counting write lock and recorded events."""
    worker.write_lock = lock = _CountingLock()
    worker.writes = GroupedWrites(worker.sessions, lock)
    worker.events = recorded = _RecordedEvents()
    job_id = queued_job(worker.sessions, max_tokens=max_tokens)
    assert run_job(job_id, worker) is JobStatus.SUCCEEDED
    return lock, recorded, job_id


def test_claim_first_token_and_result_are_written_under_the_write_lock_and_every_delta_is_published(
    worker: WorkerContext,
) -> None:
    lock, recorded, _ = run_recorded(worker, max_tokens=12)
    assert lock.taken == 3  # claim, first_token_at, the result: alone, each is its own transaction
    kinds = [kind for kind, _ in recorded.events]
    assert kinds[0] == "started" and kinds[-1] == "done" and set(kinds[1:-1]) == {"delta"}
    counts = [data["completion_tokens"] for kind, data in recorded.events if kind == "delta"]
    assert len(counts) > 1 and counts == sorted(counts)


def test_only_sqlite_gets_a_write_lock() -> None:
    assert isinstance(write_lock_for("sqlite:///jobs.db"), type(threading.Lock()))
    assert isinstance(write_lock_for("postgresql+psycopg://postgres@127.0.0.1/test"), nullcontext)


def test_a_job_that_ends_with_its_first_token_is_written_twice_and_keeps_first_token_at(
    worker: WorkerContext,
) -> None:
    lock, recorded, job_id = run_recorded(worker, max_tokens=1)
    assert lock.taken == 2  # claim and the result: the result brings first_token_at
    job = stored(worker.sessions, job_id)
    assert job.completion_tokens == 1 and job.first_token_at is not None
    assert job.started_at is not None and job.finished_at is not None
    assert job.started_at <= job.first_token_at <= job.finished_at
    assert [kind for kind, _ in recorded.events] == ["started", "delta", "done"]


def test_a_messages_lines_run_side_by_side_and_a_failing_claim_fails_the_message_after_the_rest(
    worker: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_side_by_side: every line runs on its own thread at once (the engine batches them), `ended`
    is told of each, and an error (a claim the database refused) is raised once the others ran, as a
    message of one job raises it: that line stays queued for the reconciler."""
    ids = [queued_job(worker.sessions, max_tokens=32) for _ in range(3)]
    broken = queued_job(worker.sessions)
    real_claim = job_store.claim_update

    def claim(job_id: str, hostname: str) -> job_store.JobUpdate:
        if job_id == broken:
            raise sa.exc.OperationalError("UPDATE jobs", {}, Exception("database is locked"))
        return real_claim(job_id, hostname)

    monkeypatch.setattr(job_store, "claim_update", claim)
    with worker.sessions() as session:  # lines of one batch: it is asked about once, after the message
        session.execute(sa.update(Job).where(Job.id.in_([*ids, broken])).values(batch_id="batch_1"))
        session.commit()
    asked: list[str] = []
    worker.batch_job_ended = asked.append
    ended: list[str] = []
    lock = threading.Lock()

    def one_ended() -> None:
        with lock:
            ended.append(threading.current_thread().name)

    with pytest.raises(sa.exc.OperationalError, match="database is locked"):
        run_side_by_side([ids[0], broken, *ids[1:]], worker, one_ended)
    assert len(ended) == 4  # told of each line, the failed one too
    assert [stored(worker.sessions, job_id).status for job_id in ids] == ["succeeded"] * 3
    assert stored(worker.sessions, broken).status == "queued"
    starts = sorted(stored(worker.sessions, job_id).started_at for job_id in ids)
    ends = sorted(stored(worker.sessions, job_id).finished_at for job_id in ids)
    assert starts[-1] < ends[0]  # all three ran together, not one after another
    assert asked == ["batch_1"]


def test_a_loaded_engine_is_handed_out_while_the_hosts_lock_is_held(engine_host: EngineHost) -> None:
    """Every job asks for its engine: once it runs, engine_for neither waits for the host's lock (held
    while a model loads) nor queues the job threads on it."""
    engine = engine_host.engine_for("latency_first")  # loaded (or loads now)
    got: list[Any] = []
    with engine_host._lock:
        asker = threading.Thread(target=lambda: got.append(engine_host.engine_for("latency_first")))
        asker.start()
        asker.join(timeout=10)
        assert not asker.is_alive()
    assert got == [engine]
