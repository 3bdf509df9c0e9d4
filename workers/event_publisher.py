"""One thread per worker process appends the jobs' events to Redis, many per round trip.

A job thread that sent each token delta itself waited on Redis once per token, and woke the
process's other threads as often: with 64 jobs decoding, that was 64 round trips per engine step,
fighting the engine for the GIL. Here job threads hand events over and go on; the publisher drains
everything queued and sends it as one pipeline, in order, so a job's events keep their order. A
terminal event (`done`, `error`, `cancelled`) is handed over like the others, and its caller waits
until it is sent: SSE readers who see it find the stored result, and a stopping worker loses nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from app.jobs.events import TERMINAL_EVENTS, JobEventLog

log = logging.getLogger(__name__)

TERMINAL_WAIT_S = 5.0  # how long a job thread waits for its terminal event to reach Redis


@dataclass
class _Event:
    job_id: str
    event_type: str
    data: dict[str, Any]
    sent: threading.Event | None = field(default=None)  # set once written (or given up), for waiters


class BatchedEventPublisher:
    """`append` like JobEventLog.append, without waiting on Redis except for terminal events."""

    def __init__(self, events: JobEventLog) -> None:
        self.events = events
        self._queue: queue.SimpleQueue[_Event | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches = 0  # pipelines sent (for tests and metrics)

    def append(self, job_id: str, event_type: str, data: dict[str, Any]) -> None:
        terminal = event_type in TERMINAL_EVENTS
        event = _Event(job_id, event_type, data, threading.Event() if terminal else None)
        self._ensure_started()
        self._queue.put(event)
        if event.sent is not None and not event.sent.wait(TERMINAL_WAIT_S):
            log.warning("job %s: its %s event was not sent in %.0f s", job_id, event_type, TERMINAL_WAIT_S)

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is queued, then end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="event-publisher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [event for event in batch if event is not None]
            self._send(events)
            if len(events) < len(batch):  # stop() was called: everything before it is sent
                return

    def _send(self, events: list[_Event]) -> None:
        if not events:
            return
        try:
            self.events.append_many([(e.job_id, e.event_type, e.data) for e in events])
            self.batches += 1
        except Exception as exc:  # a Redis hiccup never fails a job: the DB has its result
            log.warning("could not publish %d job event(s): %s", len(events), exc)
        finally:
            for event in events:
                if event.sent is not None:
                    event.sent.set()
