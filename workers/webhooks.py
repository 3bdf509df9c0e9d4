"""The webhook sender: records the events of finished jobs and batches (app/webhooks/events.py), then
POSTs each due delivery, signed (app/webhooks/signing.py), and records every attempt.

Celery beat runs it every WEBHOOK_INTERVAL_S on the batch worker's queue (it loads no model); a Redis
lock keeps it to one pass at a time. An attempt is a 2xx (delivered), or anything else: another status
(redirects are not followed), a connection error or a timeout (WEBHOOK_TIMEOUT_S). Then the next try
waits WEBHOOK_FIRST_RETRY_S times 1, 6, 24, 120, 360, 720, then 1440 each time (5 s, 30 s, 2 min,
10 min, 30 min, 1 h, then every 2 h by default) until WEBHOOK_RETRY_FOR_S after the first attempt;
the last try falls at that time, after which the delivery is failed. A host the operator no longer
allows (checked before every attempt, on the addresses it resolves to now) fails it at once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa
from celery import shared_task
from flask import Flask, current_app
from sqlalchemy import orm

from app.models import utcnow
from app.queue import WEBHOOKS_TASK
from app.services import services
from app.settings import WebhookSettings
from app.webhooks.events import record_events
from app.webhooks.hosts import Resolver, host_refusal, resolve
from app.webhooks.models import DeliveryStatus, Webhook, WebhookAttempt, WebhookDelivery
from app.webhooks.signing import signed_headers

log = logging.getLogger(__name__)

LOCK_KEY = "gptoss:webhooks:lock"
LOCK_HOLD_S = 300  # longer than a pass: SEND_BUDGET_S plus one attempt's timeout
SEND_BUDGET_S = 60.0  # a pass stops starting attempts after this; the rest wait for the next pass
SEND_PAGE = 100  # due deliveries read per pass
RETRY_STEPS = (1, 6, 24, 120, 360, 720)  # times WEBHOOK_FIRST_RETRY_S; then LAST_STEP each time
LAST_STEP = 1440


@dataclass
class WebhookContext:
    sessions: orm.sessionmaker[orm.Session]
    settings: WebhookSettings
    resolver: Resolver = resolve


@dataclass
class WebhookReport:
    events: int = 0
    attempts: int = 0
    delivered: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None = None
    final: bool = False  # no retry, whatever time is left
    started_at: datetime | None = None
    duration_s: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Due:
    delivery: WebhookDelivery
    webhook: Webhook


def run_webhooks(ctx: WebhookContext, now: datetime | None = None) -> WebhookReport:
    """One pass: record the new events, then try each delivery due at `now`."""
    report = WebhookReport(events=record_events(ctx.sessions))
    now = now or utcnow()
    deadline = time.monotonic() + SEND_BUDGET_S
    with httpx.Client(timeout=ctx.settings.timeout_s, follow_redirects=False, trust_env=False) as client:
        for due in due_deliveries(ctx, now):
            if time.monotonic() > deadline:
                break
            started, clock = utcnow(), time.monotonic()
            outcome = attempt(ctx, client, due)
            outcome = replace(outcome, started_at=started, duration_s=time.monotonic() - clock)
            status = record_attempt(ctx, due, outcome, now)
            report.attempts += 1
            report.delivered += status == DeliveryStatus.DELIVERED
            report.failed += status == DeliveryStatus.FAILED
    return report


def due_deliveries(ctx: WebhookContext, now: datetime) -> list[Due]:
    """The pending deliveries due at `now`, the longest waiting first, with their webhooks."""
    with ctx.sessions() as session:
        query = sa.select(WebhookDelivery, Webhook).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        query = query.where(
            WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.next_attempt_at <= now
        )
        rows = session.execute(query.order_by(WebhookDelivery.next_attempt_at).limit(SEND_PAGE)).all()
        return [Due(delivery, webhook) for delivery, webhook in rows]


def attempt(ctx: WebhookContext, client: httpx.Client, due: Due) -> Outcome:
    """POST the event once, if the operator still allows its host; the body of the answer is not read."""
    refusal = host_refusal(due.webhook.url, ctx.settings.allowed_hosts, ctx.resolver)
    if refusal is not None:
        return Outcome(None, refusal, final=True)
    body = json.dumps(due.delivery.payload, separators=(",", ":")).encode()
    headers = signed_headers(due.webhook.secret, due.delivery.event_id, int(time.time()), body)
    try:
        with client.stream("POST", due.webhook.url, content=body, headers=headers) as response:
            return Outcome(response.status_code)
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])


def retry_delay(settings: WebhookSettings, attempts: int) -> timedelta:
    """How long the next try waits after the `attempts`-th failed one."""
    step = RETRY_STEPS[attempts - 1] if attempts <= len(RETRY_STEPS) else LAST_STEP
    return timedelta(seconds=settings.first_retry_s * step)


def record_attempt(ctx: WebhookContext, due: Due, outcome: Outcome, now: datetime) -> DeliveryStatus | None:
    """Store the attempt and the delivery's next state in one transaction; None when the delivery went
    meanwhile (its webhook was deleted)."""
    delivery = due.delivery
    number = delivery.attempts + 1
    first = delivery.first_attempt_at or now
    give_up_at = first + timedelta(seconds=ctx.settings.retry_for_s)
    next_at: datetime | None = None
    if outcome.delivered:
        status = DeliveryStatus.DELIVERED
    elif outcome.final or now >= give_up_at:
        status = DeliveryStatus.FAILED
    else:
        status, next_at = DeliveryStatus.PENDING, min(now + retry_delay(ctx.settings, number), give_up_at)
    ended = None if status == DeliveryStatus.PENDING else now
    with ctx.sessions() as session:
        updated = session.execute(  # type: ignore[attr-defined]
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id, WebhookDelivery.attempts == delivery.attempts)
            .values(attempts=number, status=status, next_attempt_at=next_at, first_attempt_at=first,
                    finished_at=ended)
        ).rowcount  # fmt: skip
        if not updated:
            return None
        session.add(
            WebhookAttempt(
                webhook_id=delivery.webhook_id, delivery_id=delivery.id, event_id=delivery.event_id,
                event_type=delivery.event_type, attempt=number, status_code=outcome.status_code,
                error=outcome.error, delivery_status=status, started_at=outcome.started_at or now,
                duration_s=round(outcome.duration_s, 6),
            )
        )  # fmt: skip
        session.commit()
    return status


def webhook_context(app: Flask) -> WebhookContext:
    found = services(app)
    return WebhookContext(found.sessions, found.settings.webhooks)


# Acked on receipt, like the reconciler: a lost pass costs nothing, beat sends the next one.
@shared_task(name=WEBHOOKS_TASK, ignore_result=True, acks_late=False)
def deliver() -> None:
    """One pass of the webhook sender, unless another one is running."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    client = services(app).redis
    if not client.set(LOCK_KEY, "1", nx=True, ex=LOCK_HOLD_S):
        return
    try:
        report = run_webhooks(webhook_context(app))
    finally:
        client.delete(LOCK_KEY)
    if report.attempts:
        log.info("webhooks: %s", report)
