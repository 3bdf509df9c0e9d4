"""The worker's event publisher: one thread, many events per round trip, order kept, nothing lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from app.jobs.events import JobEventLog
from workers.event_publisher import TERMINAL_WAIT_S, BatchedEventPublisher

PUBLISHER_REDIS_DB = 13


@pytest.fixture
def log(redis_base_url: str) -> Iterator[JobEventLog]:
    client = redis.Redis.from_url(f"{redis_base_url}/{PUBLISHER_REDIS_DB}")
    client.flushdb()
    yield JobEventLog(client, ttl_s=60)
    client.flushdb()


def test_events_of_many_threads_arrive_in_order_in_fewer_round_trips(log: JobEventLog) -> None:
    publisher = BatchedEventPublisher(log)
    jobs, deltas = 16, 40

    def job(index: int) -> None:
        for n in range(deltas):
            publisher.append(f"job{index}", "delta", {"content": f"{n} ", "completion_tokens": n + 1})
        publisher.append(f"job{index}", "done", {"id": f"job{index}"})  # returns once it is in Redis

    threads = [threading.Thread(target=job, args=(i,)) for i in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(jobs):
        events = log.read_after(f"job{index}")  # readable at once: the terminal event was waited for
        assert [e.type for e in events] == ["delta"] * deltas + ["done"]
        assert "".join(e.data["content"] for e in events[:-1]) == "".join(f"{n} " for n in range(deltas))
        assert log.client.ttl(f"gptoss:events:job{index}") > 0  # the terminal event set the expiry
    assert publisher.batches < jobs * (deltas + 1)  # batched: fewer pipelines than events
    publisher.stop()


def test_stop_sends_what_is_queued(log: JobEventLog) -> None:
    publisher = BatchedEventPublisher(log)
    for n in range(100):
        publisher.append("job", "delta", {"content": str(n)})
    publisher.stop()
    assert [e.data["content"] for e in log.read_after("job")] == [str(n) for n in range(100)]


def test_redis_down_loses_the_events_but_never_fails_or_blocks_the_job() -> None:
    dead = JobEventLog(redis.Redis(port=1, socket_connect_timeout=0.2), ttl_s=60)  # nothing listens on port 1
    publisher = BatchedEventPublisher(dead)
    publisher.append("job", "delta", {"content": "x"})
    started = time.monotonic()
    publisher.append("job", "done", {"id": "job"})  # waits for the failed send, not for TERMINAL_WAIT_S
    assert time.monotonic() - started < TERMINAL_WAIT_S
    publisher.stop()
