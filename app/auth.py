"""API keys: with keys configured, every route but /healthz needs `Authorization: Bearer <key>`.

The browser console (app/console/) keeps the key in an HttpOnly cookie instead, since a browser's
EventSource and <img> cannot send a header: the cookie's key is the same key, looked up in the same
KeyRing, making the same Caller. It is taken on reads (GET, HEAD) anywhere and on the console's own
forms, which check a CSRF token (app/console/csrf.py); never on the API's other writes.

Keys are GPTOSS_API_KEYS (admin keys) and the unrevoked rows of the api_keys table (`gptoss keys add`,
app/keys/). A key's caller (app/keys/caller.py) owns what it makes and sees only that, unless it is an
admin. With no keys at all the API serves this machine only: gunicorn binds 127.0.0.1
(gunicorn.conf.py), a request from any other address is refused, and everything is visible to everyone.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import threading
import time
from functools import partial

from flask import Flask, g, redirect, request, url_for
from sqlalchemy import exc as sa_exc
from sqlalchemy import orm
from werkzeug.wrappers import Response

from app.errors import ApiError
from app.keys import store as key_store
from app.keys.caller import SINGLE_USER, UNVERIFIED, Caller, env_key_id

log = logging.getLogger(__name__)

OPEN_ENDPOINTS = frozenset({"health.healthz"})  # liveness probes carry no key
# How long a process trusts what it read of the api_keys table: a key added or revoked with `gptoss keys`
# takes effect within this many seconds, and a submit does not pay a query for it (bench/load.py).
KEYS_RECHECK_S = 1.0
KNOWN_KEYS_MAX = 4096  # callers remembered per process; past it the memory starts again
CONSOLE = "console"  # the blueprint of the browser console: it signs in with a form, not a 401
# its sign-in and sign-out (a revoked key may still sign out; both check CSRF) and its CSS/JS
CONSOLE_OPEN_ENDPOINTS = frozenset({"console.login", "console.logout", "console.static"})
CONSOLE_COOKIE = "gptoss_console_key"  # the key a person pasted into the console's sign-in form
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def key_digest(key: str) -> bytes:
    """Keys are compared as fixed-length digests, so neither content nor length leaks through timing."""
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """The keys a request may carry: GPTOSS_API_KEYS (admins), then the database's unrevoked keys."""

    def __init__(self, env_keys: tuple[str, ...], sessions: orm.sessionmaker[orm.Session]) -> None:
        self.env_keys = tuple((key_digest(key), Caller(env_key_id(key), admin=True)) for key in env_keys)
        self.sessions = sessions
        self._lock = threading.Lock()
        self._required: tuple[bool, float] | None = None  # (answer, monotonic time it was read)
        self._known: dict[bytes, tuple[Caller, float]] = {}  # digest -> (its stored key's caller, read at)

    def required(self) -> bool:
        """Whether requests need a key: some are configured (in the env, or in the database, read at most
        once per KEYS_RECHECK_S)."""
        if self.env_keys:
            return True
        now = time.monotonic()
        remembered = self._required
        if remembered is not None and now - remembered[1] < KEYS_RECHECK_S:
            return remembered[0]
        with self.sessions() as session:
            answer = key_store.any_active_key(session)
        self._required = (answer, now)
        return answer

    def caller_of(self, key: str) -> Caller | None:
        """The caller this key makes, or None for a key that is unknown or revoked."""
        given = key_digest(key)
        matched = None
        for digest, caller in self.env_keys:  # no early exit: every env key is compared
            if hmac.compare_digest(given, digest):
                matched = caller
        if matched is not None:
            return matched
        now = time.monotonic()
        known = self._known.get(given)
        if known is not None and now - known[1] < KEYS_RECHECK_S:
            return known[0]
        with self.sessions() as session:  # looked up by the digest of a random secret: nothing to time
            row = key_store.find_active_key(session, given.hex())
        if row is None:  # unknown keys are not remembered: guessing must not fill the memory
            self._known.pop(given, None)
            return None
        caller = Caller(row.id, admin=row.admin)
        with self._lock:
            if len(self._known) >= KNOWN_KEYS_MAX:
                self._known.clear()
            self._known[given] = (caller, now)
        return caller


def init_auth(app: Flask, keys: KeyRing) -> None:
    """Require an API key on every request when keys are configured; else allow local clients only."""
    if not keys.env_keys:
        log.warning(
            "no API keys configured (GPTOSS_API_KEYS): unless `gptoss keys add` stored some, the API "
            "serves clients on 127.0.0.1 only; set GPTOSS_API_KEYS to serve other machines"
        )
    app.before_request(partial(require_api_key, keys))


def require_api_key(keys: KeyRing) -> Response | tuple[Response, int] | None:
    """Before every request: set the request's caller, or answer a 401 OpenAI-style error (the
    console's pages: a redirect to its sign-in page)."""
    if request.endpoint in OPEN_ENDPOINTS or request.endpoint in CONSOLE_OPEN_ENDPOINTS:
        return None
    try:
        required = keys.required()
    except sa_exc.SQLAlchemyError as exc:  # the keys table cannot be read: a local client sees nothing
        log.warning("could not tell whether API keys are configured: %s", exc)
        required, g.gptoss_caller = True, UNVERIFIED
        if is_local(request.remote_addr) and request_key() is None:
            return None
    if not required:
        if is_local(request.remote_addr):
            g.gptoss_caller = SINGLE_USER
            return None
        return unauthorized(
            "This server has no API keys configured (GPTOSS_API_KEYS or `gptoss keys add`) and serves "
            "clients on its own machine only.",
            "api_keys_not_configured",
        )
    key = request_key()
    if key is None:
        return unauthorized(
            "You didn't provide an API key. Send it as the header 'Authorization: Bearer <key>'.",
            "missing_api_key",
        )
    caller = keys.caller_of(key)
    if caller is None:
        return unauthorized("Incorrect API key provided.", "invalid_api_key")
    g.gptoss_caller = caller
    g.gptoss_client = "key:" + key_digest(key).hex()[:16]  # who this is, for per-client limits
    return None


def request_key() -> str | None:
    """The request's key: its Bearer header, else the console's cookie where that may stand in (reads,
    and the console's own forms, which carry a CSRF token)."""
    key = bearer_key(request.headers.get("Authorization"))
    if key is not None:
        return key
    if request.method in SAFE_METHODS or request.blueprint == CONSOLE:
        return request.cookies.get(CONSOLE_COOKIE) or None
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


def unauthorized(message: str, code: str) -> Response | tuple[Response, int]:
    if request.blueprint == CONSOLE:  # a person at a browser: the sign-in page says what is wrong
        return redirect(url_for("console.login", next=request.full_path.rstrip("?"), problem=code))
    response, status = ApiError(401, message, code=code).response()
    response.headers["WWW-Authenticate"] = 'Bearer realm="gptoss-batch"'
    return response, status
