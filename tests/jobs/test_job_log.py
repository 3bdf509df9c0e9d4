"""The job log's writer: one JSON line per transition, written by each thread without a shared lock."""

from __future__ import annotations

import json
import logging
import os
import threading

from app.jobs.log import JsonLineFormatter, LineWriter


def test_each_record_is_one_whole_line_and_a_held_handler_lock_does_not_stop_it() -> None:
    """StreamHandler formats and writes under its lock: 140-180 of a worker's 270 threads queued on it.
    LineWriter takes none; a thread holding the handler's lock (as StreamHandler would) does not hold
    the others back, and lines from many threads arrive whole."""
    read_end, write_end = os.pipe()
    handler = LineWriter(write_end)
    handler.setFormatter(JsonLineFormatter())
    logger = logging.getLogger("gptoss.test-line-writer")
    logger.propagate, logger.handlers = False, [handler]
    logger.setLevel(logging.INFO)

    def log_lines(thread: int) -> None:
        for i in range(50):
            logger.info("m", extra={"job_fields": {"event": "job.started", "job_id": f"{thread}-{i}"}})

    handler.acquire()  # what a StreamHandler's emit holds
    try:
        threads = [threading.Thread(target=log_lines, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads)  # none waited for the lock
    finally:
        handler.release()
        os.close(write_end)
    with os.fdopen(read_end) as written:
        lines = [json.loads(line) for line in written.read().splitlines()]
    assert sorted(line["job_id"] for line in lines) == sorted(f"{t}-{i}" for t in range(8) for i in range(50))
    assert {line["event"] for line in lines} == {"job.started"}
