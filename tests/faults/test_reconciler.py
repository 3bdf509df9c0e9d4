"""The reconciler's plain functions against real Redis and SQLite/Postgres (no worker consumes)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from datetime import timedelta
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from app import create_app
from app.batches.lease import lease_key
from app.batches.models import Batch
from app.db import db_session
from app.jobs import store as job_store
from app.models import Job, JobStatus, utcnow
from app.ops.heartbeats import WorkerHeartbeat, write_heartbeat
from app.queue import RECONCILE_TASK
from app.services import services
from tests.support.apps import insert_queued_job
from tests.support.batches import create_batch, ingest, request_line, run
from workers.reconciler import ReconcileContext, reconcile_context, reconcile_once, task_ids_in_broker
from workers.recovery import MAX_ATTEMPTS

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
LONG_AGO = timedelta(hours=1)


def context(app: Flask, **changes: Any) -> ReconcileContext:
    """Stuck means older than 30 minutes: only this module's backdated jobs, not other tests' leftovers."""
    return dataclasses.replace(reconcile_context(app), stuck_after_s=1800, **changes)


def backdate(app: Flask, job_id: str, **columns: Any) -> None:
    """Make a job look as if it had waited (created_at) or run (started_at) for an hour."""
    values = {column: utcnow() - LONG_AGO for column in columns if columns[column]}
    with app.app_context(), db_session() as session:
        session.execute(sa.update(Job).where(Job.id == job_id).values(**values))
        session.commit()


def stored(app: Flask, job_id: str) -> Job:
    with app.app_context(), db_session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def queued_without_message(app: Flask) -> Job:
    """A queued job whose message never reached (or left) Redis."""
    with app.app_context(), db_session() as session:
        request = {**HELLO, "max_tokens": 4}
        task_id = f"lost-{time.time_ns()}"
        return insert_queued_job(session, "latency_first", request, task_id)


def test_queued_jobs_whose_message_is_gone_are_sent_again_and_only_those(idle_app: Flask) -> None:
    client: redis.Redis = services(idle_app).redis
    in_queue = idle_app.test_client().post("/v1/jobs", json=HELLO).get_json()["id"]
    held_by_a_worker = idle_app.test_client().post("/v1/jobs", json=HELLO).get_json()["id"]
    lost, recent = queued_without_message(idle_app), queued_without_message(idle_app)
    for job_id in (in_queue, held_by_a_worker, lost.id):
        backdate(idle_app, job_id, created_at=True)
    # a worker took one message and has not acknowledged it yet (kombu keeps it in `unacked`)
    raw: Any = client.lrange("latency_first", 0, 0)[0]
    message = json.loads(raw)
    assert message["headers"]["id"] == stored(idle_app, held_by_a_worker).task_id
    client.lrem("latency_first", 1, raw)
    client.hset("unacked", "tag-1", json.dumps([message, "latency_first", "latency_first"]))

    resent = reconcile_once(context(idle_app)).resent
    assert lost.id in resent and not {in_queue, held_by_a_worker, recent.id} & set(resent)
    task_ids = {stored(idle_app, job_id).task_id for job_id in (in_queue, held_by_a_worker, lost.id)}
    assert task_ids_in_broker(client, ["latency_first"], task_ids | {recent.task_id}) == task_ids
    assert lost.id not in reconcile_once(context(idle_app)).resent  # sent once: now it is in the queue


def claimed(app: Flask, worker: str, attempts: int = 1) -> str:
    job_id = queued_without_message(app).id
    with app.app_context(), db_session() as session:
        assert job_store.claim_job(session, job_id, worker)
        session.execute(sa.update(Job).where(Job.id == job_id).values(attempts=attempts))
        session.commit()
    backdate(app, job_id, created_at=True, started_at=True)
    return job_id


def heartbeat(app: Flask, name: str, started_at: float) -> None:
    beat = WorkerHeartbeat(
        name, "latency_first", ("latency_first",), "tiny", {}, os.getpid(), 0, time.time(), started_at
    )
    write_heartbeat(services(app).redis, beat, ttl_s=60)


def test_running_jobs_of_dead_or_restarted_workers_are_requeued_or_failed(idle_app: Flask) -> None:
    suffix = time.time_ns()
    alive, dead, restarted = (f"{role}-{suffix}@host" for role in ("alive", "dead", "restarted"))
    heartbeat(idle_app, alive, started_at=time.time() - 2 * LONG_AGO.total_seconds())
    heartbeat(idle_app, restarted, started_at=time.time())  # a new process took the name since
    on_alive, on_dead, on_restarted = (
        claimed(idle_app, alive),
        claimed(idle_app, dead),
        claimed(idle_app, restarted),
    )
    out_of_attempts = claimed(idle_app, dead, attempts=MAX_ATTEMPTS)

    # Redis restarted moments ago: a missing heartbeat proves nothing yet, a newer process does
    first = reconcile_once(context(idle_app, heartbeat_ttl_s=10**9))
    assert (first.requeued, first.failed) == ([on_restarted], [])

    second = reconcile_once(context(idle_app, heartbeat_ttl_s=0))
    assert (second.requeued, second.failed) == ([on_dead], [out_of_attempts])
    assert stored(idle_app, on_alive).status == JobStatus.RUNNING
    for job_id in (on_dead, on_restarted):
        job = stored(idle_app, job_id)
        assert (job.status, job.started_at, job.attempts) == (JobStatus.QUEUED, None, 1)
    client = services(idle_app).redis
    requeued_tasks = {stored(idle_app, job_id).task_id for job_id in (on_dead, on_restarted)}
    assert task_ids_in_broker(client, ["latency_first"], requeued_tasks) == requeued_tasks
    failed = stored(idle_app, out_of_attempts)
    assert failed.status == JobStatus.FAILED and f"gave up after {MAX_ATTEMPTS} attempts" in (
        failed.error or ""
    )


def test_a_batch_whose_jobs_all_ended_is_finished_even_if_its_watch_was_lost(idle_app: Flask) -> None:
    client = idle_app.test_client()
    batch = create_batch(client, [request_line("a"), request_line("b")])
    assert ingest(idle_app, batch["id"]) == "in_progress"
    with idle_app.app_context(), db_session() as session:
        job_ids = list(session.scalars(sa.select(Job.id).where(Job.batch_id == batch["id"])))
    for job_id in job_ids:
        run(idle_app, job_id, JobStatus.SUCCEEDED, content="hi")
    assert batch["id"] in reconcile_once(context(idle_app)).batches_finished
    with idle_app.app_context(), db_session() as session:
        finished = session.get(Batch, batch["id"])
        assert finished is not None and finished.status == "completed" and finished.output_file_id


def test_celery_beat_runs_the_reconciler_on_the_batch_worker(idle_app: Flask) -> None:
    celery_app = idle_app.extensions["celery"]
    entry = celery_app.conf.beat_schedule["reconcile-jobs"]
    assert entry == {
        "task": "workers.reconciler.reconcile",
        "schedule": 60.0,
        "options": {"queue": "batches", "expires": 60.0},
    }
    assert "workers.reconciler" in celery_app.conf.include
    off = create_app({**idle_app.config, "RECONCILE_INTERVAL_S": 0})
    assert "reconcile-jobs" not in off.extensions["celery"].conf.beat_schedule
    services(off).db_engine.dispose()


def test_the_reconcile_task_is_acked_on_receipt_unlike_jobs(idle_app: Flask) -> None:
    """An unacked reconcile message in flight when Redis went away crashed the batch worker (kombu);
    a lost pass costs nothing, so the task is acked before it runs. Jobs stay acked late."""
    import workers.reconciler  # noqa: F401  (registers the task with the app's Celery)
    import workers.tasks  # noqa: F401
    from app.queue import RUN_JOB_TASK

    tasks = idle_app.extensions["celery"].tasks
    assert tasks[RECONCILE_TASK].acks_late is False
    assert tasks[RUN_JOB_TASK].acks_late is True


def backdate_batch(app: Flask, batch_id: str) -> None:
    with app.app_context(), db_session() as session:
        session.execute(sa.update(Batch).where(Batch.id == batch_id).values(created_at=utcnow() - LONG_AGO))
        session.commit()


def test_a_batch_nobody_ingests_is_sent_to_ingest_again_and_one_being_ingested_is_left(
    idle_app: Flask,
) -> None:
    client: redis.Redis = services(idle_app).redis
    stalled = create_batch(idle_app.test_client(), [request_line("a"), request_line("b")])["id"]
    leased = create_batch(idle_app.test_client(), [request_line("c")])["id"]
    for batch_id in (stalled, leased):
        backdate_batch(idle_app, batch_id)  # validating for an hour: its worker died while validating
    client.set(lease_key(leased), "1", ex=60)  # an ingest holds this one's lease
    sent: list[str] = []
    report = reconcile_once(context(idle_app, ingest=sent.append))
    assert stalled in report.batches_resumed and leased not in report.batches_resumed
    assert stalled in sent
    assert ingest(idle_app, stalled) == "in_progress"  # what the resent message does
    assert stalled not in reconcile_once(context(idle_app, ingest=sent.append)).batches_resumed
    client.delete(lease_key(leased))


def test_an_ingest_that_cannot_store_a_line_fails_the_batch_naming_the_lines(
    idle_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [request_line("a"), request_line("b"), request_line("c")]
    batch_id = create_batch(idle_app.test_client(), lines)["id"]
    from app.batches import ingest as ingest_module

    real_job_row = ingest_module._job_row

    def unstorable(batch_id: str, request: Any, *args: Any) -> dict[str, Any]:
        row = real_job_row(batch_id, request, *args)
        return {**row, "id": "job_twice"} if request.line >= 2 else row  # one id twice: the insert fails

    monkeypatch.setattr(ingest_module, "_job_row", unstorable)
    assert ingest(idle_app, batch_id) == "failed"
    batch = idle_app.test_client().get(f"/v1/batches/{batch_id}").get_json()
    [error] = batch["errors"]["data"]
    assert error["code"] == "ingest_failed" and "lines 1 to 3" in error["message"] and error["line"] == 1
    with idle_app.app_context(), db_session() as session:
        statuses = set(session.scalars(sa.select(Job.status).where(Job.batch_id == batch_id)))
    assert statuses <= {"cancelled"}  # nothing of a failed batch runs
