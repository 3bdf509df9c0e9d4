"""A profile's lanes: which queue a job waits in, and the order a worker asks them in (LaneOrder)."""

from __future__ import annotations

import pytest

from app.queue import (
    FAIR_BUCKETS,
    LaneOrder,
    batch_slots_for,
    fair_bucket,
    job_queue,
    lane_of,
    lane_queue,
    profile_queue_keys,
    profile_queues,
)

LANES = ["p.high", "p", "p.low", "p.batch"]


def take(order: LaneOrder, waiting: dict[str, int], count: int) -> list[str]:
    """What a worker takes `count` times from queues holding `waiting` messages: as Redis's BRPOP
    does, from the first non-empty queue in the order asked."""
    taken = []
    for _ in range(count):
        queue = next((q for q in order.consume(len(order.items)) if waiting.get(q)), None)
        if queue is None:
            break
        waiting[queue] -= 1
        taken.append(order.rotate(queue))
    return taken


def test_a_jobs_lane_is_its_batch_or_its_priority() -> None:
    assert lane_of("batch_1", {"priority": "high"}) == "batch"  # a batch line never jumps the queue
    assert [lane_of(None, {"priority": p}) for p in ("high", "normal", "low")] == ["high", "normal", "low"]
    assert lane_of(None, {}) == "normal"
    assert [lane_queue("p", lane) for lane in ("high", "normal", "batch")] == ["p.high", "p", "p.batch"]
    assert lane_queue("p", "batch", 2) == "p.batch~2" and lane_queue("p", "normal", 3) == "p~3"
    assert profile_queues("p")[::FAIR_BUCKETS] == LANES  # each lane's queues together, in lane order
    assert len(profile_queues("p")) == 4 * FAIR_BUCKETS
    assert profile_queue_keys("p") == profile_queues("p")  # one kombu priority step: a list per queue


def test_a_jobs_queue_is_its_lane_and_the_bucket_of_its_key_else_its_batch() -> None:
    assert job_queue("p", None, {}) == "p"  # no key: the first bucket
    assert job_queue("p", None, {"priority": "low"}, owner="key-a") == lane_queue(
        "p", "low", fair_bucket("key-a")
    )
    assert job_queue("p", "batch_1", {}) == lane_queue("p", "batch", fair_bucket("batch_1"))
    assert job_queue("p", "batch_1", {}, owner="key-a") == lane_queue("p", "batch", fair_bucket("key-a"))
    buckets = {fair_bucket(f"key-{i}") for i in range(40)}
    assert buckets == set(range(FAIR_BUCKETS))  # keys spread over every bucket
    assert fair_bucket("key-a") == fair_bucket("key-a")  # the same in every process (no salted hash())


def test_inside_a_lane_the_buckets_take_turns() -> None:
    order = LaneOrder(batch_turn_every=0)
    order.update(profile_queues("p"))
    flood, other = lane_queue("p", "batch", 1), lane_queue("p", "batch", 2)
    waiting = {flood: 100, other: 3}  # one key's big batch, then another key's small one
    assert take(order, waiting, 8) == [flood, other, flood, other, flood, other, flood, flood]


def test_lanes_are_taken_by_rank_whatever_order_kombu_gives_them() -> None:
    order = LaneOrder(batch_turn_every=0)
    order.update(["p.batch", "p.low", "p", "p.high"])
    assert take(order, {"p.batch": 2, "p.low": 1, "p": 2, "p.high": 1}, 6) == [
        "p.high", "p", "p", "p.low", "p.batch", "p.batch",
    ]  # fmt: skip


@pytest.mark.parametrize("every", [2, 5, 10])
def test_while_interactive_work_waits_one_in_every_n_taken_is_a_batch_line(every: int) -> None:
    order = LaneOrder(batch_turn_every=every)
    order.update(LANES)
    taken = take(order, {"p": 1000, "p.batch": 1000}, 10 * every)
    assert taken.count("p.batch") == 10  # a share, not starvation
    assert all(taken[i] == "p.batch" for i in range(every - 1, 10 * every, every))


def test_an_empty_batch_lane_costs_the_other_lanes_nothing() -> None:
    order = LaneOrder(batch_turn_every=3)
    order.update(LANES)
    assert take(order, {"p": 7}, 10) == ["p"] * 7
    assert take(order, {"p": 2, "p.batch": 1}, 3) == ["p.batch", "p", "p"]  # its turn came meanwhile


def test_batch_lines_never_hold_the_slots_kept_for_interactive_work() -> None:
    held = {"lines": 0}
    order = LaneOrder(batch_turn_every=2, batch_slots=3, in_hand=lambda: held["lines"])
    order.update(LANES)
    waiting = {"p": 0, "p.batch": 100}
    for _ in range(3):
        assert take(order, waiting, 1) == ["p.batch"]  # no interactive work: batch lines fill 3 slots
        held["lines"] += 1
    assert take(order, waiting, 1) == []  # the fourth slot waits for interactive work
    waiting["p"] = 5
    assert take(order, waiting, 2) == ["p", "p"]  # which takes it at once, even on the batch's turn
    held["lines"] -= 1  # a line ended
    assert take(order, waiting, 1) == ["p.batch"]


def test_a_worker_of_one_slot_or_no_reserve_gives_batches_every_slot() -> None:
    assert [batch_slots_for(max_batch, 1) for max_batch in (1, 2, 16)] == [None, 1, 15]
    assert batch_slots_for(16, 0) is None


def test_a_workers_celery_conf_travels_as_json_for_flower_and_still_builds_a_lane_order() -> None:
    from kombu.utils import json as kombu_json
    from kombu.utils.scheduling import cycle_by_name

    from app.queue import celery_config
    from app.settings import load_settings

    config = celery_config(load_settings({"BATCH_TURN_EVERY": 7}), ["p"], batch_slots=3)
    kombu_json.dumps(config["broker_transport_options"])  # Celery's `conf` reply, as Flower asks it
    order = cycle_by_name(config["broker_transport_options"]["queue_order_strategy"])()
    assert isinstance(order, LaneOrder)
    assert (order.batch_turn_every, order.batch_slots) == (7, 3)


def test_a_workers_brpop_names_each_queue_once_and_a_published_job_lands_in_those_lists(
    redis_base_url: str,
) -> None:
    """kombu's Redis channel takes one priority step from the config (16 BRPOP keys per message, not 64),
    and a message published through it goes to the queue's own list, which that BRPOP names."""
    import redis as redis_lib
    from celery import Celery

    from app.queue import celery_config, profile_queue_keys
    from app.settings import load_settings

    url = f"{redis_base_url}/13"
    celery_app = Celery("lanes-test")
    celery_app.conf.update(celery_config(load_settings({"REDIS_URL": url}), ["p"]))
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    try:
        with celery_app.connection_for_write() as connection:
            assert connection.default_channel.priority_steps == [0]
            celery_app.send_task("noop", queue=lane_queue("p", "low", 1), connection=connection)
        waiting = {key.decode() for key in client.keys("p*")}
        assert waiting == {lane_queue("p", "low", 1)} and waiting <= set(profile_queue_keys("p"))
    finally:
        client.flushdb()


def test_counting_the_batch_lines_in_hand_survives_other_threads_taking_and_ending_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The consumer counts while the pool's threads add and drop requests; iterating the WeakSet then
    raised `Set changed size during iteration`, which killed the worker (a paced batch bench did)."""
    import threading
    import weakref
    from types import SimpleNamespace

    from celery.worker import state

    from app.queue import batch_lines_in_hand

    class Request(SimpleNamespace):
        __hash__ = object.__hash__  # hashable, as Celery's requests are

    def line() -> Request:
        return Request(delivery_info={"routing_key": "p.batch"}, args=["job"], id="task")

    held = [line() for _ in range(200)]
    reserved: weakref.WeakSet[Request] = weakref.WeakSet(held)
    monkeypatch.setattr(state, "reserved_requests", reserved)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            extra = line()
            reserved.add(extra)
            reserved.discard(extra)

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        counts = {batch_lines_in_hand() for _ in range(3000)}
    finally:
        stop.set()
        churner.join()
    assert counts <= {200, 201}


def test_a_message_of_several_lines_holds_their_slots_until_each_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch's lines travel several to a message; each holds its slot until it ends, not until the
    whole message does (a long line would keep the short ones' slots idle)."""
    import weakref
    from types import SimpleNamespace

    from celery.worker import state

    from app.queue import batch_lines_in_hand, line_ended, message_done

    class Request(SimpleNamespace):
        __hash__ = object.__hash__

    held = [
        Request(delivery_info={"routing_key": "p.batch~2"}, args=["a", "b", "c"], id="t1"),
        Request(delivery_info={"routing_key": "p.batch"}, args=["d"], id="t2"),
        Request(delivery_info={"routing_key": "p"}, args=["e"], id="t3"),  # interactive: not a line
    ]
    monkeypatch.setattr(state, "reserved_requests", weakref.WeakSet(held))
    assert batch_lines_in_hand() == 4
    line_ended("t1")
    line_ended("t1")
    assert batch_lines_in_hand() == 2
    message_done("t1")
    held.pop(0)  # Celery drops the request once its task returns
    assert batch_lines_in_hand() == 1


def test_the_batch_lane_is_not_asked_when_one_more_message_could_pass_the_slots() -> None:
    held = {"lines": 0}
    order = LaneOrder(batch_turn_every=2, batch_slots=12, in_hand=lambda: held["lines"], message_lines=4)
    order.update(LANES)
    waiting = {"p": 0, "p.batch": 100}
    for _ in range(3):
        assert take(order, waiting, 1) == ["p.batch"]
        held["lines"] += 4  # each message brought 4 lines
    assert take(order, waiting, 1) == []  # 12 held: a fourth message could bring 16
    held["lines"] = 9  # three of them ended
    assert take(order, waiting, 1) == []  # 9 + 4 > 12
    held["lines"] = 8
    assert take(order, waiting, 1) == ["p.batch"]


def test_lines_per_message_is_a_quarter_of_the_batch_slots_within_bounds() -> None:
    from app.queue import MAX_LINES_PER_MESSAGE, lines_per_message

    assert lines_per_message(batch_slots_for(8, 1)) == 1  # a small worker: one line a message, as before
    assert lines_per_message(batch_slots_for(32, 1)) == 7
    assert lines_per_message(batch_slots_for(256, 1)) == MAX_LINES_PER_MESSAGE
    assert lines_per_message(batch_slots_for(16, 0)) == 1  # no reserve: its lines are not counted
    assert lines_per_message(batch_slots_for(1, 1)) == 1
