"""Each job's event log: a Redis stream the worker appends to and SSE readers replay and follow.

Events: `queued`, `started`, `delta` ({content, reasoning, completion_tokens}), and one terminal
event: `done` (the job's stored JSON, with usage and tags), `error` or `cancelled`. The Redis
entry id is the SSE event id, so `Last-Event-ID` resumes exactly after the last event seen. The
stream expires some time after its terminal event; readers then fall back to the stored job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from app.models import JobStatus

EVENTS_KEY_PREFIX = "gptoss:events:"
TERMINAL_EVENT_OF = {JobStatus.SUCCEEDED: "done", JobStatus.FAILED: "error", JobStatus.CANCELLED: "cancelled"}
TERMINAL_EVENTS = frozenset(TERMINAL_EVENT_OF.values())  # a job's last event: its final status
STREAM_MAXLEN = 100_000  # a job never produces more events than tokens; this only bounds a runaway


def events_key(job_id: str) -> str:
    return f"{EVENTS_KEY_PREFIX}{job_id}"


@dataclass(frozen=True)
class JobEvent:
    id: str  # Redis stream entry id, e.g. "1732791234567-0"
    type: str
    data: dict[str, Any]

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


class JobEventLog:
    """Append to and read from the per-job event streams."""

    def __init__(self, client: redis.Redis, ttl_s: int = 3600) -> None:
        self.client = client
        self.ttl_s = ttl_s

    def append(self, job_id: str, event_type: str, data: dict[str, Any]) -> str:
        """Add one event; a terminal event starts the stream's expiry clock."""
        return self.append_many([(job_id, event_type, data)])[0]

    def append_many(self, events: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
        """Add (job_id, event_type, data) events in order, in one round trip; returns their entry ids.
        A terminal event starts its stream's expiry clock."""
        pipe = self.client.pipeline(transaction=False)
        for job_id, event_type, data in events:
            key = events_key(job_id)
            fields = {"type": event_type, "data": json.dumps(data, separators=(",", ":"))}
            pipe.xadd(key, fields, maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
            if event_type in TERMINAL_EVENTS:
                pipe.expire(key, self.ttl_s)
        replies = pipe.execute()
        ids, index = [], 0
        for _job_id, event_type, _data in events:
            ids.append(_text(replies[index]))
            index += 2 if event_type in TERMINAL_EVENTS else 1
        return ids

    def exists(self, job_id: str) -> bool:
        return bool(self.client.exists(events_key(job_id)))

    def read_after(self, job_id: str, after: str = "0", block_ms: int | None = None) -> list[JobEvent]:
        """Events after entry id `after`; with block_ms, wait up to that long for new ones."""
        response: Any = self.client.xread({events_key(job_id): after}, count=500, block=block_ms)
        events: list[JobEvent] = []
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                events.append(_event(entry_id, fields))
        return events

    def follow(self, job_id: str, after: str = "0", poll_ms: int = 1000) -> Iterator[JobEvent | None]:
        """Yield events from `after` on until a terminal one; None after each idle poll (for heartbeats)."""
        cursor = after
        while True:
            events = self.read_after(job_id, cursor, block_ms=poll_ms)
            if not events:
                yield None
                continue
            for event in events:
                cursor = event.id
                yield event
                if event.is_terminal:
                    return


def _event(entry_id: Any, fields: dict[Any, Any]) -> JobEvent:
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    return JobEvent(_text(entry_id), decoded.get("type", "unknown"), json.loads(decoded.get("data", "{}")))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


REDIS_ID_PART_MAX = 2**64 - 1  # each part of a stream id is an unsigned 64-bit number


def valid_event_id(value: str) -> bool:
    """A well-formed Redis stream id ("<ms>-<seq>" or "<ms>"), each part within 64 bits."""
    head, _, tail = value.partition("-")
    parts = [head] if tail == "" else [head, tail]
    return all(part.isascii() and part.isdigit() and int(part) <= REDIS_ID_PART_MAX for part in parts)
