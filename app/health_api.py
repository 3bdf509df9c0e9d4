"""Liveness and readiness: /healthz (the process answers), /readyz (DB, Redis, a worker per profile)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, jsonify

from app.db import db_session

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The API process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the DB and Redis answer and every profile's queue has a live worker; else 503."""
    checks: dict[str, Any] = {"database": _check_database(), "redis": _check_redis()}
    workers = _workers_by_queue() if checks["redis"] == "ok" else {}
    profiles = current_app.extensions["gptoss_profiles"]
    checks["workers"] = {name: workers.get(name, []) for name in profiles}
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
        current_app.extensions["gptoss_redis"].ping()
    except Exception as exc:
        return f"error: {exc.__class__.__name__}: {exc}"
    return "ok"


def _workers_by_queue() -> dict[str, list[str]]:
    """Ask live workers which queues they consume (one broadcast, READY_TIMEOUT_S to answer)."""
    inspect = current_app.extensions["celery"].control.inspect(timeout=current_app.config["READY_TIMEOUT_S"])
    try:
        replies = inspect.active_queues() or {}
    except Exception:
        return {}
    workers: dict[str, list[str]] = {}
    for hostname, queues in replies.items():
        for queue in queues:
            workers.setdefault(queue["name"], []).append(hostname)
    return workers
