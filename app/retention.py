"""Retention: a finished thing's expiry, and the 404 that says it expired.

Each kind computes when one of its rows expires from RETENTION_* (app/settings.py) and its own times:
a job at its finished_at + RETENTION_JOBS_S (app/jobs/store.py), a file at its own expires_at
(OpenAI's expires_after on upload) or else its created_at + RETENTION_FILES_S for uploads and
RETENTION_BATCH_OUTPUTS_S for a batch's output and error files (app/batches/files.py), a batch at
the time it ended + RETENTION_BATCHES_S (app/batches/store.py). Unfinished jobs and batches never
expire; a period of 0 keeps that kind for ever.

Past that moment the API answers 404 "<Kind> <id> expired at <time>" at once, whether or not the
purge (workers/retention.py, run by celery beat) has deleted the row yet. The purge leaves a
tombstone (the id and when it expired) so that the answer stays the same afterwards; tombstones
are purged in turn TOMBSTONE_KEEP after, and the id then answers the plain "No such ..." 404.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import orm

from app.errors import ApiError
from app.keys.caller import Caller
from app.models import Tombstone, utcnow

RowT = TypeVar("RowT")

TOMBSTONE_KEEP = timedelta(days=30)


def after(start: datetime | None, period_s: int) -> datetime | None:
    """`start` + the period; None (never) for a period of 0 or no start."""
    if start is None or period_s <= 0:
        return None
    return start + timedelta(seconds=period_s)


def cutoff(period_s: int, now: datetime) -> datetime | None:
    """What started before this has expired; None when the period is 0 (kept for ever)."""
    return now - timedelta(seconds=period_s) if period_s > 0 else None


def expired_error(kind: str, row_id: str, expired_at: datetime, param: str) -> ApiError:
    moment = expired_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    message = f"{kind} {row_id} expired at {moment} and is no longer available."
    return ApiError(404, message, param=param, code=f"{kind.lower()}_expired")


def get_unexpired_or_404(
    session: orm.Session,
    model: type[RowT],
    row_id: str,
    missing: ApiError,
    expires_at: Callable[[RowT], datetime | None],
    kind: str,
    caller: Caller,
) -> RowT:
    """The caller's row with this id, else 404: "expired" for one past its expiry or purged (a
    tombstone of the caller's), `missing` for an id never seen or another key's."""
    column: Any = model.id  # type: ignore[attr-defined]
    owner: Any = model.owner  # type: ignore[attr-defined]
    row = session.scalar(sa.select(model).where(column == row_id, caller.sees(owner)))
    expired_at = expired_since(session, row_id, row, expires_at, caller)
    if expired_at is not None:
        raise expired_error(kind, row_id, expired_at, missing.param or "id")
    if row is None:
        raise missing
    return row


def expired_since(
    session: orm.Session,
    row_id: str,
    row: RowT | None,
    expires_at: Callable[[RowT], datetime | None],
    caller: Caller,
) -> datetime | None:
    """When the row expired, if it has by now: its own expiry, or, once it was purged, its tombstone's
    (the caller's only: another key's purged id is as unknown as one never made)."""
    if row is not None:
        when = expires_at(row)
    else:
        visible = sa.select(Tombstone).where(Tombstone.id == row_id, caller.sees(Tombstone.owner))
        tombstone = session.scalar(visible)
        when = tombstone.expired_at if tombstone is not None else None
    return when if when is not None and when <= utcnow() else None
