"""The open-loop load driver: each request is sent on schedule in its own thread and timed by streaming.

A request is POST /v1/jobs, then GET /v1/jobs/{id}/events (which replays from the first event, so
nothing is missed between the two). Time to first token is the first `delta` event seen by this
client, end to end the terminal event; both count from just before the POST. A slow request never
delays the next arrival, so a struggling service shows as latency and errors, not as fewer requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from app.jobs.events import TERMINAL_EVENTS
from app.models import GATE_METADATA_KEY
from gate.suite import GatePrompt

READ_TIMEOUT_S = 60.0  # longer than the API's SSE heartbeat (15 s), so a live stream never times out
JOIN_GRACE_S = READ_TIMEOUT_S + 10  # a request thread notices its deadline within one read


@dataclass
class RequestSample:
    """One request of a run, as the client saw it (seconds from the start of the run / of the request)."""

    index: int
    prompt: str
    scheduled_s: float
    sent_s: float | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    ok: bool = False
    error: str | None = None
    completion_tokens: int | None = None
    job_id: str | None = None
    tags: dict[str, str] | None = None  # the model that served it (from the job's final event)
    quality: dict[str, Any] | None = None  # the answer's quality signals (app/quality.py), same source

    def as_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key not in ("tags", "quality")}


@dataclass(frozen=True)
class LoadPlan:
    base_url: str
    profile: str
    run_id: str
    prompts: tuple[GatePrompt, ...]
    arrivals: list[float]  # send offsets in seconds, ascending
    request_timeout_s: float
    api_key: str | None = None  # sent as `Authorization: Bearer <key>` when the API requires keys

    def prompt_of(self, index: int) -> GatePrompt:
        return self.prompts[index % len(self.prompts)]


@dataclass(frozen=True)
class LoadResult:
    samples: list[RequestSample]
    started_at: float  # unix time of the run's start
    run_s: float  # start to the end of the last request


def drive_load(plan: LoadPlan) -> LoadResult:
    """Send every request of the plan at its arrival time; return when all have ended."""
    samples = [RequestSample(i, plan.prompt_of(i).name, offset) for i, offset in enumerate(plan.arrivals)]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=32)
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=10.0)
    headers = auth_headers(plan.api_key)
    with httpx.Client(base_url=plan.base_url, timeout=timeout, limits=limits, headers=headers) as client:
        started_at, start = time.time(), time.monotonic()
        threads = []
        for sample in samples:
            time.sleep(max(0.0, start + sample.scheduled_s - time.monotonic()))
            arguments = (client, plan, sample, start)
            thread = threading.Thread(target=send_request, args=arguments, name="gate-request", daemon=True)
            thread.start()
            threads.append(thread)
        for sample, thread in zip(samples, threads, strict=True):
            last_moment = start + sample.scheduled_s + plan.request_timeout_s + JOIN_GRACE_S
            thread.join(timeout=max(0.0, last_moment - time.monotonic()))
        run_s = time.monotonic() - start
    for sample, thread in zip(samples, threads, strict=True):
        if thread.is_alive() and sample.error is None and not sample.ok:
            sample.error = f"timed out after {plan.request_timeout_s:.0f} s"
    return LoadResult(samples, started_at, run_s)


def send_request(client: httpx.Client, plan: LoadPlan, sample: RequestSample, start: float) -> None:
    """Submit one job and follow its events, filling in `sample`; never raises."""
    prompt = plan.prompt_of(sample.index)
    sent = time.monotonic()
    sample.sent_s = sent - start
    try:
        response = client.post("/v1/jobs", json=prompt.job_body(plan.profile, plan.run_id, GATE_METADATA_KEY))
        if response.status_code not in (200, 202):
            sample.error = f"HTTP {response.status_code}: {api_error_message(response)}"
            return
        sample.job_id = response.json()["id"]
        follow_events(client, sample, sent, sent + plan.request_timeout_s)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"[:300]


def follow_events(client: httpx.Client, sample: RequestSample, sent: float, deadline: float) -> None:
    """Read the job's SSE stream until its terminal event or the deadline (then cancel the job)."""
    with client.stream("GET", f"/v1/jobs/{sample.job_id}/events") as response:
        if response.status_code != 200:
            sample.error = f"HTTP {response.status_code} on the event stream"
            return
        for event in sse_events(response.iter_lines()):
            now = time.monotonic()
            if event is not None and event[0] == "delta":
                if sample.ttft_s is None:
                    sample.ttft_s = now - sent
                sample.completion_tokens = event[1].get("completion_tokens", sample.completion_tokens)
            elif event is not None and event[0] in TERMINAL_EVENTS:
                record_final_event(sample, event[0], event[1], now - sent)
                return
            if now > deadline:
                sample.error = f"timed out after {deadline - sent:.0f} s"
                cancel_quietly(client, sample.job_id)
                return
    sample.error = "the event stream ended before the job did"


def record_final_event(sample: RequestSample, event: str, job: dict[str, Any], elapsed_s: float) -> None:
    sample.e2e_s = elapsed_s
    sample.tags = job.get("tags")
    sample.quality = job.get("quality")
    usage = job.get("usage") or {}
    sample.completion_tokens = usage.get("completion_tokens", sample.completion_tokens)
    if event == "done" and job.get("status") == "succeeded":
        sample.ok = True
        return
    message = (job.get("error") or {}).get("message") or ""
    sample.error = f"job {job.get('status') or event}: {message}".rstrip(": ")[:300]


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]] | None]:
    """(event, JSON data) per SSE message; None for each comment (heartbeat), so callers can check time."""
    name = "message"
    data: list[str] = []
    for line in lines:
        if line.startswith(":"):
            yield None
        elif line == "":
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def api_error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def cancel_quietly(client: httpx.Client, job_id: str | None) -> None:
    """A request the gate gave up on should not keep a worker busy."""
    try:
        client.post(f"/v1/jobs/{job_id}/cancel", timeout=5.0)
    except httpx.HTTPError:
        pass
