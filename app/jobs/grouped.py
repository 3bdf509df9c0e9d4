"""Submits that arrive together are stored and queued together: one INSERT transaction, one Redis round
trip for their `queued` events and one for their messages, however many they are.

A submit hands its row and its message to its process's SubmitGroups and waits. One thread per process
takes everything waiting (up to MAX_GROUP), stores and queues it, and wakes each submit with its own
outcome. Alone, a submit is a group of one (no timer, nothing waits for company); under load a group is
what arrived during the last group's round trips. bench/load.py measures what it saves.

Every promise of a single submit holds row by row:
  - a row is queued only once it is committed, and its submit answers only after both;
  - a row whose enqueue failed is deleted, and its submit raises QueueUnavailable (the API's 503);
  - a row whose idempotency key is taken raises IntegrityError in its own submit only (the group's other
    rows are stored one by one).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy import orm

from app.jobs.enqueue import JobQueue
from app.models import Job
from app.queue import QueuedJob

log = logging.getLogger(__name__)

MAX_GROUP = 256  # rows per transaction and per Redis round trip


class QueueUnavailable(Exception):
    """The broker did not take the job's message; its row was removed."""


@dataclass
class _Waiting:
    row: dict[str, Any]
    queued: QueuedJob
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class SubmitGroups:
    def __init__(self, sessions: orm.sessionmaker[orm.Session], queue: JobQueue) -> None:
        self.sessions, self.queue = sessions, queue
        self._lock = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._pid: int | None = None  # the process whose thread serves the groups (a fork starts its own)

    def store_and_queue(self, row: dict[str, Any], queued: QueuedJob) -> None:
        """Insert the job row and queue its message; returns once both are done. Raises IntegrityError
        (its idempotency key is taken: nothing stored) or QueueUnavailable (nothing left stored)."""
        me = _Waiting(row, queued)
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._waiting = []
                threading.Thread(target=self._serve, name="submit-groups", daemon=True).start()
            self._waiting.append(me)
            self._lock.notify()
        me.done.wait()
        if me.error is not None:
            raise me.error

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._waiting:
                    self._lock.wait()
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            try:
                self._store_and_queue(group)
            except BaseException as exc:  # never leave a submit waiting for ever
                log.exception("storing a group of %d submits failed", len(group))
                for waiting in group:
                    waiting.error = waiting.error or exc
            finally:
                for waiting in group:
                    waiting.done.set()

    def _store_and_queue(self, group: list[_Waiting]) -> None:
        stored = self._insert(group)
        if not stored:
            return
        try:
            self.queue.enqueue_many([waiting.queued for waiting in stored])
        except Exception as exc:
            log.warning("enqueue of %d job(s) failed, removing them: %s", len(stored), exc)
            with self.sessions() as session:
                session.execute(sa.delete(Job).where(Job.id.in_([w.row["id"] for w in stored])))
                session.commit()
            for waiting in stored:
                waiting.error = QueueUnavailable(str(exc))

    def _insert(self, group: list[_Waiting]) -> list[_Waiting]:
        """The group's rows in one transaction; when one of them collides, each in its own."""
        with self.sessions() as session:
            try:
                session.execute(sa.insert(Job), [waiting.row for waiting in group])
                session.commit()
                return group
            except sa_exc.IntegrityError as exc:
                session.rollback()
                if len(group) == 1:
                    group[0].error = exc
                    return []
        stored = []
        for waiting in group:
            stored += self._insert([waiting])
        return stored
