"""The webhooks resource: register a URL for job and batch events, list, show, delete, see deliveries."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from app.db import db_session
from app.errors import ApiError
from app.http import json_body, list_page
from app.services import services
from app.webhooks import store as webhook_store
from app.webhooks.hosts import host_refusal
from app.webhooks.owners import current_owner
from app.webhooks.schemas import WebhookCreate, WebhookListQuery, attempt_json, webhook_json

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")


@bp.post("")
def create_webhook() -> tuple[Response, int]:
    """Register a URL; the answer shows its signing secret, this once."""
    body = WebhookCreate.model_validate(json_body())
    refusal = host_refusal(body.url, services().settings.webhooks.allowed_hosts)
    if refusal is not None:
        raise ApiError(400, f"url: {refusal}.", param="url", code="webhook_host_not_allowed")
    with db_session() as session:
        webhook = webhook_store.create_webhook(session, current_owner(), body.url, body.event_types())
        return jsonify(webhook_json(webhook, with_secret=True)), 201


@bp.get("")
def list_webhooks() -> Response:
    """List the caller's webhooks newest first; `after` is the last id of the previous page."""
    query = WebhookListQuery.model_validate(request.args.to_dict())
    with db_session() as session:
        webhooks, has_more = webhook_store.list_webhooks(
            session, current_owner(), after=query.after, limit=query.limit
        )
        return list_page([webhook_json(webhook) for webhook in webhooks], has_more)


@bp.get("/<webhook_id>")
def get_webhook(webhook_id: str) -> Response:
    """Show one of the caller's webhooks (without its secret)."""
    with db_session() as session:
        return jsonify(webhook_json(webhook_store.get_webhook_or_404(session, current_owner(), webhook_id)))


@bp.delete("/<webhook_id>")
def delete_webhook(webhook_id: str) -> Response:
    """Delete one of the caller's webhooks; its pending deliveries are dropped."""
    with db_session() as session:
        webhook = webhook_store.get_webhook_or_404(session, current_owner(), webhook_id)
        webhook_store.delete_webhook(session, webhook)
    return jsonify(id=webhook_id, object="webhook.deleted", deleted=True)


@bp.get("/<webhook_id>/deliveries")
def list_deliveries(webhook_id: str) -> Response:
    """The webhook's delivery attempts newest first: event, status code or error, attempt number, time."""
    query = WebhookListQuery.model_validate(request.args.to_dict())
    with db_session() as session:
        webhook_store.get_webhook_or_404(session, current_owner(), webhook_id)
        attempts, has_more = webhook_store.list_attempts(
            session, webhook_id, after=query.after, limit=query.limit
        )
        return list_page([attempt_json(attempt) for attempt in attempts], has_more)
