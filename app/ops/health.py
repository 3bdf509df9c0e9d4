"""Liveness and readiness: /healthz (the process answers), /readyz (the API itself; each profile's
workers as a field, and ?profile= for one profile alone).

A load balancer in front of several API nodes asks /readyz: one GPU pool down must not pull every
API node. A client or a deploy script that needs a profile served asks /readyz?profile=NAME.
"""

from __future__ import annotations

from typing import Any, Literal

import redis
import sqlalchemy as sa
from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict

from app.db import db_session
from app.errors import ApiError
from app.ops.heartbeats import WorkerHeartbeat, live_workers_by_profile
from app.services import services

bp = Blueprint("health", __name__)

ProfileReadiness = Literal["ready", "not_ready"]


class ReadyQuery(BaseModel):
    """Query string of GET /readyz."""

    model_config = ConfigDict(extra="forbid")

    profile: str | None = None


@bp.get("/healthz")
def healthz() -> Response:
    """The API process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The API is ready when the DB and Redis answer and the profiles' prompt-budget tokenizers are loaded;
    `profiles` says which profiles a worker serves now (its model loaded). ?profile=NAME: that profile's."""
    query = ReadyQuery.model_validate(request.args.to_dict())
    profiles = list(services().profiles)
    if query.profile is not None and query.profile not in profiles:
        raise ApiError(404, f"No profile '{query.profile}'; the profiles are {profiles}.", param="profile")
    checks: dict[str, Any] = {"database": _check_database(), "redis": _check_redis()}
    workers = _live_workers(profiles) if checks["redis"] == "ok" else {p: [] for p in profiles}
    checks["workers"] = {profile: [w.name for w in beats if w.model_id] for profile, beats in workers.items()}
    checks["worker_heartbeats"] = {
        profile: [w.as_json() for w in beats] for profile, beats in workers.items()
    }
    api_ready = checks["database"] == "ok" and checks["redis"] == "ok"
    if api_ready:  # what a first submit needs in this process: the tokenizers of the prompt budget
        for profile in [query.profile] if query.profile is not None else profiles:
            services().prepare_submits(profile)  # once, then cached; a model not on this machine is skipped
    served: dict[str, ProfileReadiness] = {
        profile: "ready" if api_ready and checks["workers"][profile] else "not_ready" for profile in profiles
    }
    ready = served[query.profile] == "ready" if query.profile is not None else api_ready
    body = jsonify(status="ready" if ready else "not_ready", checks=checks, profiles=served)
    return body, 200 if ready else 503


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
