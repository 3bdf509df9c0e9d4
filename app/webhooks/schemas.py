"""Request schemas of the webhooks resource, and the JSON of a webhook and of a delivery attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.webhooks.hosts import url_problem
from app.webhooks.models import EVENT_TYPES, Webhook, WebhookAttempt

EventType = Literal[
    "job.completed", "job.failed", "job.cancelled",
    "batch.completed", "batch.failed", "batch.expired", "batch.cancelled",
]  # fmt: skip


class WebhookCreate(BaseModel):
    """The body of POST /v1/webhooks."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(min_length=1, max_length=2048)
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES))

    @field_validator("url")
    @classmethod
    def _a_webhook_url(cls, url: str) -> str:
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url

    def event_types(self) -> list[str]:
        """The events asked for, once each in EVENT_TYPES order; every one where none were named."""
        return [event for event in EVENT_TYPES if self.events is None or event in self.events]


class WebhookListQuery(BaseModel):
    """Query string of GET /v1/webhooks and of GET /v1/webhooks/{id}/deliveries."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=20, ge=1, le=100)
    after: str | None = None


def _unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def webhook_json(webhook: Webhook, *, with_secret: bool = False) -> dict[str, Any]:
    """The webhook object; its secret is shown once, when it is created."""
    shown = {
        "id": webhook.id,
        "object": "webhook",
        "url": webhook.url,
        "events": webhook.events,
        "created_at": _unix(webhook.created_at),
    }
    return {**shown, "secret": webhook.secret} if with_secret else shown


def attempt_json(attempt: WebhookAttempt) -> dict[str, Any]:
    """One recorded attempt of a delivery."""
    return {
        "id": attempt.id,
        "object": "webhook.delivery_attempt",
        "webhook_id": attempt.webhook_id,
        "event_id": attempt.event_id,
        "event_type": attempt.event_type,
        "attempt": attempt.attempt,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "delivery_status": attempt.delivery_status,
        "started_at": attempt.started_at.timestamp(),
        "duration_s": attempt.duration_s,
    }
