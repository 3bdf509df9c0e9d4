"""Who is ingesting a batch: a short Redis lease its ingest holds and refreshes while it runs.

The lease is also the lock (one ingest of a batch at a time), and its absence tells the reconciler that
a batch still `validating` (or half ingested) has nobody working on it: its worker died, and the
message would only come back after the visibility timeout. The reconciler then sends the ingest again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis

log = logging.getLogger(__name__)

LEASE_KEY_PREFIX = "gptoss:ingesting:"
LEASE_S = 12  # a dead ingest's batch is free again this long after its last refresh
REFRESH_S = 4


def lease_key(batch_id: str) -> str:
    return f"{LEASE_KEY_PREFIX}{batch_id}"


def is_leased(client: redis.Redis, batch_id: str) -> bool:
    return bool(client.exists(lease_key(batch_id)))


@contextmanager
def ingest_lease(client: redis.Redis, batch_id: str) -> Iterator[bool]:
    """Hold the batch's lease while the block runs (refreshed in the background); yields False when
    another ingest holds it (then do nothing)."""
    key = lease_key(batch_id)
    if not client.set(key, "1", nx=True, ex=LEASE_S):
        yield False
        return
    done = threading.Event()

    def refresh() -> None:
        while not done.wait(REFRESH_S):
            try:
                client.expire(key, LEASE_S)
            except redis.RedisError as exc:  # the lease lapses; the reconciler may send a second ingest
                log.warning("batch %s: ingest lease not refreshed: %s", batch_id, exc)

    thread = threading.Thread(target=refresh, name=f"lease-{batch_id}", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        done.set()
        thread.join(timeout=5)
        try:
            client.delete(key)
        except redis.RedisError as exc:
            log.warning("batch %s: ingest lease not released (it expires): %s", batch_id, exc)
