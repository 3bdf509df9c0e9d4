"""Prometheus metrics of a worker process, served on its own port (see worker_observability.py).

Every series carries the five tags of the engine that ran the job. The registry is this module's,
not prometheus_client's global one, so the worker's /metrics shows exactly these series.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from app.jobs.store import JobOutcome
from app.metrics import LATENCY_BUCKETS, TAG_LABELS, tag_values
from app.models import Job

if TYPE_CHECKING:
    from workers.engine_host import EngineHost

log = logging.getLogger(__name__)

QUEUE_WAIT_BUCKETS = (*LATENCY_BUCKETS, 1800, 3600)  # a bulk batch can queue for an hour
# from a GPU's milliseconds to a loaded CPU's seconds per token
INTER_TOKEN_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)

WORKER_REGISTRY = CollectorRegistry()
JOBS_FINISHED = Counter(
    "gptoss_jobs_finished", "Jobs finished by this worker, by final status", [*TAG_LABELS, "status"],
    registry=WORKER_REGISTRY,
)  # fmt: skip
QUEUE_WAIT = Histogram(
    "gptoss_queue_wait_seconds", "From submit to a worker starting the job", TAG_LABELS,
    buckets=QUEUE_WAIT_BUCKETS, registry=WORKER_REGISTRY,
)  # fmt: skip
TIME_TO_FIRST_TOKEN = Histogram(
    "gptoss_time_to_first_token_seconds", "From the engine taking the job to its first token", TAG_LABELS,
    buckets=LATENCY_BUCKETS, registry=WORKER_REGISTRY,
)  # fmt: skip
E2E_LATENCY = Histogram(
    "gptoss_e2e_latency_seconds", "From the engine taking the job to its last token (no queue wait)",
    TAG_LABELS, buckets=LATENCY_BUCKETS, registry=WORKER_REGISTRY,
)  # fmt: skip
REQUEST_LATENCY = Histogram(
    "gptoss_request_latency_seconds",
    "From submit to the job's end, queue wait included (what vLLM's e2e_request_latency counts)",
    TAG_LABELS, buckets=QUEUE_WAIT_BUCKETS, registry=WORKER_REGISTRY,
)  # fmt: skip
INTER_TOKEN_LATENCY = Histogram(
    "gptoss_inter_token_latency_seconds", "Time between consecutive tokens of a job", TAG_LABELS,
    buckets=INTER_TOKEN_BUCKETS, registry=WORKER_REGISTRY,
)  # fmt: skip
PROMPT_TOKENS = Counter(
    "gptoss_prompt_tokens", "Prompt tokens of finished jobs", TAG_LABELS, registry=WORKER_REGISTRY
)
COMPLETION_TOKENS = Counter(
    "gptoss_completion_tokens", "Generated tokens of finished jobs", TAG_LABELS, registry=WORKER_REGISTRY
)


def observe_finished_job(job: Job, outcome: JobOutcome) -> None:
    """Count a job the worker just stored as finished, with the values stored in its row."""
    labels = tag_values(job.tags(), job.profile)  # a job whose engine never loaded: profile only
    JOBS_FINISHED.labels(**labels, status=job.status).inc()
    if job.started_at is not None:
        QUEUE_WAIT.labels(**labels).observe((job.started_at - job.created_at).total_seconds())
    if job.ttft_s is not None:
        TIME_TO_FIRST_TOKEN.labels(**labels).observe(job.ttft_s)
    if job.e2e_s is not None:
        E2E_LATENCY.labels(**labels).observe(job.e2e_s)
    if job.finished_at is not None:
        REQUEST_LATENCY.labels(**labels).observe((job.finished_at - job.created_at).total_seconds())
    observe_inter_token_gaps(labels, outcome.token_times)
    if job.prompt_tokens is not None:
        PROMPT_TOKENS.labels(**labels).inc(job.prompt_tokens)
    if job.completion_tokens is not None:
        COMPLETION_TOKENS.labels(**labels).inc(job.completion_tokens)


def observe_inter_token_gaps(labels: dict[str, str], token_times: Sequence[float]) -> None:
    histogram = INTER_TOKEN_LATENCY.labels(**labels)
    for earlier, later in zip(token_times, token_times[1:], strict=False):
        histogram.observe(max(0.0, later - earlier))


class EngineLoadCollector:
    """Batch gauges read from each loaded engine at scrape time: running and waiting requests, load time."""

    def __init__(self, host: EngineHost) -> None:
        self.host = host

    def describe(self) -> list[Metric]:
        return []  # the label sets appear once models load

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            "gptoss_batch_running_requests", "Requests in the engine's running batch", labels=TAG_LABELS
        )
        waiting = GaugeMetricFamily(
            "gptoss_batch_waiting_requests",
            "Requests submitted to the engine, not yet batched",
            labels=TAG_LABELS,
        )
        load_time = GaugeMetricFamily(
            "gptoss_engine_load_seconds", "How long the engine's model took to load", labels=TAG_LABELS
        )
        for engine in self.host.loaded_engines():
            values = [engine.tags.as_dict()[name] for name in TAG_LABELS]
            try:
                load = engine.load()
            except Exception as exc:  # a scrape must not fail because one engine is stopping
                log.warning("engine %s: load unavailable: %s", engine.tags.profile, exc)
                continue
            running.add_metric(values, load["running"])
            waiting.add_metric(values, load["waiting"])
            seconds = self.host.load_seconds.get(engine.tags.profile)
            if seconds is not None:
                load_time.add_metric(values, seconds)
        yield from (running, waiting, load_time)
