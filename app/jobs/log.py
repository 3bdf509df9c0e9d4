"""One JSON line per job transition (queued, started, succeeded, failed, cancelled) on stderr.

Each line carries the job id and the five tags, so `grep '"model_id":"openai/gpt-oss-20b"'` or a log
shipper can follow any job or model. The API logs `queued` (with the tags its profile's workers
announced: the model expected to run it), `cancelled` (while queued) and `cancel_requested`;
workers log `started` and the final status with the tags of the engine that really ran the job.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from app.metrics import TAG_LABELS

JOB_LOGGER_NAME = "gptoss.jobs"
log = logging.getLogger(JOB_LOGGER_NAME)


def log_job_transition(transition: str, job_id: str, tags: Mapping[str, str] | None, **fields: Any) -> None:
    """Log `job.<transition>` with the job id, the five tags (empty when unknown) and `fields`."""
    record = {"event": f"job.{transition}", "job_id": job_id}
    record |= {name: (tags or {}).get(name, "") for name in TAG_LABELS}
    record |= {name: value for name, value in fields.items() if value is not None}
    log.info("job %s %s", job_id, transition, extra={"job_fields": record})


class JsonLineFormatter(logging.Formatter):
    """A record as one JSON object: time, level, then the job fields (or the message)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "job_fields", None) or {"message": record.getMessage()}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = {"ts": f"{stamp}.{int(record.msecs):03d}Z", "level": record.levelname.lower(), **fields}
        return json.dumps(line, separators=(",", ":"), default=str)


class LineWriter(logging.Handler):
    """Writes each record as one line with one write(2) on a file descriptor, holding no lock.

    logging's StreamHandler holds its lock while it formats, writes and flushes. A worker running a
    batch's lines on 256 threads logs two lines per job, and the threads queued on that lock: a dump
    of a paced batch run found 140-180 of them waiting there, and the run did 245 lines/s. Here each
    thread formats on its own and writes its line in one call. A write of under PIPE_BUF (4,096)
    bytes to a pipe is atomic, and Linux moves a file's offset atomically for each write, so lines
    never interleave; a longer line to a pipe may be split by another thread's."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def handle(self, record: logging.LogRecord) -> bool:
        """As Handler.handle, without taking the handler's lock (emit needs none)."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = memoryview((self.format(record) + "\n").encode())
            while line:
                line = line[os.write(self.fd, line) :]
        except Exception:
            self.handleError(record)


def configure_job_log() -> None:
    """Send job transitions to stderr as JSON lines, once per process, not through the root logger.

    Own handler: the API's root logger has none under gunicorn, and a Celery worker's would print the
    line a second time in its own format. It writes to the process's real stderr (file descriptor 2),
    not to sys.stderr, which a Celery worker turns into WARNING log records.
    """
    if any(isinstance(handler.formatter, JsonLineFormatter) for handler in log.handlers):
        return
    stderr = sys.__stderr__ or sys.stderr
    try:
        handler: logging.Handler = LineWriter(stderr.fileno())
    except (AttributeError, OSError, ValueError):  # a stderr without a file descriptor (a test's capture)
        handler = logging.StreamHandler(stderr)
    handler.setFormatter(JsonLineFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
