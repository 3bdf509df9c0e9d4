"""A client waiting on its job in one HTTP request (non-streamed chat completions and responses): the job
runs only while someone waits for it, and the SDK's retries of one call share one job.

- While waiting, the client's socket is looked at on every idle poll; once the client has gone (its
  timeout, a dropped connection), the job waits GPTOSS_CLIENT_RETRY_GRACE_S for a retry to take it
  over, and is cancelled when none comes.
- A retry (the openai SDK's `x-stainless-retry-count` >= 1) of the same call (same client, same
  route, same body) takes over the job the first attempt made, running or finished, instead of
  making another: the first attempt registers its job under the call's key for RETRY_WINDOW_S.
Jobs fetched later (POST /v1/jobs, batches, background responses) never wait this way.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import redis
from flask import g, request

from app.auth import client_identity
from app.db import db_session
from app.jobs.cancel import cancel_quietly
from app.jobs.render import job_json
from app.jobs.store import find_job
from app.jobs.stream import STREAM_POLL_S, finished_job, follow_job
from app.keys.caller import current_caller
from app.models import JobStatus
from app.services import services

log = logging.getLogger(__name__)

CALL_KEY_PREFIX = "gptoss:call:"
ADOPTED_KEY_PREFIX = "gptoss:adopted:"
RETRY_WINDOW_S = 600  # how long a call's job can be taken over by a retry of it
RETRY_HEADER = "x-stainless-retry-count"  # sent by the openai SDKs (and other Stainless clients)


def call_key() -> str:
    """This call: the client, the route and the exact body (a retry sends the same bytes)."""
    digest = hashlib.sha256(g.get("gptoss_raw_body", b"")).hexdigest()
    return f"{CALL_KEY_PREFIX}{client_identity()}:{request.path}:{digest}"


def is_retry() -> bool:
    count = request.headers.get(RETRY_HEADER, "0")
    return count.isdigit() and int(count) > 0


def submit_once(submit: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The job of this call: the one an earlier attempt made (a retry), else a new one from `submit`."""
    client: redis.Redis = services().redis
    key = call_key()
    if is_retry():
        taken = _take_over(client, key)
        if taken is not None:
            return taken
    job = submit()
    try:
        client.set(key, job["id"], ex=RETRY_WINDOW_S)
    except redis.RedisError as exc:  # a retry then makes its own job, as before
        log.warning("call of job %s not registered for retries: %s", job["id"], exc)
    return job


def _take_over(client: redis.Redis, key: str) -> dict[str, Any] | None:
    raw = client.get(key)
    if raw is None:
        return None
    job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
    with db_session() as session:
        job = find_job(session, job_id, current_caller())  # the call key is the caller's already
        if job is None or job.status == JobStatus.CANCELLED:
            return None
        client.set(f"{ADOPTED_KEY_PREFIX}{job_id}", "1", ex=RETRY_WINDOW_S)
        log.info("job %s taken over by a retry of its call", job_id)
        return job_json(job)


def wait_while_someone_waits(job_id: str) -> dict[str, Any] | None:
    """The finished job's JSON; None when the client left and no retry took the job over (then the job
    is cancelled: nobody would read its answer)."""
    client: redis.Redis = services().redis
    try:
        client.delete(f"{ADOPTED_KEY_PREFIX}{job_id}")  # a fresh take-over only counts from now
        for event in follow_job(services().events, job_id, "0", STREAM_POLL_S):
            if event is not None and event.is_terminal:
                return finished_job(job_id) or event.data
            if event is None and client_gone():
                _after_the_client_left(client, job_id)
                return None
        return finished_job(job_id)
    except Exception:  # the client is told 503 (Redis, the database): its job must not run for nobody
        cancel_quietly(job_id)
        raise


def _after_the_client_left(client: redis.Redis, job_id: str) -> None:
    """Wait for a retry to take the job over; cancel it when none comes in the grace period."""
    grace_s = services().settings.reliability.client_retry_grace_s
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if client.exists(f"{ADOPTED_KEY_PREFIX}{job_id}") or finished_job(job_id) is not None:
            return  # a retry waits for it now, or it ended anyway
        time.sleep(min(STREAM_POLL_S, grace_s))
    log.info("job %s: its client left and no retry came in %.0f s; cancelling it", job_id, grace_s)
    cancel_quietly(job_id)


def client_gone() -> bool:
    """Whether the client has closed its connection (the server's socket reads end of file). Servers that
    do not expose the socket (gunicorn and werkzeug do) are never taken for gone."""
    connection = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    if connection is None:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # open, nothing sent: still waiting for us
    except OSError:
        return True
