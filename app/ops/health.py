"""Liveness and readiness: /healthz (the process answers), /readyz (DB, Redis, a worker per profile)."""

from __future__ import annotations

from typing import Any

import redis
import sqlalchemy as sa
from flask import Blueprint, Response, jsonify

from app.db import db_session
from app.ops.heartbeats import WorkerHeartbeat, live_workers_by_profile
from app.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The API process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the DB and Redis answer and every profile has a worker with a live heartbeat; else 503."""
    checks: dict[str, Any] = {"database": _check_database(), "redis": _check_redis()}
    profiles = list(services().profiles)
    workers = _live_workers(profiles) if checks["redis"] == "ok" else {p: [] for p in profiles}
    checks["workers"] = {profile: [w.name for w in beats] for profile, beats in workers.items()}
    checks["worker_heartbeats"] = {
        profile: [w.as_json() for w in beats] for profile, beats in workers.items()
    }
    ready = checks["database"] == "ok" and checks["redis"] == "ok" and all(checks["workers"].values())
    return jsonify(status="ready" if ready else "not_ready", checks=checks), 200 if ready else 503


def _check_database() -> str:
    try:
        with db_session() as session:
            session.execute(sa.text("SELECT 1"))
    except Exception as exc:
        return f"error: {exc.__class__.__name__}: {exc}"
    return "ok"


def _check_redis() -> str:
    try:
        services().redis.ping()
    except Exception as exc:
        return f"error: {exc.__class__.__name__}: {exc}"
    return "ok"


def _live_workers(profiles: list[str]) -> dict[str, list[WorkerHeartbeat]]:
    """Each profile's workers whose heartbeat key has not expired (see app/ops/heartbeats.py)."""
    try:
        return live_workers_by_profile(services().redis, profiles)
    except redis.RedisError:
        return {profile: [] for profile in profiles}
