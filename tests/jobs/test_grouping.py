"""The group commit (app/grouping.py): items handed over together are done in one group, each keeps its
own result or error, nothing waits for ever, and order is kept."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.grouping import Groups, Item


class Recorder:
    """A group function that records its groups; it holds the first group until released."""

    def __init__(self, fail_on: object = None) -> None:
        self.groups: list[list[object]] = []
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, group: list[Item[object]]) -> None:
        if not self.groups:
            self.release.wait(5)
        self.groups.append([item.value for item in group])
        for item in group:
            if item.value == self.fail_on:
                item.error = ValueError(f"bad {item.value}")
            else:
                item.result = f"did {item.value}"


def test_alone_an_item_is_done_at_once_on_its_own_thread() -> None:
    threads: list[str] = []

    def do(group: list[Item[int]]) -> None:
        threads.append(threading.current_thread().name)
        group[0].result = group[0].value * 2

    groups = Groups(do, 8, "test")
    assert groups.wait(21) == 42
    assert threads == [threading.current_thread().name]


def test_items_arriving_while_a_group_is_written_share_the_next_group_each_with_its_own_outcome() -> None:
    recorder = Recorder(fail_on=3)
    groups: Groups[object] = Groups(recorder, 64, "test")

    def wait(value: int) -> str:
        try:
            return str(groups.wait(value))
        except ValueError as exc:
            return f"error: {exc}"

    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(wait, 0)
        while not groups._leading:
            pass
        rest = [pool.submit(wait, value) for value in range(1, 12)]
        while len(groups._pending) < 11:  # all waiting behind the held first group
            threading.Event().wait(0.001)
        recorder.release.set()
        answers = [first.result()] + [future.result() for future in rest]
    assert recorder.groups == [[0], list(range(1, 12))]
    assert answers == [f"did {value}" for value in range(3)] + ["error: bad 3"] + [
        f"did {value}" for value in range(4, 12)
    ]


def test_a_group_function_that_raises_fails_each_item_of_its_group_and_the_next_group_still_runs() -> None:
    calls = []

    def do(group: list[Item[int]]) -> None:
        calls.append(len(group))
        if len(calls) == 1:
            raise RuntimeError("database gone")
        for item in group:
            item.result = item.value

    groups = Groups(do, 8, "test")
    with pytest.raises(RuntimeError, match="database gone"):
        groups.wait(1)
    assert groups.wait(2) == 2


def test_groups_are_at_most_max_group_and_later_items_keep_their_order_behind_handed_over_ones() -> None:
    recorder = Recorder()
    groups: Groups[object] = Groups(recorder, 4, "test")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(groups.wait, "first")
        while not groups._leading:
            pass
        for value in range(10):
            groups.soon(value)  # a group is being written: queued, the caller goes on
        last = pool.submit(groups.wait, "last")
        while len(groups._pending) < 11:
            threading.Event().wait(0.001)
        recorder.release.set()
        assert (first.result(), last.result()) == ("did first", "did last")
    assert recorder.groups == [["first"], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, "last"]]
    assert not groups._leading and not groups._pending


def test_many_threads_hand_over_thousands_of_items_and_each_gets_its_own_result() -> None:
    def do(group: list[Item[int]]) -> None:
        for item in group:
            item.result = item.value + 1

    groups = Groups(do, 16, "test")
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(groups.wait, range(3000)))
    assert answers == list(range(1, 3001))
