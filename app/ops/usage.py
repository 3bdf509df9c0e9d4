"""Token usage and job counts per API key, from the stored jobs (GET /v1/usage, and /v1/stats for admins).

One GROUP BY (owner, profile, UTC day, status) summing the token columns; the few rows it returns are
folded into per-key totals here, so the numbers are exact whatever the window and work the same on
SQLite and Postgres. A job counts on the day it was submitted (created_at, UTC).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from app.models import Job, JobStatus

TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "reasoning_tokens")


@dataclass
class Tally:
    """Jobs by status and the tokens they used."""

    by_status: Counter[str] = field(default_factory=Counter)
    tokens: Counter[str] = field(default_factory=Counter)

    def add(self, status: str, jobs: int, tokens: dict[str, int]) -> None:
        self.by_status[status] += jobs
        self.tokens.update(tokens)

    def as_json(self) -> dict[str, Any]:
        prompt, completion = self.tokens["prompt_tokens"], self.tokens["completion_tokens"]
        return {
            "jobs": sum(self.by_status.values()),
            "by_status": {status.value: self.by_status[status] for status in JobStatus},
            "prompt_tokens": prompt,
            "completion_tokens": completion,  # reasoning included, as OpenAI counts it
            "reasoning_tokens": self.tokens["reasoning_tokens"],
            "total_tokens": prompt + completion,
        }


@dataclass
class KeyUsage:
    """One key's usage: totals, per profile and per day."""

    key_id: str | None  # None: jobs owned by nobody in particular (before keys, or single-user mode)
    total: Tally = field(default_factory=Tally)
    by_profile: dict[str, Tally] = field(default_factory=dict)
    by_day: dict[str, Tally] = field(default_factory=dict)

    def as_json(self, names: dict[str, str], detail: bool = True) -> dict[str, Any]:
        found = {"key_id": self.key_id, "name": names.get(self.key_id or ""), **self.total.as_json()}
        if detail:
            found["by_profile"] = {name: tally.as_json() for name, tally in sorted(self.by_profile.items())}
            found["by_day"] = {day: tally.as_json() for day, tally in sorted(self.by_day.items())}
        return found


def day_window(since: date | None, until: date | None) -> list[sa.ColumnElement[bool]]:
    """Jobs submitted from the start of `since` to the end of `until` (UTC days, both included)."""
    conditions = []
    if since is not None:
        conditions.append(Job.created_at >= datetime.combine(since, time(), UTC))
    if until is not None and until < date.max:
        conditions.append(Job.created_at < datetime.combine(until + timedelta(days=1), time(), UTC))
    return conditions


def utc_day(column: Any, dialect: str) -> sa.ColumnElement[str]:
    """The UTC date of a timestamp column as YYYY-MM-DD (SQLite stores UTC already, app/models.py)."""
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.strftime("%Y-%m-%d", column)


def usage_by_key(session: orm.Session, *conditions: sa.ColumnElement[bool]) -> list[KeyUsage]:
    """Each owner's usage over the jobs where `conditions` hold, keys in id order (no owner first)."""
    day = utc_day(Job.created_at, session.get_bind().dialect.name).label("day")
    sums = [sa.func.coalesce(sa.func.sum(getattr(Job, name)), 0).label(name) for name in TOKEN_COLUMNS]
    query = (
        sa.select(Job.owner, Job.profile, day, Job.status, sa.func.count().label("jobs"), *sums)
        .where(*conditions)
        .group_by(Job.owner, Job.profile, day, Job.status)
    )
    found: dict[str | None, KeyUsage] = {}
    for row in session.execute(query):
        usage = found.setdefault(row.owner, KeyUsage(row.owner))
        tokens = {name: int(getattr(row, name)) for name in TOKEN_COLUMNS}
        for tally in (
            usage.total,
            usage.by_profile.setdefault(row.profile, Tally()),
            usage.by_day.setdefault(row.day, Tally()),
        ):
            tally.add(row.status, row.jobs, tokens)
    return sorted(found.values(), key=lambda usage: usage.key_id or "")
