"""What a process holds once it has started: its settings, profiles, clients, queue and router, typed.

create_app (app/__init__.py) builds one `Services` and keeps it at app.extensions["gptoss"]; views,
tasks and the gate read it with `services()`. The classes it names live in the packages above
this module, so it imports them for typing only: the object is built at the top, in create_app.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

if TYPE_CHECKING:
    import redis
    import sqlalchemy as sa
    from celery import Celery
    from prometheus_client import CollectorRegistry
    from sqlalchemy import orm

    from app.auth import KeyRing
    from app.batches.storage import FileStorage
    from app.jobs.cached import CachedJobs
    from app.jobs.defaults import ProfileDefaults
    from app.jobs.enqueue import JobQueue
    from app.jobs.events import JobEventLog
    from app.jobs.grouped import SubmitGroups
    from app.profiles import Profile
    from app.routing.auto import ProfileRouter
    from app.settings import Settings

EXTENSION_KEY = "gptoss"


@dataclass
class Services:
    settings: Settings
    profiles: dict[str, Profile]
    sampling_defaults: ProfileDefaults  # a job's temperature, top_p, reasoning_effort where it names none
    redis: redis.Redis  # short timeouts: limits, cancel signals, heartbeats, the cache
    events: JobEventLog  # per-job event streams (a client with a socket timeout above an SSE heartbeat)
    db_engine: sa.Engine
    sessions: orm.sessionmaker[orm.Session]
    keys: KeyRing  # the API keys a request may carry (app/auth.py), also read by the console's sign-in
    write_lock: AbstractContextManager[Any]  # SQLite: one writer at a time in this process (app/db.py)
    files: FileStorage  # where files' bytes live (GPTOSS_FILE_STORAGE), for views and workers alike
    celery: Celery
    queue: JobQueue  # the one way a job reaches its profile's queue (the `queued` event, the log line)
    submits: SubmitGroups  # a submit's insert and enqueue, shared with the submits arriving beside it
    router: ProfileRouter
    cached_jobs: CachedJobs | None  # None: the response cache is off
    metrics_registry: CollectorRegistry  # the API's collectors read at scrape time
    metrics_multiprocess_dir: str | None  # PROMETHEUS_MULTIPROC_DIR under gunicorn
    # loads what a profile's first submit needs in this process (its prompt-budget tokenizer), once
    prepare_submits: Callable[[str], object] = lambda profile: None
    openapi_document: dict[str, Any] | None = None  # built on the first GET /openapi.json

    @property
    def revoke(self) -> Callable[[str], None]:
        return self.celery.control.revoke

    @property
    def profile_names(self) -> list[str]:
        return list(self.profiles)


def services(app: Flask | None = None) -> Services:
    """The services of `app`, else of the current app."""
    return (app or current_app).extensions[EXTENSION_KEY]
