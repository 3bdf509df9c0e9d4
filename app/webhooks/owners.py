"""Who owns a webhook, and whose a job or batch is: the two places webhooks learn ownership from.

Until API keys carry ids and rows carry their key's owner, the owner is the client id app/auth.py
sets for a key (None in single-user loopback mode), and a row's `owner` attribute where it has one. A
webhook owned by None receives every event.
"""

from __future__ import annotations

from typing import Any

from flask import g


def current_owner() -> str | None:
    """The caller of this request, who owns the webhooks it registers and sees."""
    return g.get("gptoss_client")


def owner_of(row: Any) -> str | None:
    """Whose job or batch this is."""
    return getattr(row, "owner", None)
