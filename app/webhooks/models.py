"""Typed SQLAlchemy models of webhooks: the registrations, one delivery per (event, webhook), every
attempt of a delivery, and how far the event scan has read (workers/webhooks.py)."""

from __future__ import annotations

import base64
import enum
import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from app.models import Base, UTCDateTime, time_ordered_id, utcnow

EVENT_TYPES = (
    "job.completed", "job.failed", "job.cancelled",
    "batch.completed", "batch.failed", "batch.expired", "batch.cancelled",
)  # fmt: skip
SECRET_PREFIX = "whsec_"  # Standard Webhooks' prefix; the rest is the key in base64


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # to be tried at next_attempt_at
    DELIVERED = "delivered"  # a 2xx answered
    FAILED = "failed"  # given up: RETRY_FOR_S after the first attempt, or the host is no longer allowed


def new_webhook_id() -> str:
    return time_ordered_id("wh_", 6)


def new_delivery_id() -> str:
    return time_ordered_id("whdel_", 6)


def new_attempt_id() -> str:
    return time_ordered_id("whatt_", 6)


def new_secret() -> str:
    """24 random bytes in base64 after `whsec_`, as Standard Webhooks' libraries make them."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


class Webhook(Base):
    """A URL that receives the events of its owner's jobs and batches (every owner's where owner is None)."""

    __tablename__ = "webhooks"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(40), primary_key=True, default=new_webhook_id)
    owner: orm.Mapped[str | None] = orm.mapped_column(sa.String(64), index=True)
    url: orm.Mapped[str] = orm.mapped_column(sa.String(2048))
    events: orm.Mapped[list[str]] = orm.mapped_column(sa.JSON)
    secret: orm.Mapped[str] = orm.mapped_column(sa.String(64), default=new_secret)
    created_at: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook: its payload as sent, and where its delivery stands."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (sa.UniqueConstraint("event_id", "webhook_id", name="uq_webhook_deliveries_event_id"),)

    id: orm.Mapped[str] = orm.mapped_column(sa.String(40), primary_key=True, default=new_delivery_id)
    webhook_id: orm.Mapped[str] = orm.mapped_column(sa.String(40), index=True)
    event_id: orm.Mapped[str] = orm.mapped_column(sa.String(40))
    event_type: orm.Mapped[str] = orm.mapped_column(sa.String(32))
    payload: orm.Mapped[dict[str, Any]] = orm.mapped_column(sa.JSON)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(16), default=DeliveryStatus.PENDING)
    attempts: orm.Mapped[int] = orm.mapped_column(default=0, server_default="0")
    created_at: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime, index=True)
    first_attempt_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)
    finished_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)


class WebhookAttempt(Base):
    """One POST of a delivery: the status code that answered, or why none did."""

    __tablename__ = "webhook_attempts"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(40), primary_key=True, default=new_attempt_id)
    webhook_id: orm.Mapped[str] = orm.mapped_column(sa.String(40), index=True)
    delivery_id: orm.Mapped[str] = orm.mapped_column(sa.String(40))
    event_id: orm.Mapped[str] = orm.mapped_column(sa.String(40))
    event_type: orm.Mapped[str] = orm.mapped_column(sa.String(32))
    attempt: orm.Mapped[int]
    status_code: orm.Mapped[int | None]
    error: orm.Mapped[str | None] = orm.mapped_column(sa.String(500))
    delivery_status: orm.Mapped[str] = orm.mapped_column(sa.String(16))  # the delivery's after this attempt
    started_at: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime)
    duration_s: orm.Mapped[float]


class WebhookScan(Base):
    """How far the event scan has read each source ("jobs", "batches"): the latest end time it saw."""

    __tablename__ = "webhook_scans"

    source: orm.Mapped[str] = orm.mapped_column(sa.String(16), primary_key=True)
    scanned_to: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime)
