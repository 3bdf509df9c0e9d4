"""The console's cookies and its CSRF check.

The key cookie (app/auth.py reads it) is ambient: a page elsewhere could make the browser post a form
here. So every console POST (sign-in, sign-out, cancel) must carry the token of this browser's CSRF
cookie in a form field (the double-submit pattern: another site can neither read nor set that
cookie), and, where the browser sends an Origin, come from this host. Both cookies are SameSite=Strict,
HttpOnly, Path=/, and Secure when the request came over https.
"""

from __future__ import annotations

import hmac
import secrets

from flask import g, request
from werkzeug.wrappers import Response

from app.auth import SAFE_METHODS
from app.errors import ApiError

CSRF_COOKIE = "gptoss_console_csrf"
CSRF_FIELD = "csrf_token"
KEY_COOKIE_MAX_AGE_S = 30 * 86400  # a key entered once lasts a month in this browser


def set_console_cookie(response: Response, name: str, value: str, max_age_s: int | None) -> None:
    """A cookie only this site's pages send, that scripts cannot read."""
    response.set_cookie(
        name, value, max_age=max_age_s, path="/", secure=request.is_secure, httponly=True, samesite="Strict"
    )


def csrf_token() -> str:
    """This browser's CSRF token: its cookie's, or a new one that `remember_csrf_token` sets."""
    token = request.cookies.get(CSRF_COOKIE) or g.get("console_new_csrf")
    if not token:
        token = g.console_new_csrf = secrets.token_urlsafe(32)
    return token


def remember_csrf_token(response: Response) -> Response:
    """After a console request: set the CSRF cookie a page just embedded for the first time."""
    if g.get("console_new_csrf"):
        set_console_cookie(response, CSRF_COOKIE, g.console_new_csrf, None)
    return response


def check_csrf() -> None:
    """Before a console request: a POST must come from this host with this browser's token (403)."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    if origin is not None and origin != request.host_url.rstrip("/"):
        raise ApiError(403, f"A form from {origin} may not act on this console.", code="csrf_origin")
    cookie, sent = request.cookies.get(CSRF_COOKIE, ""), request.form.get(CSRF_FIELD, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
        message = "This form is stale or came from another site; reload the page and try again."
        raise ApiError(403, message, code="csrf_token")
