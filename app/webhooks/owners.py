"""Who owns a webhook, and whose a job or batch is: the two places webhooks learn ownership from.

A webhook belongs to the key that registered it (its id, app/keys/caller.py), and receives the events
of that key's jobs and batches. In single-user mode (no keys) the owner is None: such a webhook
receives every event.
"""

from __future__ import annotations

from typing import Any

from app.keys.caller import current_caller


def current_owner() -> str | None:
    """The caller of this request, who owns the webhooks it registers and sees."""
    return current_caller().key_id


def owner_of(row: Any) -> str | None:
    """Whose job or batch this is (its `owner` column)."""
    return row.owner  # type: ignore[no-any-return]
