"""Client side of the job event stream: `gptoss submit --stream` prints tokens as they arrive."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import httpx


def sse_messages(lines: Iterator[str]) -> Iterator[tuple[str | None, str | None, str]]:
    """(id, event, data) per SSE message; comment lines (heartbeats) are skipped."""
    event_id: str | None = None
    event: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event_id, event, "\n".join(data)
            event_id, event, data = None, None, []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                event_id = value
            elif name == "event":
                event = value
            elif name == "data":
                data.append(value)


def print_job_stream(
    client: httpx.Client, job_id: str, *, show_reasoning: bool = False, out: TextIO | None = None
) -> int:
    """Follow the job's events, resuming after a dropped connection; 0 when it succeeded."""
    out = out or sys.stdout  # looked up now, so redirected stdout (tests, pipes) is honoured
    last_id: str | None = None
    for _attempt in range(5):
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None) as response:
                if response.is_error:
                    response.read()
                    raise SystemExit(f"gptoss: HTTP {response.status_code}: {response.text[:200]}")
                for event_id, event, data in sse_messages(response.iter_lines()):
                    last_id = event_id or last_id
                    payload: dict[str, Any] = json.loads(data)
                    if event == "delta":
                        out.write(payload.get("content", ""))
                        out.flush()
                        if show_reasoning and payload.get("reasoning"):
                            print(payload["reasoning"], end="", file=sys.stderr, flush=True)
                    elif event in ("done", "error", "cancelled"):
                        out.write("\n")
                        return finish(payload)
        except httpx.TransportError as exc:  # reconnect with Last-Event-ID: no gaps, no duplicates
            print(f"\ngptoss: stream interrupted ({exc}); resuming", file=sys.stderr)
    raise SystemExit(f"gptoss: lost the event stream of {job_id}")


def finish(job: dict[str, Any]) -> int:
    if job.get("status") == "succeeded":
        return 0
    detail = (job.get("error") or {}).get("message") or job.get("status")
    print(f"job {job.get('id')} {job.get('status')}: {detail}", file=sys.stderr)
    return 1
