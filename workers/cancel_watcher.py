"""One thread per worker process watches the cancel keys of the jobs it runs and cancels them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import redis

from app.jobs.cancel import cancelled_job_ids

log = logging.getLogger(__name__)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class CancelWatcher:
    """Polls Redis every `interval_s` with one MGET for all running jobs of this process."""

    def __init__(self, client: redis.Redis, interval_s: float = 0.1) -> None:
        self.client = client
        self.interval_s = interval_s
        self._watched: dict[str, Cancellable] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @contextmanager
    def watch(self, job_id: str, handle: Cancellable) -> Iterator[None]:
        """Cancel `handle` if the job's cancel key appears while the block runs."""
        with self._lock:
            self._watched[job_id] = handle
            if self._thread is None:
                self._thread = threading.Thread(target=self._poll_forever, name="cancel-watcher", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._watched.pop(job_id, None)

    def stop(self) -> None:
        self._stop.set()

    def poll_once(self) -> list[str]:
        """Cancel every watched job whose key is set; returns their ids."""
        with self._lock:
            job_ids = list(self._watched)
        try:
            cancelled = cancelled_job_ids(self.client, job_ids)
        except redis.RedisError as exc:
            log.warning("cannot read cancel signals: %s", exc)
            return []
        for job_id in cancelled:
            with self._lock:
                handle = self._watched.pop(job_id, None)
            if handle is not None:
                log.info("job %s: cancel requested, stopping generation", job_id)
                handle.cancel()
        return cancelled

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll_once()
