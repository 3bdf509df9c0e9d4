"""Per-process worker state (engines, cancel watcher) and the worker's start/stop hooks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from celery.signals import worker_ready, worker_shutdown
from flask import Flask, current_app
from sqlalchemy import orm

from app.batches import store as batch_store
from app.cache.store import announce_model_revision
from app.ops.served_models import announce_served_model
from app.profiles import Profile
from app.queue import send_watch
from app.services import services
from engine.revision import model_revision
from workers.answer_cache import AnswerCacheWriter, answer_cache_writer
from workers.cancel_watcher import CancelWatcher
from workers.engine_host import EngineHost
from workers.event_publisher import BatchedEventPublisher
from workers.gil import set_gil_switch_interval
from workers.grouped_writes import GroupedWrites
from workers.job_observer import MetricsAndLogObserver
from workers.job_runner import WorkerContext, recover_jobs_of_lost_worker
from workers.observability import start_worker_observability
from workers.recovery import worker_is_gone

if TYPE_CHECKING:
    from workers.engine_host import ServingEngine

log = logging.getLogger(__name__)

WORKER_EXTENSION_KEY = "gptoss_worker"
_lock = threading.Lock()


@dataclass
class WorkerState:
    """What a worker process holds besides the app's services, built on its first task (or at ready)."""

    host: EngineHost
    cancel_watcher: CancelWatcher
    publisher: BatchedEventPublisher
    store_answer: AnswerCacheWriter | None
    writes: GroupedWrites  # the jobs' claims, first tokens and finishes, many per transaction
    line_threads: ThreadPoolExecutor  # the lines of messages that carry several (job_runner.run_side_by_side)


@dataclass
class WorkerLife:
    """The worker's start time (a job it claimed before this belongs to a dead run) and stop hooks."""

    started_at: float
    stop_observability: Callable[[], None] | None = None
    state: WorkerState | None = None


def _life(app: Flask) -> WorkerLife:
    return app.extensions[WORKER_EXTENSION_KEY]


def _shared_state(app: Flask) -> WorkerState:
    """This process's engine host, cancel watcher, event publisher and answer cache, created on first use."""
    life = _life(app)
    with _lock:
        if life.state is None:
            found = services(app)
            profiles = found.profiles
            client = found.settings.redis_client()

            def announce(engine: ServingEngine) -> None:
                announce_served_model(client, engine.tags.profile, engine.tags.as_dict())
                revision = model_revision(profiles[engine.tags.profile].model, engine.tags.model_id)
                announce_model_revision(client, engine.tags.profile, revision)  # keys the response cache

            host = EngineHost(
                profiles,
                found.settings.model_cache_dir,
                pinned_profile=found.settings.profile,
                on_loaded=announce,
                engine_process=found.settings.engine_process,
                profiles_file=found.settings.profiles_path,
            )
            life.state = WorkerState(
                host,
                CancelWatcher(client),
                BatchedEventPublisher(found.events),
                answer_cache_writer(found.settings.cache, profiles, client),
                GroupedWrites(found.sessions, found.write_lock),
                # as wide as the batch: a worker never holds more lines than its slots (LaneOrder)
                ThreadPoolExecutor(_line_threads(profiles, found.settings.profile), "line"),
            )
        return life.state


def _line_threads(profiles: Mapping[str, Profile], pinned: str | None) -> int:
    served = profiles.get(pinned or "")
    return served.max_batch if served is not None else max(profile.max_batch for profile in profiles.values())


def worker_context(hostname: str) -> WorkerContext:
    """What run_job needs, inside a task's app context."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    state = _shared_state(app)
    found = services(app)
    watcher = state.cancel_watcher
    return WorkerContext(
        found.sessions,
        state.host.engine_for,
        watcher,
        hostname,
        state.publisher,
        observer=MetricsAndLogObserver(hostname),
        is_worker_gone=partial(worker_is_gone, watcher.client, found.settings.observability.heartbeat_ttl_s),
        store_answer=state.store_answer,
        write_lock=services(app).write_lock,
        enqueue=services(app).queue.enqueue,
        batch_job_ended=partial(watch_batch_if_done, found.sessions, found.celery),
        shared_writes=state.writes,
        line_threads=state.line_threads,
    )


def watch_batch_if_done(sessions: orm.sessionmaker[orm.Session], celery_app: Celery, batch_id: str) -> None:
    """The batch's last job has ended: check the batch now (finalize it) rather than at its next timed
    check (GPTOSS_BATCH_CHECK_INTERVAL_S). A failure only delays the batch to that check."""
    try:
        with sessions() as session:
            if batch_store.has_unfinished_jobs(session, batch_id):
                return
        send_watch(celery_app, batch_id)
    except Exception as exc:
        log.warning("batch %s: could not ask for its check now: %s", batch_id, exc)


def connect_worker_signals(app: Flask) -> None:
    """When the worker is ready: requeue jobs a dead run left behind and load the model in the background.

    Also sets the worker process's GIL switch interval (workers/gil.py)."""
    set_gil_switch_interval(services(app).settings.worker_gil_switch_ms)
    # before any task: a job this name claimed earlier than this belongs to a dead process
    life = app.extensions[WORKER_EXTENSION_KEY] = WorkerLife(started_at=time.time())

    @worker_ready.connect(weak=False)
    def _on_ready(sender: Any, **_: Any) -> None:
        host = _shared_state(app).host if isinstance(sender.pool, ThreadTaskPool) else None
        observability = None
        try:  # /metrics port and heartbeats (what /readyz looks for: a profile is ready once its model is)
            observability = start_worker_observability(app, sender, host, life.started_at)
            life.stop_observability = observability.stop
        except Exception:
            log.exception("could not start the worker's metrics and heartbeat")
        if host is not None:  # one process: loading now is after any fork

            def warm_up(host: EngineHost = host) -> None:
                host.warm_up()
                if observability is not None:
                    observability.beat()  # serving now: say so at once, not at the next heartbeat

            threading.Thread(target=warm_up, name="model-warm-up", daemon=True).start()
        try:
            with app.app_context():
                recovered = recover_jobs_of_lost_worker(
                    services(app).sessions,
                    sender.hostname,
                    services(app).queue.enqueue,
                    life.started_at,
                )
        except Exception:
            log.exception("could not check for jobs a previous run of %s left running", sender.hostname)
            return
        if recovered:
            log.warning("requeued %d job(s) left running by a previous run: %s", len(recovered), recovered)

    @worker_shutdown.connect(weak=False)
    def _on_shutdown(**_: Any) -> None:
        stop_observability, life.stop_observability = life.stop_observability, None
        if stop_observability is not None:
            stop_observability()
        state = life.state
        if state is not None:
            state.cancel_watcher.stop()
            state.host.shutdown()
            state.publisher.stop()  # after the engines: their jobs' last events
