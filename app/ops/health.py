"""Liveness and readiness: /healthz (the process answers), /readyz (DB, Redis, a worker per profile)."""

from __future__ import annotations

from typing import Any

import redis
import sqlalchemy as sa
from flask import Blueprint, Response, jsonify, request

from app.db import db_session
from app.errors import ApiError
from app.ops.heartbeats import WorkerHeartbeat, live_workers_by_profile
from app.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The API process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the DB and Redis answer and every profile (or ?profile=) has a worker whose model has
    loaded (it can answer now; one still loading is listed, not counted); else 503."""
    checks: dict[str, Any] = {"database": _check_database(), "redis": _check_redis()}
    profiles = list(services().profiles)
    asked = request.args.get("profile")
    if asked is not None and asked not in profiles:
        raise ApiError(404, f"No profile '{asked}'; the profiles are {profiles}.", param="profile")
    workers = _live_workers(profiles) if checks["redis"] == "ok" else {p: [] for p in profiles}
    checks["workers"] = {profile: [w.name for w in beats if w.model_id] for profile, beats in workers.items()}
    checks["worker_heartbeats"] = {
        profile: [w.as_json() for w in beats] for profile, beats in workers.items()
    }
    considered = [asked] if asked is not None else profiles
    serving = [checks["workers"][profile] for profile in considered]
    ready = checks["database"] == "ok" and checks["redis"] == "ok" and all(serving)
    if ready:  # what a first submit needs in this process too: the tokenizers of the prompt budget
        for profile in considered:
            services().prepare_submits(profile)  # once, then cached; a model not on this machine is skipped
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
