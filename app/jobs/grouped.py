"""Submits that arrive together are stored and queued together: one INSERT transaction, one Redis round
trip for their `queued` events and one for their messages, however many they are.

A submit hands its row and its message to its process's SubmitGroups and waits; the submit that finds
no group being written stores and queues everything waiting (up to MAX_GROUP) and gives each submit its
own outcome (app/grouping.py). Alone, a submit is a group of one, done on its own thread; under load a
group is what arrived during the last group's round trips. bench/load.py measures what it saves.

Every promise of a single submit holds row by row:
  - a row is queued only once it is committed, and its submit answers only after both;
  - a row whose enqueue failed is deleted, and its submit raises QueueUnavailable (the API's 503);
  - a row whose idempotency key is taken raises IntegrityError in its own submit only (the group's other
    rows are stored one by one).
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy import orm

from app.grouping import Groups, Item
from app.jobs.enqueue import JobQueue
from app.models import Job
from app.queue import QueuedJob

log = logging.getLogger(__name__)

MAX_GROUP = 256  # rows per transaction and per Redis round trip


class QueueUnavailable(Exception):
    """The broker did not take the job's message; its row was removed."""


Submit = tuple[dict[str, Any], QueuedJob]  # a job's row and its message


class SubmitGroups:
    def __init__(self, sessions: orm.sessionmaker[orm.Session], queue: JobQueue) -> None:
        self.sessions, self.queue = sessions, queue
        self._groups: Groups[Submit] = Groups(self._store_and_queue, MAX_GROUP, "submits")

    def store_and_queue(self, row: dict[str, Any], queued: QueuedJob) -> None:
        """Insert the job row and queue its message; returns once both are done. Raises IntegrityError
        (its idempotency key is taken: nothing stored) or QueueUnavailable (nothing left stored)."""
        self._groups.wait((row, queued))

    def _store_and_queue(self, group: list[Item[Submit]]) -> None:
        stored = self._insert(group)
        if not stored:
            return
        try:
            self.queue.enqueue_many([item.value[1] for item in stored])
        except Exception as exc:
            log.warning("enqueue of %d job(s) failed, removing them: %s", len(stored), exc)
            with self.sessions() as session:
                session.execute(sa.delete(Job).where(Job.id.in_([item.value[0]["id"] for item in stored])))
                session.commit()
            for item in stored:
                item.error = QueueUnavailable(str(exc))

    def _insert(self, group: list[Item[Submit]]) -> list[Item[Submit]]:
        """The group's rows in one transaction; when one of them collides, each in its own."""
        with self.sessions() as session:
            try:
                session.execute(sa.insert(Job), [item.value[0] for item in group])
                session.commit()
                return group
            except sa_exc.IntegrityError as exc:
                session.rollback()
                if len(group) == 1:
                    group[0].error = exc
                    return []
        stored = []
        for item in group:
            stored += self._insert([item])
        return stored
