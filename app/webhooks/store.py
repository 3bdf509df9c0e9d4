"""Webhook rows: register, list, show and delete one of an owner's, and the attempts of its deliveries."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import orm

from app.db import id_page
from app.errors import ApiError
from app.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery


def create_webhook(session: orm.Session, owner: str | None, url: str, events: list[str]) -> Webhook:
    webhook = Webhook(owner=owner, url=url, events=events)
    session.add(webhook)
    session.commit()
    return webhook


def owned_by(owner: str | None) -> sa.ColumnElement[bool]:
    return Webhook.owner.is_(None) if owner is None else Webhook.owner == owner


def list_webhooks(
    session: orm.Session, owner: str | None, *, after: str | None, limit: int
) -> tuple[list[Webhook], bool]:
    """The owner's webhooks newest first, after the cursor `after`; returns (page, has_more)."""
    return id_page(session, Webhook, after, limit, owned_by(owner))


def get_webhook_or_404(session: orm.Session, owner: str | None, webhook_id: str) -> Webhook:
    """The owner's webhook; 404 for any other (another owner's is never shown as existing)."""
    webhook = session.scalar(sa.select(Webhook).where(Webhook.id == webhook_id, owned_by(owner)))
    if webhook is None:
        message = f"No webhook with id '{webhook_id}'."
        raise ApiError(404, message, param="webhook_id", code="webhook_not_found")
    return webhook


def delete_webhook(session: orm.Session, webhook: Webhook) -> None:
    """Remove the webhook with its deliveries (pending ones are never sent) and their attempts."""
    for model in (WebhookAttempt, WebhookDelivery):
        session.execute(sa.delete(model).where(model.webhook_id == webhook.id))
    session.delete(webhook)
    session.commit()


def list_attempts(
    session: orm.Session, webhook_id: str, *, after: str | None, limit: int
) -> tuple[list[WebhookAttempt], bool]:
    """The webhook's delivery attempts newest first; returns (page, has_more)."""
    return id_page(session, WebhookAttempt, after, limit, WebhookAttempt.webhook_id == webhook_id)
