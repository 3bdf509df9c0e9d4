"""GET /v1/usage: tokens and jobs per API key, per profile and per day; a key sees only its own."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.db import db_session
from app.errors import ApiError
from app.keys import store as key_store
from app.keys.caller import Caller, current_caller
from app.models import Job
from app.ops.usage import KeyUsage, day_window, usage_by_key
from app.services import services

bp = Blueprint("usage", __name__, url_prefix="/v1/usage")

ALL_KEYS = "all"


class UsageQuery(BaseModel):
    """Query string of GET /v1/usage."""

    model_config = ConfigDict(extra="forbid")

    since: date | None = Field(default=None, description="first UTC day counted (YYYY-MM-DD)")
    until: date | None = Field(default=None, description="last UTC day counted, included (YYYY-MM-DD)")
    key: str | None = Field(
        default=None, description='one key (its name or id); admins may name any, or "all" (the default)'
    )

    @field_validator("until")
    @classmethod
    def _not_before_since(cls, value: date | None, info: ValidationInfo) -> date | None:
        since = info.data.get("since")
        if value is not None and since is not None and value < since:
            raise ValueError(f"until ({value}) is before since ({since})")
        return value


def chosen_key(query_key: str | None, caller: Caller, names: dict[str, str]) -> str | None:
    """The key id whose usage is asked for; None: every key the caller sees. A key a non-admin may not
    see is refused exactly as one that does not exist."""
    if query_key in (None, ALL_KEYS) and caller.admin:
        return None
    if query_key is None:
        return caller.key_id
    key_id = query_key if query_key in names else next((i for i, n in names.items() if n == query_key), None)
    if key_id is None or not (caller.admin or key_id == caller.key_id):
        raise ApiError(400, f"No API key named {query_key!r}.", param="key", code="unknown_key")
    return key_id


@bp.get("")
def usage() -> Response:
    """Prompt, completion and reasoning tokens and jobs by status of each key, per profile and per day."""
    query = UsageQuery.model_validate(request.args.to_dict())
    caller = current_caller()
    with db_session() as session:
        names = key_store.key_directory(session, services().settings.reliability.api_keys)
        key_id = chosen_key(query.key, caller, names)
        conditions = [caller.sees(Job.owner), *day_window(query.since, query.until)]
        if key_id is not None:
            conditions.append(Job.owner == key_id)
        found = usage_by_key(session, *conditions) or ([KeyUsage(key_id)] if key_id is not None else [])
        data = [usage.as_json(names) for usage in found]  # a key named and idle: shown with zeros
    body: dict[str, Any] = {
        "object": "usage",
        "since": query.since and query.since.isoformat(),
        "until": query.until and query.until.isoformat(),
        "data": data,
    }
    return jsonify(body)
