"""What a worker does with one job: claim it, generate, watch for cancel, store the outcome."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import InitVar, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from sqlalchemy import orm

from app.jobs import store as job_store
from app.jobs.events import TERMINAL_EVENT_OF
from app.jobs.render import job_json
from app.jobs.schemas import generation_request
from app.jobs.store import JobOutcome
from app.models import Job, JobStatus
from app.quality import quality_signals
from engine.request_handle import ENGINE_STOPPED
from engine.types import GenerationRequest, GenerationResult, ModelTags, TokenDelta
from workers.cancel_watcher import CancelWatcher
from workers.grouped_writes import GroupedWrites
from workers.recovery import MAX_ATTEMPTS as MAX_ATTEMPTS  # re-exported: the bound on a job's runs
from workers.recovery import Enqueue, IsGone, requeue_or_give_up, take_over_lost_job

log = logging.getLogger(__name__)


class GenerationHandle(Protocol):
    def events(self, timeout: float | None = None) -> Any: ...
    def cancel(self) -> None: ...


class GenerationEngine(Protocol):
    tags: ModelTags

    def submit(
        self, request: GenerationRequest, on_delta: Callable[[TokenDelta], None] | None = None
    ) -> GenerationHandle: ...


class EventSink(Protocol):
    """Where a job's events go: app.jobs.events.JobEventLog, or workers.event_publisher's batching thread."""

    def append(self, job_id: str, event_type: str, data: dict[str, Any]) -> Any: ...


class JobObserver(Protocol):
    """Metrics and transition logs of the jobs a worker runs (workers/job_observer.py); never raises."""

    def job_started(self, job: Job, tags: ModelTags) -> None: ...
    def job_finished(self, job: Job, outcome: JobOutcome) -> None: ...


@dataclass
class WorkerContext:
    """What job runs need from their worker process."""

    sessions: orm.sessionmaker[orm.Session]
    engine_for: Callable[[str], GenerationEngine]  # profile name -> its engine
    cancel_watcher: CancelWatcher
    hostname: str
    events: EventSink | None = None  # where token deltas and status events go (SSE readers)
    observer: JobObserver | None = None  # metrics and transition logs
    is_worker_gone: IsGone | None = None  # lets a redelivered task take over a dead worker's job
    store_answer: Callable[[Job], Any] | None = None  # response cache (workers/answer_cache.py); never raises
    write_lock: AbstractContextManager[Any] = field(default_factory=nullcontext)  # app.db.write_lock_for
    enqueue: Enqueue | None = None  # puts a job back on its queue when the engine died under it
    batch_job_ended: Callable[[str], Any] | None = (
        None  # a batch's job ended: check the batch if it was the last
    )
    shared_writes: InitVar[GroupedWrites | None] = None  # the process's group commit of job transitions
    # where run_side_by_side runs a message's lines: the process's pool (workers/runtime.py); threads start
    # on first use, so a context that never runs several lines never starts one
    line_threads: Executor = field(default_factory=lambda: ThreadPoolExecutor(thread_name_prefix="line"))
    writes: GroupedWrites = field(init=False)  # shared_writes, or this context's own

    def __post_init__(self, shared_writes: GroupedWrites | None) -> None:
        self.writes = shared_writes or GroupedWrites(self.sessions, self.write_lock)

    @contextmanager
    def writing(self) -> Iterator[orm.Session]:
        """A session for one write transaction, holding the process's write lock (SQLite) meanwhile."""
        with self.write_lock, self.sessions() as session:
            yield session

    def publish(self, job_id: str, event_type: str, data: dict[str, Any]) -> None:
        """Append to the job's event stream; a Redis hiccup never fails the job (the DB has the result)."""
        if self.events is None:
            return
        try:
            self.events.append(job_id, event_type, data)
        except Exception as exc:
            log.warning("job %s: could not publish %s event: %s", job_id, event_type, exc)


def run_job(job_id: str, worker: WorkerContext) -> JobStatus | None:
    """Run the job if it is still queued; returns its final status, or None when it was not claimable."""
    job = worker.writes.returning(job_store.claim_update(job_id, worker.hostname))
    if job is None and worker.is_worker_gone is not None:
        with worker.writing() as session:
            job = take_over_lost_job(session, job_id, worker.hostname, worker.is_worker_gone)
    if job is None:
        log.info("job %s is not queued (running elsewhere, finished or cancelled); skipping", job_id)
        return None
    request, profile, attempts = dict(job.request), job.profile, job.attempts
    worker.publish(job_id, "started", {"id": job_id, "worker": worker.hostname, "attempts": attempts})
    engine: GenerationEngine | None = None
    try:
        engine = worker.engine_for(profile)
        observer = worker.observer
        log_start = partial(observer.job_started, job, engine.tags) if observer is not None else None
        outcome = generate(engine, generation_request(request, job_id), job_id, worker, log_start)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        tags = engine.tags.as_dict() if engine is not None else None  # the model it failed on, when known
        error = f"{type(exc).__name__}: {exc}"
        outcome = JobOutcome(JobStatus.FAILED, finish_reason="error", error=error, tags=tags)
    if outcome.error == ENGINE_STOPPED and worker.enqueue is not None:
        return _requeue_after_engine_stopped(job_id, worker, worker.enqueue)
    stored = worker.writes.returning(job_store.finish_update(job_id, outcome))
    finished = stored is not None
    if stored is None:  # cancelled or taken over meanwhile: report it as it is
        with worker.sessions() as session:
            stored = session.get(Job, job_id)
    final = job_json(stored) if stored is not None else {"id": job_id, "status": str(outcome.status)}
    worker.publish(
        job_id, TERMINAL_EVENT_OF[outcome.status], final
    )  # after the DB: readers then see it stored
    if finished and stored is not None and worker.observer is not None:  # counted once, as stored
        worker.observer.job_finished(stored, outcome)
    if finished and stored is not None and worker.store_answer is not None:
        worker.store_answer(stored)
    if finished and stored is not None and stored.batch_id and worker.batch_job_ended is not None:
        worker.batch_job_ended(stored.batch_id)
    log.debug("job %s %s", job_id, outcome.status)  # the job log's JSON line says it (app/jobs/log.py)
    return outcome.status


def run_side_by_side(job_ids: Sequence[str], worker: WorkerContext, ended: Callable[[], None]) -> None:
    """Run the jobs of one message (a batch's lines) at once, each on its own thread as if it had come in
    a message of its own: their claims and finishes share transactions (worker.writes), the engine batches
    them. `ended` is called as each one ends. When any raised, the first error is raised once all ended,
    as a message of one job raises it: the jobs it did not run stay queued for the reconciler.

    Whether a line's batch has ended is asked once per message, after its last line, not after each:
    the last message of a batch to end still asks when no line is left."""
    batches: set[str] = set()  # of the lines that ended here (set.add: safe from any thread)
    lines = replace(worker, shared_writes=worker.writes, batch_job_ended=batches.add)

    def one(job_id: str) -> None:
        try:
            run_job(job_id, lines)
        finally:
            ended()

    futures = [worker.line_threads.submit(one, job_id) for job_id in job_ids]
    errors = [future.exception() for future in futures]  # waits for each
    if worker.batch_job_ended is not None:
        for batch_id in batches:
            worker.batch_job_ended(batch_id)
    first = next((error for error in errors if error is not None), None)
    if first is not None:
        raise first


def _requeue_after_engine_stopped(job_id: str, worker: WorkerContext, enqueue: Enqueue) -> JobStatus | None:
    """The engine process died (or its loop failed) under the job: run it again, like a job whose worker
    died, up to MAX_ATTEMPTS; the next run loads the engine again (workers/engine_host.py)."""
    with worker.writing() as session:
        job = session.get(Job, job_id)
        what = requeue_or_give_up(session, job, enqueue) if job is not None else None
        status = JobStatus(job.status) if job is not None else None
        final = job_json(job) if job is not None and what == "failed" else None
    log.warning("job %s: the engine stopped while it ran; %s", job_id, what or "it moved on meanwhile")
    if final is not None:
        worker.publish(job_id, "error", final)
    return status


def generate(
    engine: GenerationEngine,
    request: GenerationRequest,
    job_id: str,
    worker: WorkerContext,
    after_submit: Callable[[], None] | None = None,
) -> JobOutcome:
    """Submit to the engine and publish its deltas, cancelling when the job's cancel key appears.
    `after_submit` runs once the engine took the request, or refused it: the job's `started` log line
    follows the submit rather than hold it up.

    The deltas are published from whichever thread decodes them (engine/request_handle.py); this
    thread wakes for the first one, to stamp first_token_at, and for the result."""

    def publish_delta(event: TokenDelta) -> None:
        delta: dict[str, Any] = {"content": event.content, "reasoning": event.reasoning}
        if event.tool_calls:
            delta["tool_calls"] = list(event.tool_calls)
        worker.publish(
            job_id, "delta", {**delta, "completion_tokens": event.completion_tokens, "time": event.time}
        )

    try:
        handle = engine.submit(request, on_delta=publish_delta)
    finally:
        if after_submit is not None:
            after_submit()
    result: GenerationResult | None = None
    first_token_seen = False
    with worker.cancel_watcher.watch(job_id, handle):
        for event in handle.events():
            if isinstance(event, GenerationResult):
                result = event
                continue
            if not first_token_seen:
                first_token_seen = True  # written with the next group, before the job's finish
                moment = datetime.fromtimestamp(event.time, UTC)
                worker.writes.soon(job_store.first_token_update(job_id, moment))
    if result is None:
        raise RuntimeError("the engine ended the request without a result")
    return outcome_of(result, engine.tags)


def outcome_of(result: GenerationResult, tags: ModelTags) -> JobOutcome:
    """Map an engine result to the job's final status and stored fields."""
    status = {"cancelled": JobStatus.CANCELLED, "error": JobStatus.FAILED}.get(
        result.finish_reason, JobStatus.SUCCEEDED
    )
    first_token_at = datetime.fromtimestamp(result.token_times[0], UTC) if result.token_times else None
    error = result.error or ("generation failed" if status is JobStatus.FAILED else None)
    scored = status is JobStatus.SUCCEEDED  # a cancelled or failed partial output says little
    return JobOutcome(
        status=status,
        content=result.content,
        reasoning=result.reasoning,
        finish_reason=result.finish_reason,
        error=error,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        reasoning_tokens=result.reasoning_tokens,
        ttft_s=result.ttft_s,
        e2e_s=result.e2e_s,
        first_token_at=first_token_at,
        tags=tags.as_dict(),
        quality=quality_signals(result).as_columns() if scored else None,
        token_times=tuple(result.token_times),
        tool_calls=tuple(call.as_dict() for call in result.tool_calls),
    )


def recover_jobs_of_lost_worker(
    sessions: orm.sessionmaker[orm.Session],
    hostname: str,
    enqueue: Enqueue,
    started_at: float | None = None,
) -> list[str]:
    """At worker start: jobs an earlier process of this worker (before `started_at`) left running go back."""
    recovered = []
    with sessions() as session:
        for job in job_store.running_jobs_of_worker(session, hostname):
            if (
                started_at is not None
                and job.started_at is not None
                and job.started_at.timestamp() >= started_at
            ):
                continue  # claimed by this process, whose first tasks may run before it is `ready`
            if requeue_or_give_up(session, job, enqueue) == "requeued":
                recovered.append(job.id)
    return recovered
