"""A worker's job transitions (claim, first token, finish) share transactions with those beside them.

Each job used to write three transactions of its own, each taking the process's SQLite write lock:
with many jobs ending together, their threads queued on that lock and on the commits. Here the
transitions go through one group commit per process (app/grouping.py): a thread whose UPDATE finds no
group being written commits everything waiting in one transaction, and each thread gets its own
UPDATE's answer. Alone, a transition is its own transaction, written at once on its thread.

Every UPDATE keeps its guard (app/jobs/store.py), so a group changes exactly what its statements one
by one would: a claim another worker won returns no job, a finish of a job no longer running stores
nothing. If one statement fails, the group is rolled back and each statement runs again alone, so
only that one's caller sees the error.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import orm

from app.grouping import Groups, Item
from app.jobs.store import JobUpdate
from app.models import Job

MAX_GROUP = 256  # statements per transaction


class GroupedWrites:
    def __init__(
        self, sessions: orm.sessionmaker[orm.Session], write_lock: AbstractContextManager[Any]
    ) -> None:
        self.sessions, self.write_lock = sessions, write_lock
        self._groups: Groups[JobUpdate] = Groups(self._write, MAX_GROUP, "job writes")

    def returning(self, update: JobUpdate) -> Job | None:
        """Commit an update that returns the job (with those beside it); the job, or None when its guard
        did not hold."""
        job: Job | None = self._groups.wait(update)
        return job

    def soon(self, update: JobUpdate) -> None:
        """Commit an update in the next group without waiting for it (an error is logged). It is written
        before any update handed over after it."""
        self._groups.soon(update)

    def _write(self, group: list[Item[JobUpdate]]) -> None:
        """The group in one transaction; when a statement fails, each statement in its own."""
        group = sorted(group, key=_by_job)
        with self.write_lock, self.sessions() as session:
            try:
                results = [item.value.run(session) for item in group]
                session.commit()
            except Exception as exc:
                session.rollback()
                if len(group) == 1:
                    group[0].error = exc
                    return
            else:
                for item, result in zip(group, results, strict=True):
                    item.result = result
                return
        for item in group:
            self._write([item])


def _by_job(item: Item[JobUpdate]) -> str:
    """Rows are locked in job id order (Postgres), as a batch's cancel locks them: no deadlock between
    them. Stable: one job's updates keep their order (a first token before its finish)."""
    return str(item.value.params["b_id"])
