"""Helpers for tests that talk HTTP to a real server: a threaded WSGI server and an SSE reader."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from flask import Flask
from werkzeug.serving import make_server


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve `app` on a free loopback port in a thread (one thread per connection); yield its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Events from SSE text lines; comments (heartbeats) are skipped."""
    fields: dict[str, list[str]] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                yield SseEvent(
                    (fields.get("id") or [None])[0],
                    (fields.get("event") or [None])[0],
                    "\n".join(fields["data"]),
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.removeprefix(" "))


def job_events(
    base_url: str, job_id: str, last_event_id: str | None = None, limit: int | None = None
) -> list[SseEvent]:
    """Read a job's SSE stream until its terminal event (or `limit` events)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[SseEvent] = []
    with httpx.stream("GET", f"{base_url}/v1/jobs/{job_id}/events", headers=headers, timeout=60) as response:
        assert response.status_code == 200, response.read()
        for event in parse_sse(response.iter_lines()):
            events.append(event)
            if event.event in ("done", "error", "cancelled") or (limit is not None and len(events) >= limit):
                break
    return events


def streamed_text(events: list[SseEvent]) -> tuple[str, str]:
    """(content, reasoning) concatenated from the delta events."""
    deltas = [e.json() for e in events if e.event == "delta"]
    return "".join(d["content"] for d in deltas), "".join(d["reasoning"] for d in deltas)
