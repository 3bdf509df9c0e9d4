"""Per-client limits kept in Redis, so every gunicorn process shares them: submits per minute, open streams.

Submits: a fixed one-minute window counter per client (INCR + EXPIRE). Streams: a sorted set per
client of open stream ids scored by their last sign of life; a stream refreshes its score while it
runs and removes itself when it ends, and entries whose process died age out after STREAM_LEASE_S.
Both fail open when Redis is down: the request itself then answers 503 where it needs Redis.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import redis
from flask import Response, g

from app.auth import client_identity
from app.errors import ApiError
from app.services import services
from app.settings import ReliabilitySettings

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

RATE_KEY_PREFIX = "gptoss:rate:submit:"
STREAMS_KEY_PREFIX = "gptoss:streams:"
STREAM_LEASE_S = 90.0  # an open stream refreshes its entry at least every third of this
STREAM_RETRY_AFTER_S = 5


def _settings() -> ReliabilitySettings:
    return services().settings.reliability


def _client() -> redis.Redis:
    return services().redis


def counts_as_submit(view: Callable[P, R]) -> Callable[P, R]:
    """Mark a view as a submit: each call counts against the client's RATE_LIMIT_PER_MIN first, and
    its answer carries OpenAI's x-ratelimit-* headers."""

    @functools.wraps(view)
    def limited(*args: P.args, **kwargs: P.kwargs) -> R:
        g.gptoss_rate_limit = limit_submits()
        return view(*args, **kwargs)

    return limited


def add_rate_limit_headers(response: Response) -> Response:
    """OpenAI's x-ratelimit-{limit,remaining,reset}-requests on a submit's answer (an error too)."""
    state: RateLimitState | None = g.pop("gptoss_rate_limit", None)
    if state is not None:
        response.headers.update(state.headers())
    return response


@dataclass(frozen=True)
class RateLimitState:
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": f"{self.reset_s}s",
        }


def limit_submits() -> RateLimitState | None:
    """429 with Retry-After once a client has submitted RATE_LIMIT_PER_MIN jobs this minute; else what
    is left of this minute's window (None: no limit, or Redis did not say)."""
    limit = _settings().rate_limit_per_min
    if limit <= 0:
        return None
    now = time.time()
    key = f"{RATE_KEY_PREFIX}{client_identity()}:{int(now // 60)}"
    try:
        pipe = _client().pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = pipe.execute()
    except redis.RedisError as exc:
        log.warning("submit rate not checked (Redis unavailable): %s", exc)
        return None
    reset_s = max(1, math.ceil(60 - now % 60))
    state = RateLimitState(limit, max(0, limit - count), reset_s)
    if count > limit:
        raise TooManyRequests(
            f"Rate limit reached: {limit} submits per minute per client. Retry in {reset_s} s.",
            "rate_limit_exceeded",
            reset_s,
            state.headers(),
        )
    return state


class TooManyRequests(ApiError):
    """429, with the Retry-After header the error handler adds."""

    def __init__(
        self, message: str, code: str, retry_after: int, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(429, message, type="requests", code=code)
        self.retry_after = retry_after
        self.headers = headers or {}

    def response(self) -> tuple[Response, int]:
        response, status = super().response()
        response.headers["Retry-After"] = str(self.retry_after)
        response.headers.update(self.headers)
        return response, status


class StreamSlot:
    """One open event stream of a client, held in Redis while the stream runs."""

    def __init__(self, client: redis.Redis | None, key: str = "", member: str = "") -> None:
        self.client, self.key, self.member = client, key, member

    def wrap(self, chunks: Iterator[str]) -> Iterator[str]:
        """Yield the chunks, keeping the slot alive; free it when the stream ends or the client leaves."""
        refreshed = time.monotonic()
        try:
            for chunk in chunks:
                if self.client is not None and time.monotonic() - refreshed > STREAM_LEASE_S / 3:
                    refreshed = time.monotonic()
                    self._quietly(lambda c: c.zadd(self.key, {self.member: time.time()}))
                yield chunk
        finally:
            self.release()

    def release(self) -> None:
        if self.client is not None:
            self._quietly(lambda c: c.zrem(self.key, self.member))
            self.client = None

    def _quietly(self, command: object) -> None:
        try:
            command(self.client)  # type: ignore[operator]
        except redis.RedisError as exc:  # the entry ages out after STREAM_LEASE_S
            log.warning("stream slot %s not updated: %s", self.member, exc)


@contextmanager
def waiting_slot() -> Iterator[None]:
    """One of the client's MAX_STREAMS_PER_CLIENT slots while a non-streamed request waits for its job
    (429 before any job exists when it has none left), so that one client's waiting calls cannot take
    every server thread from the others."""
    slot = acquire_stream_slot()
    try:
        yield
    finally:
        slot.release()


def acquire_stream_slot() -> StreamSlot:
    """A slot for one more open stream of this client; 429 with Retry-After when it has too many."""
    limit = _settings().max_streams_per_client
    if limit <= 0:
        return StreamSlot(None)
    key, member, now = f"{STREAMS_KEY_PREFIX}{client_identity()}", uuid.uuid4().hex, time.time()
    client = _client()
    try:
        pipe = client.pipeline(transaction=True)
        pipe.zremrangebyscore(key, "-inf", now - STREAM_LEASE_S)
        pipe.zadd(key, {member: now})
        pipe.zcard(key)
        pipe.expire(key, int(STREAM_LEASE_S) * 2)
        open_streams = pipe.execute()[2]
    except redis.RedisError as exc:
        log.warning("open streams not counted (Redis unavailable): %s", exc)
        return StreamSlot(None)
    slot = StreamSlot(client, key, member)
    if open_streams > limit:  # added first, then counted: two racing opens never both get the last slot
        slot.release()
        raise TooManyRequests(
            f"Too many open event streams: at most {limit} per client. Close one or retry later.",
            "too_many_streams",
            STREAM_RETRY_AFTER_S,
        )
    return slot
