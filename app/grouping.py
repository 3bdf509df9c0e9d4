"""Work that arrives together is done together, by whichever caller came first (group commit).

Threads hand over items (a job row to insert, a job's UPDATE) and wait. The first to arrive while no
group is being written leads: it takes everything waiting (up to `max_group`), does it in one go
(one transaction, one Redis round trip) and gives each item its own result or error. Items that came
meanwhile wait; when the group is done, the first of them that waits for its result leads the next
group. So an item alone is done at once, on its own thread, with no hand-over and no timer; under
load a group is what arrived while the last one was written. No thread of its own: nothing to start,
stop, or restart after a fork.

Used by the API's submits (app/jobs/grouped.py) and a worker's job transitions (workers/grouped_writes.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(eq=False)
class Item(Generic[T]):
    """One handed-over piece of work; the group's function sets `result` or `error` on it."""

    value: T
    result: Any = None
    error: BaseException | None = None
    waits: bool = True  # False: its caller went on (`soon`); it never leads a group
    done: bool = False
    wake: threading.Event = field(default_factory=threading.Event)  # done, or its turn to lead


class Groups(Generic[T]):
    def __init__(self, do_group: Callable[[list[Item[T]]], None], max_group: int, name: str) -> None:
        """`do_group(items)` does a group's work and sets each item's result or error; if it raises,
        every item of the group that has no error yet gets that exception."""
        self.do_group, self.max_group, self.name = do_group, max_group, name
        self._mutex = threading.Lock()
        self._pending: list[Item[T]] = []
        self._leading = False  # a thread is doing a group now, or has been told to lead the next

    def wait(self, value: T) -> Any:
        """Do `value` with whatever arrives beside it; its result, or its error raised."""
        item = Item(value)
        lead = self._join(item)
        if not lead:
            item.wake.wait()
            lead = not item.done
        if lead:
            self._lead(item)
        if item.error is not None:
            raise item.error
        return item.result

    def soon(self, value: T) -> None:
        """Hand `value` over without waiting: done in the next group (or now, here, if none is being
        written); an error is only logged. Items keep their order: one handed over before another is
        done in the same or an earlier group."""
        if self._join(Item(value, waits=False)):
            self._lead(None)

    def _join(self, item: Item[T]) -> bool:
        """Queue the item; True when its caller must lead (no group is being written)."""
        with self._mutex:
            self._pending.append(item)
            if self._leading:
                return False
            self._leading = True
            return True

    def _lead(self, mine: Item[T] | None) -> None:
        """Do the waiting groups until `mine` is done and another waiting item can lead the next (or
        none is left)."""
        while True:
            with self._mutex:
                group = self._pending[: self.max_group]
                del self._pending[: self.max_group]
            self._do(group)
            with self._mutex:
                if not self._pending:
                    self._leading = False
                    return
                if mine is not None and not mine.done:
                    continue  # more than a group came before it
                waiter = next((item for item in self._pending if item.waits), None)
                if waiter is not None:
                    waiter.wake.set()  # it leads the next group; _leading stays True
                    return

    def _do(self, group: list[Item[T]]) -> None:
        try:
            self.do_group(group)
        except BaseException as exc:  # never leave an item waiting for ever
            log.exception("%s: a group of %d failed", self.name, len(group))
            for item in group:
                item.error = item.error or exc
        for item in group:
            if item.error is not None and not item.waits:
                log.warning("%s: %s failed: %s", self.name, item.value, item.error)
            item.done = True
            item.wake.set()
