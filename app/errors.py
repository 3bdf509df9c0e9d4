"""OpenAI-style JSON errors: {"error": {"type", "message", "param", "code"}} with the right status."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, jsonify
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API reports to the client as is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> tuple[Response, int]:
        body = {"type": self.type, "message": self.message, "param": self.param, "code": self.code}
        response = jsonify(error=body)
        if not self.worth_retrying:
            response.headers["x-should-retry"] = "false"  # the openai SDKs then do not retry
        return response, self.status

    @property
    def worth_retrying(self) -> bool:
        """Only a timeout, a rate limit, a conflict of the moment or an outage can go away on its own."""
        return self.status in (408, 409, 429) or (self.status >= 500 and self.code != "generation_failed")


UNION_TAG_PREFIX = "union:"  # a tagged union's tags (e.g. "union:message"): which member, not a field


def param_path(loc: tuple[int | str, ...]) -> str | None:
    """Pydantic's loc as a param name: ("messages", 0, "content") -> "messages[0].content"."""
    path = ""
    for part in loc:
        if part == "[key]" or str(part).startswith(UNION_TAG_PREFIX):  # "the dict key itself"; a union's tag
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None


def validation_error(exc: ValidationError) -> ApiError:
    """One ApiError for all of a body's problems; `param` names the first bad field."""
    errors = exc.errors(include_url=False)
    described = [f"{param_path(e['loc']) or 'body'}: {e['msg']}" for e in errors]
    first = errors[0]
    return ApiError(
        400,  # OpenAI's (and vLLM's) status for every invalid request: clients catch BadRequestError
        "Invalid request body. " + "; ".join(described),
        param=param_path(first["loc"]),
        code=first["type"],
    )


def register_error_handlers(app: Flask) -> None:
    """Every error leaves the app as OpenAI-style JSON, never as an HTML page."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return exc.response()

    @app.errorhandler(ValidationError)
    def _validation_error(exc: ValidationError) -> tuple[Response, int]:
        return validation_error(exc).response()

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        kind = "invalid_request_error" if status < 500 else "server_error"
        code = (exc.name or "error").lower().replace(" ", "_")
        response, status = ApiError(status, exc.description or exc.name, type=kind, code=code).response()
        response.headers.extend(h for h in exc.get_headers() if h[0].lower() != "content-type")
        return response, status

    @app.errorhandler(sa_exc.DataError)
    def _unstorable_value(exc: sa_exc.DataError) -> tuple[Response, int]:
        # e.g. a NUL character, which PostgreSQL text cannot hold: the input's fault, not the server's
        log.info("value the database cannot take: %s", exc.orig)
        message = f"The request holds a value the database cannot store: {exc.orig}"
        return ApiError(400, message, code="invalid_value").response()

    @app.errorhandler(sa_exc.OperationalError)
    @app.errorhandler(sa_exc.InterfaceError)
    @app.errorhandler(sa_exc.TimeoutError)
    def _database_unavailable(exc: Exception) -> tuple[Response, int]:
        log.warning("database unavailable: %s", exc)  # down, unreachable, or locked past the busy timeout
        message = "The database is unavailable. Retry later."
        return unavailable(ApiError(503, message, type="server_error", code="database_unavailable"))

    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    def _redis_unavailable(exc: Exception) -> tuple[Response, int]:
        log.warning("redis unavailable: %s", exc)
        message = "The queue (Redis) is unavailable. Retry later."
        return unavailable(ApiError(503, message, type="server_error", code="queue_unavailable"))

    @app.errorhandler(Exception)
    def _unexpected_error(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return ApiError(500, "Internal server error.", type="server_error").response()


def unavailable(error: ApiError, retry_after_s: int = 1) -> tuple[Response, int]:
    """A 503 that tells clients when to try again."""
    response, status = error.response()
    response.headers["Retry-After"] = str(retry_after_s)
    return response, status
