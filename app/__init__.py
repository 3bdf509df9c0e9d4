"""gptoss-batch API: a Flask app that queues generation jobs for per-profile Celery workers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask

from app.auth import init_auth
from app.cached_jobs import init_response_cache
from app.config import resolve_settings
from app.db import init_db
from app.errors import register_error_handlers
from app.job_events import JobEventLog, announcing_enqueue
from app.observability import init_observability
from app.profiles import load_profiles
from app.rate_limits import init_rate_limits
from app.routing_load import init_routing
from workers.celery_app import celery_init_app


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API: defaults, then env, then `config`; profiles, DB, Redis and Celery wired in."""
    app = Flask(__name__)
    app.config.from_mapping(resolve_settings(config))
    app.extensions["gptoss_profiles"] = load_profiles(app.config["PROFILES"])
    app.extensions["gptoss_redis"] = redis.Redis.from_url(
        app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5
    )
    # SSE readers block on XREAD for up to a heartbeat, so their client needs a longer socket timeout.
    events_client = redis.Redis.from_url(
        app.config["REDIS_URL"],
        socket_connect_timeout=2,
        socket_timeout=float(app.config["SSE_HEARTBEAT_S"]) + 10,
    )
    app.extensions["gptoss_events"] = JobEventLog(events_client, ttl_s=int(app.config["EVENTS_TTL_S"]))
    init_db(app)
    init_routing(app)
    init_response_cache(app)
    celery_init_app(app)
    app.extensions["gptoss_enqueue"] = announcing_enqueue(
        app.extensions["gptoss_enqueue"], app.extensions["gptoss_events"]
    )
    init_observability(app)
    init_auth(app)  # before the limits, which count per API key
    init_rate_limits(app)
    register_error_handlers(app)

    from app import (
        batches_api,
        chat_api,
        events_api,
        files_api,
        gate_api,
        health_api,
        jobs_api,
        metrics,
        openapi,
        profiles_api,
        stats_api,
    )

    app.register_blueprint(jobs_api.bp)
    app.register_blueprint(events_api.bp)
    app.register_blueprint(chat_api.bp)
    app.register_blueprint(files_api.bp)
    app.register_blueprint(batches_api.bp)
    app.register_blueprint(profiles_api.bp)
    app.register_blueprint(health_api.bp)
    app.register_blueprint(stats_api.bp)
    app.register_blueprint(gate_api.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(openapi.bp)
    return app
