"""Standard Webhooks signatures (https://www.standardwebhooks.com): what a receiver verifies.

`webhook-id` is the event's id (the same on every retry, so a receiver can drop repeats),
`webhook-timestamp` the attempt's unix seconds, and `webhook-signature` is `v1,` + base64 of
HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with the secret's bytes (base64 after `whsec_`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from app.webhooks.models import SECRET_PREFIX


def signature(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header of one attempt."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt: the three Standard Webhooks headers and the content type."""
    return {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, event_id, timestamp, body),
    }
