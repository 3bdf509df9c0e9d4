"""A worker's job transitions share transactions (workers/grouped_writes.py) and each keeps its guard
and its own answer, on SQLite and Postgres."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import orm

from app.db import write_lock_for
from app.jobs import store as job_store
from app.jobs.store import JobOutcome, JobUpdate
from app.models import Job, JobStatus
from tests.support.apps import insert_queued_job
from workers.grouped_writes import GroupedWrites

HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


class CountingLock:
    """The process's write lock, counting the transactions that took it."""

    def __init__(self, lock: object) -> None:
        self.lock, self.taken = lock, 0

    def __enter__(self) -> None:
        self.lock.__enter__()  # type: ignore[attr-defined]
        self.taken += 1

    def __exit__(self, *exc: object) -> None:
        self.lock.__exit__(*exc)  # type: ignore[attr-defined]


@pytest.fixture
def lock(database_url: str) -> CountingLock:
    return CountingLock(
        write_lock_for(database_url) if database_url.startswith("sqlite") else threading.Lock()
    )


def queued(sessions: orm.sessionmaker[orm.Session], count: int) -> list[str]:
    with sessions() as session:
        return [insert_queued_job(session, "latency_first", HELLO).id for _ in range(count)]


def outcome(text: str) -> JobOutcome:
    return JobOutcome(JobStatus.SUCCEEDED, content=text, finish_reason="stop", completion_tokens=1)


def test_many_jobs_claimed_and_finished_at_once_share_transactions_and_each_is_stored_once(
    sessions: orm.sessionmaker[orm.Session], lock: CountingLock
) -> None:
    writes = GroupedWrites(sessions, lock)
    job_ids = queued(sessions, 64)

    def run(job_id: str) -> tuple[int, str]:
        claimed = writes.returning(job_store.claim_update(job_id, "w@host"))
        assert claimed is not None and claimed.id == job_id and claimed.status == JobStatus.RUNNING
        writes.soon(job_store.first_token_update(job_id, datetime(2026, 12, 7, tzinfo=UTC)))
        stored = writes.returning(job_store.finish_update(job_id, outcome(f"answer {job_id}")))
        assert stored is not None and stored.id == job_id
        return stored.attempts, stored.content

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(run, job_ids))
    assert answers == [(1, f"answer {job_id}") for job_id in job_ids]
    assert lock.taken < 3 * 64  # some transitions shared a transaction
    with sessions() as session:
        jobs = list(session.scalars(sa.select(Job).where(Job.id.in_(job_ids))))
    assert {job.status for job in jobs} == {"succeeded"}


def test_a_first_token_handed_over_alone_is_written_at_once_and_a_later_one_never_overwrites_it(
    sessions: orm.sessionmaker[orm.Session], lock: CountingLock
) -> None:
    writes = GroupedWrites(sessions, lock)
    (job_id,) = queued(sessions, 1)
    assert writes.returning(job_store.claim_update(job_id, "w@host")) is not None
    first, later = datetime(2026, 12, 7, 1, tzinfo=UTC), datetime(2026, 12, 7, 2, tzinfo=UTC)
    writes.soon(job_store.first_token_update(job_id, first))
    writes.soon(job_store.first_token_update(job_id, later))
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.first_token_at == first and lock.taken == 3


def test_a_job_claimed_by_many_threads_at_once_is_claimed_by_exactly_one(
    sessions: orm.sessionmaker[orm.Session], lock: CountingLock
) -> None:
    writes = GroupedWrites(sessions, lock)
    (job_id,) = queued(sessions, 1)
    with ThreadPoolExecutor(16) as pool:
        claims = list(
            pool.map(lambda i: writes.returning(job_store.claim_update(job_id, f"w{i}@host")), range(16))
        )
    won = [job for job in claims if job is not None]
    assert len(won) == 1 and won[0].attempts == 1
    again = writes.returning(job_store.finish_update(job_id, outcome("once")))
    assert again is not None and writes.returning(job_store.finish_update(job_id, outcome("twice"))) is None


def test_a_statement_that_fails_fails_only_its_own_caller(
    sessions: orm.sessionmaker[orm.Session], lock: CountingLock
) -> None:
    writes = GroupedWrites(sessions, lock)
    job_ids = queued(sessions, 8)
    jobs = Job.__table__
    statement = (
        sa.update(jobs).where(jobs.c.id == sa.bindparam("b_id")).values(status=None).returning(*jobs.c)
    )
    broken = JobUpdate(statement, {"b_id": job_ids[0]}, True)  # status is NOT NULL
    hold = threading.Lock()
    hold.acquire()
    held = GroupedWrites(sessions, lock)

    def blocked(group: list[object]) -> None:  # the first group waits, so the rest form one group
        with hold:
            pass
        GroupedWrites._write(held, group)  # type: ignore[arg-type]

    held._groups.do_group = blocked
    with ThreadPoolExecutor(9) as pool:
        first = pool.submit(held.returning, job_store.claim_update(job_ids[1], "w@host"))
        while not held._groups._leading:
            pass
        bad = pool.submit(held.returning, broken)
        good = [
            pool.submit(held.returning, job_store.claim_update(job_id, "w@host")) for job_id in job_ids[2:]
        ]
        while len(held._groups._pending) < 7:
            threading.Event().wait(0.001)
        hold.release()
        assert first.result() is not None
        with pytest.raises(sa.exc.IntegrityError):
            bad.result()
        assert all(future.result() is not None for future in good)
    with sessions() as session:
        statuses = dict(session.execute(sa.select(Job.id, Job.status).where(Job.id.in_(job_ids))).all())
    assert statuses == {job_ids[0]: "queued"} | {job_id: "running" for job_id in job_ids[1:]}
    assert writes.returning(job_store.claim_update(job_ids[0], "w@host")) is not None  # nothing left stuck
