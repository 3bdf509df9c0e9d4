"""GET /v1/stats: job counts, error rate and latency percentiles from the stored jobs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from sqlalchemy import orm

from app.db import db_session
from app.keys import store as key_store
from app.keys.caller import current_caller
from app.models import Job
from app.ops.stats import job_stats, window
from app.ops.usage import usage_by_key
from app.services import services

bp = Blueprint("stats", __name__, url_prefix="/v1/stats")


class StatsQuery(BaseModel):
    """Query string of GET /v1/stats."""

    model_config = ConfigDict(extra="forbid")

    profile: str | None = None
    since: datetime | None = None  # unix seconds or an ISO 8601 date/time (UTC when no zone is given)
    include_gate: bool = False  # count the release gate's own jobs too

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str | None, info: ValidationInfo) -> str | None:
        profiles = (info.context or {}).get("profiles", {})
        if value is not None and value not in profiles:
            raise ValueError(f"unknown profile {value!r}; known: {', '.join(profiles)}")
        return value

    @field_validator("since")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:59-01:00 is past year 9999 in UTC
            raise ValueError("since is out of the range of dates (years 1 to 9999, in UTC)") from None


@bp.get("")
def stats() -> Response:
    """Counts by status, error rate and p50/p95 of queue wait, TTFT, E2E and tokens/s."""
    context: dict[str, Any] = {"profiles": services().profiles}
    query = StatsQuery.model_validate(request.args.to_dict(), context=context)
    max_jobs = services().settings.observability.stats_max_jobs
    caller = current_caller()
    visible = caller.sees(Job.owner)  # a non-admin key's stats are of its own jobs
    with db_session() as session:
        found = job_stats(session, query.profile, query.since, max_jobs, query.include_gate, visible)
        if caller.admin:
            found["usage_by_key"] = key_usage(session, query)
        return jsonify(found)


def key_usage(session: orm.Session, query: StatsQuery) -> list[dict[str, Any]]:
    """Each key's tokens and jobs by status over the stats' window (an admin's view; all of it, not
    only the newest STATS_MAX_JOBS)."""
    names = key_store.key_directory(session, services().settings.reliability.api_keys)
    conditions = window(query.profile, query.since, query.include_gate)
    return [usage.as_json(names, detail=False) for usage in usage_by_key(session, *conditions)]
