"""API keys: with GPTOSS_API_KEYS set, every route but /healthz needs `Authorization: Bearer <key>`.

With no keys configured the API serves this machine only: gunicorn binds 127.0.0.1 (gunicorn.conf.py)
and a request from any other address is refused, whatever server runs the app.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from functools import partial

from flask import Flask, Response, g, request

from app.errors import ApiError

log = logging.getLogger(__name__)

OPEN_ENDPOINTS = frozenset({"health.healthz"})  # liveness probes carry no key


def key_digest(key: str) -> bytes:
    """Keys are compared as fixed-length digests, so neither content nor length leaks through timing."""
    return hashlib.sha256(key.encode()).digest()


def init_auth(app: Flask, keys: tuple[str, ...]) -> None:
    """Require an API key on every request when keys are configured; else allow local clients only."""
    digests = tuple(key_digest(key) for key in keys)
    if not keys:
        log.warning(
            "no API keys configured (GPTOSS_API_KEYS): the API serves clients on 127.0.0.1 only; "
            "set GPTOSS_API_KEYS to serve other machines"
        )
    app.before_request(partial(require_api_key, digests))


def require_api_key(digests: tuple[bytes, ...]) -> tuple[Response, int] | None:
    """Before every request: a 401 OpenAI-style error unless the caller may proceed."""
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if not digests:
        if is_local(request.remote_addr):
            return None
        return unauthorized(
            "This server has no API keys configured (GPTOSS_API_KEYS) and serves clients on its own "
            "machine only.",
            "api_keys_not_configured",
        )
    key = bearer_key(request.headers.get("Authorization"))
    if key is None:
        return unauthorized(
            "You didn't provide an API key. Send it as the header 'Authorization: Bearer <key>'.",
            "missing_api_key",
        )
    given = key_digest(key)
    matched = False
    for digest in digests:  # no early exit: every key is compared
        matched |= hmac.compare_digest(given, digest)
    if not matched:
        return unauthorized("Incorrect API key provided.", "invalid_api_key")
    g.gptoss_client = "key:" + given.hex()[:16]  # who this is, for per-client limits
    return None


def bearer_key(header: str | None) -> str | None:
    scheme, _, key = (header or "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def is_local(address: str | None) -> bool:
    """Loopback addresses, and no address at all (a Unix socket)."""
    if not address:
        return True
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def client_identity() -> str:
    """The caller for per-client limits: its API key (hashed) when it sent one, else its address."""
    return g.get("gptoss_client") or f"ip:{request.remote_addr or 'local'}"


def unauthorized(message: str, code: str) -> tuple[Response, int]:
    response, status = ApiError(401, message, code=code).response()
    response.headers["WWW-Authenticate"] = 'Bearer realm="gptoss-batch"'
    return response, status
