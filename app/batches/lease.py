"""Who is ingesting a batch, and who is finalizing it: short Redis leases held and refreshed while
the work runs.

The ingest lease is also the lock (one ingest of a batch at a time), and its absence tells the
reconciler that a batch still `validating` (or half ingested) has nobody working on it: its worker died,
and the message would only come back after the visibility timeout. The reconciler then sends the
ingest again.

The finalize lease keeps a second check of the batch (the watch its last message asked for, the timed
watch, the reconciler) from writing the result files again beside the first: four did at once at the
end of a 20,000-line batch, each for 16 s, where one alone takes a quarter of that. A finalizer that
dies leaves the lease to expire, and the next check finalizes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import redis

log = logging.getLogger(__name__)

LEASE_KEY_PREFIX = "gptoss:ingesting:"
FINALIZE_KEY_PREFIX = "gptoss:finalizing:"
LEASE_S = 12  # a dead ingest's (or finalizer's) batch is free again this long after its last refresh
REFRESH_S = 4


def lease_key(batch_id: str, prefix: str = LEASE_KEY_PREFIX) -> str:
    return f"{prefix}{batch_id}"


def is_leased(client: redis.Redis, batch_id: str) -> bool:
    """Whether an ingest of the batch is alive."""
    return bool(client.exists(lease_key(batch_id)))


def ingest_lease(client: redis.Redis, batch_id: str) -> AbstractContextManager[bool]:
    """Hold the batch's ingest lease while the block runs; yields False when another ingest holds it
    (then do nothing). A Redis error raises."""
    return _lease(client, lease_key(batch_id), batch_id, "ingest")


def finalize_lease(client: redis.Redis, batch_id: str) -> AbstractContextManager[bool]:
    """Hold the batch's finalize lease while the block runs; yields False when another check holds it
    (then leave the batch to it). Without Redis it yields True: two checks may then both write the
    result files, and the one whose final update loses discards its own (app/batches/lifecycle.py)."""
    return _lease(client, lease_key(batch_id, FINALIZE_KEY_PREFIX), batch_id, "finalize", without_redis=True)


@contextmanager
def _lease(
    client: redis.Redis, key: str, batch_id: str, work: str, without_redis: bool | None = None
) -> Iterator[bool]:
    """Hold `key` while the block runs (refreshed in the background); yields False when it is held.
    When Redis cannot be asked, yields `without_redis`, or raises when that is None."""
    try:
        taken = client.set(key, "1", nx=True, ex=LEASE_S)
    except redis.RedisError as exc:
        if without_redis is None:
            raise
        log.warning("batch %s: no %s lease (Redis: %s); going on without it", batch_id, work, exc)
        yield without_redis
        return
    if not taken:
        yield False
        return
    done = threading.Event()

    def refresh() -> None:
        while not done.wait(REFRESH_S):
            try:
                client.expire(key, LEASE_S)
            except redis.RedisError as exc:  # it lapses: a second ingest or finalize may start
                log.warning("batch %s: %s lease not refreshed: %s", batch_id, work, exc)

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
            log.warning("batch %s: %s lease not released (it expires): %s", batch_id, work, exc)
