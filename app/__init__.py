"""gptoss-batch API: a Flask app that queues generation jobs for per-profile Celery workers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from typing import Any

from flask import Flask
from sqlalchemy import orm

from app import metrics, openapi
from app.auth import KeyRing, init_auth
from app.batches import files_views
from app.batches import views as batches_views
from app.batches.storage import make_file_storage
from app.cache.store import ResponseCache
from app.chat import tokenize_views
from app.chat import views as chat_views
from app.console import views as console_views
from app.db import make_engine, write_lock_for
from app.errors import register_error_handlers
from app.gate_runs import views as gate_runs_views
from app.http import refuse_long_urls
from app.jobs import stream as job_events_views
from app.jobs import views as jobs_views
from app.jobs.budget import token_counter
from app.jobs.cached import CachedJobs
from app.jobs.defaults import ProfileDefaults
from app.jobs.enqueue import JobQueue
from app.jobs.events import JobEventLog
from app.jobs.grouped import SubmitGroups
from app.jobs.log import configure_job_log
from app.limits import add_rate_limit_headers
from app.ops import health, profiles_views, stats_views, usage_views
from app.profiles import load_profiles
from app.queue import batch_slots_for, make_celery
from app.responses import views as responses_views
from app.routing.load import make_router
from app.services import EXTENSION_KEY, Services
from app.settings import Settings, resolve_settings
from app.webhooks import views as webhooks_views

BLUEPRINTS = (
    jobs_views.bp, job_events_views.bp, chat_views.bp, responses_views.bp, tokenize_views.bp, files_views.bp,
    batches_views.bp, profiles_views.bp, health.bp, stats_views.bp, usage_views.bp, gate_runs_views.bp,
    webhooks_views.bp, console_views.bp,
    metrics.bp, openapi.bp,
)  # fmt: skip


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API: defaults, then env, then `config`, read once into Settings; then its services."""
    app = Flask(__name__)
    config = resolve_settings(config)
    settings = Settings.from_config(config)  # the one read; SettingsError names a bad variable
    app.config.from_mapping(config)  # Flask's own keys (MAX_CONTENT_LENGTH, TESTING); nothing else reads it
    profiles = load_profiles(settings.profiles_path)
    client = settings.redis_client()
    # SSE readers block on XREAD for up to a heartbeat, so their client needs a longer socket timeout.
    events = JobEventLog(settings.redis_client(settings.sse_heartbeat_s + 10), ttl_s=settings.events_ttl_s)
    db_engine = make_engine(settings.database_url)
    sessions = orm.sessionmaker(db_engine, expire_on_commit=False)
    served = profiles.get(settings.profile or "")  # a model worker's profile; None in the API
    batch_slots = batch_slots_for(served.max_batch, settings.batches.reserved_slots) if served else None
    celery_app = make_celery(app, settings, list(profiles), batch_slots)
    job_queue = JobQueue(celery_app, events, client)
    keys = KeyRing(settings.reliability.api_keys, sessions)
    app.extensions[EXTENSION_KEY] = Services(
        settings=settings,
        profiles=profiles,
        sampling_defaults=ProfileDefaults(profiles, settings.model_cache_dir),
        redis=client,
        events=events,
        db_engine=db_engine,
        sessions=sessions,
        keys=keys,
        write_lock=write_lock_for(settings.database_url),
        files=make_file_storage(settings.batches.file_storage, settings.batches.files_dir, db_engine),
        celery=celery_app,
        queue=job_queue,
        submits=SubmitGroups(sessions, job_queue),
        router=make_router(settings.profiles_path, profiles, client, sessions),
        cached_jobs=CachedJobs(ResponseCache(client, settings.cache), events)
        if settings.cache.enabled
        else None,
        metrics_registry=metrics.api_metrics_registry(client, list(profiles)),
        metrics_multiprocess_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
        prepare_submits=partial(token_counter, app),
    )
    configure_job_log()
    metrics.time_requests(app)
    app.after_request(add_rate_limit_headers)
    app.before_request(refuse_long_urls)
    init_auth(app, keys)
    register_error_handlers(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
