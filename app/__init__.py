"""gptoss-batch API: a Flask app that queues generation jobs for per-profile Celery workers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask

from app.auth import init_auth
from app.cache.jobs import init_response_cache
from app.db import init_db
from app.errors import register_error_handlers
from app.jobs.events import JobEventLog, announcing_enqueue
from app.limits import init_rate_limits
from app.ops.observability import init_observability
from app.profiles import load_profiles
from app.queue import celery_init_app
from app.routing.load import init_routing
from app.settings import resolve_settings


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
        metrics,
        openapi,
    )
    from app.batches import files_views as files_api
    from app.batches import views as batches_api
    from app.chat import views as chat_api
    from app.gate_runs import views as gate_api
    from app.jobs import stream as events_api
    from app.jobs import views as jobs_api
    from app.ops import health as health_api
    from app.ops import profiles_views as profiles_api
    from app.ops import stats_views as stats_api

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
