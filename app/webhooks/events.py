"""The events of finished jobs and batches, found by scanning their end times (an outbox read from the
rows themselves), and one delivery row per (event, webhook) that wants it.

Each source (jobs by finished_at, batches by the time of their final status) is read from the latest
end time the last scan saw, less the source's overlap: a row whose end time was taken before a later
one's but committed after it still falls in the next window. A job's end commits at once; a batch's
end time is taken before its result files are written, hence its longer overlap. Re-reading is
harmless: an event's id is derived from its type and row, and a delivery is unique on (event id,
webhook id), so a second scan inserts nothing. A scan never reads further back than the oldest
webhook's creation (the first scan starts there); a webhook never gets events that ended before it
was created.

Jobs of a batch (its lines) make no job.* events: the batch's own event covers them. Nor do
release-gate jobs, or responses made with `store: false`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql, sqlite

from app.batches.models import Batch, BatchStatus
from app.batches.store import live_request_counts
from app.batches.views import batch_json
from app.jobs.render import job_json
from app.models import FINISHED_STATUSES, Job, JobStatus, utcnow
from app.webhooks.models import DeliveryStatus, Webhook, WebhookDelivery, WebhookScan
from app.webhooks.owners import owner_of

JOBS_OVERLAP = timedelta(seconds=10)  # longer than a finished job takes to commit, and clock skew
BATCHES_OVERLAP = timedelta(minutes=15)  # longer than a batch takes to write its result files
SCAN_PAGE = 500  # rows read per transaction

JOB_EVENTS = {
    JobStatus.SUCCEEDED: "job.completed",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}
BATCH_EVENTS = {
    BatchStatus.COMPLETED: "batch.completed",
    BatchStatus.FAILED: "batch.failed",
    BatchStatus.EXPIRED: "batch.expired",
    BatchStatus.CANCELLED: "batch.cancelled",
}


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    at: datetime
    owner: str | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class Source:
    """A table whose rows end in events: which rows qualify, when one ended, and its event."""

    name: str
    model: type[Any]
    ended: Any  # the column or expression of its end time
    qualifies: sa.ColumnElement[bool]
    end_of: Callable[[Any], datetime]
    overlap: timedelta
    event_of: Callable[[orm.Session, Any], Event | None]


def event_id(event_type: str, subject_id: str) -> str:
    """The same id every time the scan meets the same end of the same row."""
    return "evt_" + hashlib.sha256(f"{event_type}:{subject_id}".encode()).hexdigest()[:32]


def event(event_type: str, at: datetime, owner: str | None, data: dict[str, Any]) -> Event:
    """An event whose payload is shaped as OpenAI's webhook events are."""
    id_ = event_id(event_type, data["id"])
    payload = {
        "id": id_,
        "object": "event",
        "type": event_type,
        "created_at": int(at.timestamp()),
        "data": data,
    }
    return Event(id_, event_type, at, owner, payload)


def job_ended(job: Job) -> datetime:
    assert job.finished_at is not None  # the scan reads finished jobs only
    return job.finished_at


def job_event(session: orm.Session, job: Job) -> Event | None:
    if (job.request.get("response") or {}).get("store") is False:
        return None  # a response nobody may see again
    return event(JOB_EVENTS[JobStatus(job.status)], job_ended(job), owner_of(job), job_json(job))


def batch_ended(batch: Batch) -> datetime:
    at = batch.completed_at or batch.failed_at or batch.cancelled_at or batch.expired_at
    assert at is not None  # a batch in a final status has the time it reached it
    return at


def batch_event(session: orm.Session, batch: Batch) -> Event:
    counts = live_request_counts(session, [batch])[batch.id]
    event_type = BATCH_EVENTS[BatchStatus(batch.status)]
    return event(event_type, batch_ended(batch), owner_of(batch), batch_json(batch, counts))


def sources() -> tuple[Source, ...]:
    ended = sa.func.coalesce(Batch.completed_at, Batch.failed_at, Batch.cancelled_at, Batch.expired_at)
    jobs = sa.and_(Job.status.in_(FINISHED_STATUSES), Job.batch_id.is_(None), Job.is_gate.is_(False))
    batches = Batch.status.in_(list(BATCH_EVENTS))
    return (
        Source("jobs", Job, Job.finished_at, jobs, job_ended, JOBS_OVERLAP, job_event),
        Source("batches", Batch, ended, batches, batch_ended, BATCHES_OVERLAP, batch_event),
    )


def record_events(sessions: orm.sessionmaker[orm.Session]) -> int:
    """Scan every source for events since its last scan; a delivery row for each webhook that wants one.
    How many events were read (0 at once where no webhook exists)."""
    with sessions() as session:
        webhooks = list(session.scalars(sa.select(Webhook)))
    if not webhooks:
        return 0
    return sum(scan_source(sessions, source, webhooks) for source in sources())


def scan_source(sessions: orm.sessionmaker[orm.Session], source: Source, webhooks: list[Webhook]) -> int:
    """Read the source's rows that ended since its last scan, SCAN_PAGE per transaction."""
    with sessions() as session:
        scanned = session.get(WebhookScan, source.name)
    oldest = min(webhook.created_at for webhook in webhooks)  # no webhook wants what ended before it
    since = max(scanned.scanned_to, oldest) if scanned else oldest
    after: tuple[datetime, str] = (since - source.overlap, "")
    wanted = whose_rows(source, webhooks)
    seen = 0
    while True:
        with sessions() as session:
            rows = session.scalars(page_query(source, after).where(wanted)).all()
            if not rows:
                return seen
            events = [found for row in rows if (found := source.event_of(session, row)) is not None]
            insert_deliveries(session, events, webhooks)
            last = rows[-1]
            after = (source.end_of(last), last.id)
            session.merge(WebhookScan(source=source.name, scanned_to=max(after[0], since)))
            session.commit()
        seen += len(rows)


def whose_rows(source: Source, webhooks: list[Webhook]) -> sa.ColumnElement[bool]:
    """The rows some webhook may want by owner (see `wants`): every row where one has no owner, else
    those of the webhooks' owners, so each pass builds no event that nobody would get."""
    owners = {webhook.owner for webhook in webhooks}
    return sa.true() if None in owners else source.model.owner.in_(owners)


def page_query(source: Source, after: tuple[datetime, str]) -> sa.Select[Any]:
    """The next SCAN_PAGE rows in (end time, id) order after `after`."""
    model, at, id_ = source.model, after[0], after[1]
    later = sa.or_(source.ended > at, sa.and_(source.ended == at, model.id > id_))
    query = sa.select(model).where(source.qualifies, source.ended.is_not(None), later)
    return query.order_by(source.ended, model.id).limit(SCAN_PAGE)


def wants(webhook: Webhook, found: Event) -> bool:
    """Whether the webhook subscribed to this event, of its owner (or of anyone: owner None), after it
    was registered."""
    mine = webhook.owner is None or webhook.owner == found.owner
    return mine and found.type in webhook.events and found.at >= webhook.created_at


def insert_deliveries(session: orm.Session, events: list[Event], webhooks: list[Webhook]) -> None:
    """One pending delivery per (event, webhook) that wants it, due now; ones already there are kept."""
    now = utcnow()
    rows = [
        {"webhook_id": webhook.id, "event_id": found.id, "event_type": found.type, "payload": found.payload,
         "status": DeliveryStatus.PENDING.value, "created_at": now, "next_attempt_at": now}
        for found in events
        for webhook in webhooks
        if wants(webhook, found)
    ]  # fmt: skip
    if not rows:
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(WebhookDelivery.__table__).on_conflict_do_nothing(
        index_elements=["event_id", "webhook_id"]
    )
    session.execute(insert, rows)
