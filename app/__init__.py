"""gptoss-batch API: a Flask app that queues generation jobs for per-profile Celery workers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask

from app.config import resolve_settings
from app.db import init_db
from app.errors import register_error_handlers
from app.profiles import load_profiles
from workers.celery_app import celery_init_app


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API: defaults, then env, then `config`; profiles, DB, Redis and Celery wired in."""
    app = Flask(__name__)
    app.config.from_mapping(resolve_settings(config))
    app.extensions["gptoss_profiles"] = load_profiles(app.config["PROFILES"])
    app.extensions["gptoss_redis"] = redis.Redis.from_url(
        app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5
    )
    init_db(app)
    celery_init_app(app)
    register_error_handlers(app)

    from app import health_api, jobs_api, profiles_api

    app.register_blueprint(jobs_api.bp)
    app.register_blueprint(profiles_api.bp)
    app.register_blueprint(health_api.bp)
    return app
