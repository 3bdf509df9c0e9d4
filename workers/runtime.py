"""Per-process worker state (engines, cancel watcher) and the worker's start/stop hooks."""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from celery.signals import worker_ready, worker_shutdown
from flask import Flask, current_app

from app.cache.store import announce_model_revision
from app.db import session_factory
from app.ops.served_models import announce_served_model
from app.ops.settings import ObservabilitySettings
from engine.revision import model_revision
from workers.answer_cache import answer_cache_writer
from workers.cancel_watcher import CancelWatcher
from workers.engine_host import EngineHost
from workers.event_publisher import BatchedEventPublisher
from workers.gil import set_gil_switch_interval
from workers.job_observer import MetricsAndLogObserver
from workers.job_runner import WorkerContext, recover_jobs_of_lost_worker
from workers.observability import start_worker_observability
from workers.recovery import worker_is_gone

if TYPE_CHECKING:
    from workers.engine_host import ServingEngine

log = logging.getLogger(__name__)

_lock = threading.Lock()


def _shared_state(app: Flask) -> tuple[EngineHost, CancelWatcher]:
    """This process's engine host and cancel watcher, created on first use."""
    with _lock:
        state = app.extensions.get("gptoss_worker_state")
        if state is None:
            profiles = app.extensions["gptoss_profiles"]
            model_cache = Path(app.config["DATA_DIR"]).resolve() / "models"
            client = redis.Redis.from_url(app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5)

            def announce(engine: ServingEngine) -> None:
                announce_served_model(client, engine.tags.profile, engine.tags.as_dict())
                revision = model_revision(profiles[engine.tags.profile].model, engine.tags.model_id)
                announce_model_revision(client, engine.tags.profile, revision)  # keys the response cache

            host = EngineHost(
                profiles,
                model_cache,
                pinned_profile=app.config["PROFILE"],
                on_loaded=announce,
                engine_process=bool(app.config["ENGINE_PROCESS"]),
            )
            state = app.extensions["gptoss_worker_state"] = (host, CancelWatcher(client))
            app.extensions["gptoss_answer_cache"] = answer_cache_writer(app, client)
            app.extensions["gptoss_event_publisher"] = BatchedEventPublisher(app.extensions["gptoss_events"])
        return state


def worker_context(hostname: str) -> WorkerContext:
    """What run_job needs, inside a task's app context."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    host, watcher = _shared_state(app)
    settings = ObservabilitySettings.from_config(app.config)
    return WorkerContext(
        session_factory(),
        host.engine_for,
        watcher,
        hostname,
        app.extensions["gptoss_event_publisher"],
        observer=MetricsAndLogObserver(hostname),
        is_worker_gone=partial(worker_is_gone, watcher.client, settings.heartbeat_ttl_s),
        store_answer=app.extensions["gptoss_answer_cache"],
        write_lock=app.extensions["gptoss_db_write_lock"],
        enqueue=app.extensions["gptoss_enqueue"],
    )


def connect_worker_signals(app: Flask) -> None:
    """When the worker is ready: requeue jobs a dead run left behind and load the model in the background.

    Also sets the worker process's GIL switch interval (workers/gil.py)."""
    set_gil_switch_interval(float(app.config["WORKER_GIL_SWITCH_MS"]))
    # before any task: a job this name claimed earlier than this belongs to a dead process
    app.extensions["gptoss_worker_started_at"] = time.time()

    @worker_ready.connect(weak=False)
    def _on_ready(sender: Any, **_: Any) -> None:
        host = None
        if isinstance(sender.pool, ThreadTaskPool):  # one process: loading now is after any fork
            host = _shared_state(app)[0]
            threading.Thread(target=host.warm_up, name="model-warm-up", daemon=True).start()
        try:  # /metrics port and heartbeats (what /readyz looks for)
            app.extensions["gptoss_worker_observability"] = start_worker_observability(app, sender, host)
        except Exception:
            log.exception("could not start the worker's metrics and heartbeat")
        try:
            with app.app_context():
                recovered = recover_jobs_of_lost_worker(
                    session_factory(),
                    sender.hostname,
                    app.extensions["gptoss_enqueue"],
                    app.extensions["gptoss_worker_started_at"],
                )
        except Exception:
            log.exception("could not check for jobs a previous run of %s left running", sender.hostname)
            return
        if recovered:
            log.warning("requeued %d job(s) left running by a previous run: %s", len(recovered), recovered)

    @worker_shutdown.connect(weak=False)
    def _on_shutdown(**_: Any) -> None:
        stop_observability = app.extensions.pop("gptoss_worker_observability", None)
        if stop_observability is not None:
            stop_observability()
        state = app.extensions.get("gptoss_worker_state")
        if state is not None:
            state[1].stop()
            state[0].shutdown()
            app.extensions["gptoss_event_publisher"].stop()  # after the engines: their jobs' last events
