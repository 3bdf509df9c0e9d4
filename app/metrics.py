"""Prometheus metrics of the API process: requests by route, queue depth per profile, GET /metrics.

Several gunicorn worker processes: set PROMETHEUS_MULTIPROC_DIR (an empty folder, wiped at each
start) in the web process's environment before it starts; /metrics then sums every process's files.
Workers run their own /metrics (workers/metrics.py) and must not have that variable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import redis
from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from app.ops.served_models import served_tags
from app.queue import profile_queue_keys
from app.services import services

log = logging.getLogger(__name__)

TAG_LABELS = ("engine", "model_id", "model_size", "gpu_mode", "profile")
# LLM jobs take from milliseconds (one token) to many minutes (2048 tokens of a 120B model, or of any
# model on a CPU): the buckets reach 20 minutes.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200,
)  # fmt: skip

bp = Blueprint("metrics", __name__)

API_REGISTRY = CollectorRegistry()
API_REQUESTS = Counter(
    "gptoss_api_requests",
    "HTTP requests answered by the API, by route (the URL rule, not the raw path) and status; a request "
    "that submitted a job carries its profile's five tags (empty for the others)",
    ["method", "route", "status", *TAG_LABELS],
    registry=API_REGISTRY,
)
API_REQUEST_SECONDS = Histogram(
    "gptoss_api_request_duration_seconds",
    "Time to answer an HTTP request (to the first byte for streams), by route and the five tags",
    ["method", "route", *TAG_LABELS],
    buckets=LATENCY_BUCKETS,
    registry=API_REGISTRY,
)
JOBS_FINISHED_IN_API = Counter(
    "gptoss_jobs_finished",
    "Jobs that ended without reaching a worker (cancelled while queued, or answered from the response cache);"
    " workers count the rest",
    [*TAG_LABELS, "status"],
    registry=API_REGISTRY,
)


def tag_values(tags: dict[str, str] | None, profile: str) -> dict[str, str]:
    """The five label values; the ones nobody knows (no engine ran) stay empty, never guessed."""
    return {name: (tags or {}).get(name, "") for name in TAG_LABELS} | {"profile": profile}


def count_cancelled_while_queued(profile: str) -> None:
    """A job cancelled before any worker took it: no engine ran it, so only its profile is known."""
    JOBS_FINISHED_IN_API.labels(**tag_values(None, profile), status="cancelled").inc()


class QueueDepthCollector:
    """gptoss_queue_depth: jobs waiting in each profile's Celery queue, read from Redis at scrape."""

    def __init__(self, client: redis.Redis, profiles: list[str]) -> None:
        self.client = client
        self.profiles = profiles

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration; keeps register() from reading Redis

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "gptoss_queue_depth",
            "Jobs waiting in the profile's queue (not yet taken by a worker)",
            labels=TAG_LABELS,
        )
        try:
            depths = self.queue_depths()
            announced = served_tags(self.client, self.profiles)
        except redis.RedisError as exc:
            log.warning("queue depth unavailable: %s", exc)
            depths, announced = {}, {}
        for profile, depth in depths.items():
            labels = tag_values(announced.get(profile), profile)
            family.add_metric([labels[name] for name in TAG_LABELS], depth)
        yield family

    def queue_depths(self) -> dict[str, int]:
        """Waiting messages per profile, its lanes together (app/queue.py)."""
        pipe = self.client.pipeline(transaction=False)
        keys = {profile: profile_queue_keys(profile) for profile in self.profiles}
        for profile_keys in keys.values():
            for key in profile_keys:
                pipe.llen(key)
        lengths = iter(pipe.execute())
        return {profile: sum(next(lengths) for _ in profile_keys) for profile, profile_keys in keys.items()}


def api_metrics_registry(client: redis.Redis, profile_names: list[str]) -> CollectorRegistry:
    """The API's collectors read at scrape time: the queue depth of each profile."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueDepthCollector(client, profile_names))
    return registry


def time_requests(app: Flask) -> None:
    """Count and time every request by method, route and status."""
    app.before_request(_start_timer)
    app.after_request(_count_request)


def _start_timer() -> None:
    g.gptoss_request_started = time.perf_counter()


def _count_request(response: Response) -> Response:
    started = g.pop("gptoss_request_started", None)
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"  # bounded label values
    labels = {"method": request.method, "route": route, **request_tags()}
    API_REQUESTS.labels(status=str(response.status_code), **labels).inc()
    if started is not None:
        API_REQUEST_SECONDS.labels(**labels).observe(time.perf_counter() - started)
    return response


def request_tags() -> dict[str, str]:
    """The five tags of the one profile this request submitted to (its announced model, read once by
    the submit path: app/ops/served_models.py), else empty ones."""
    read: dict[str, dict[str, str] | None] = g.get("gptoss_served_tags") or {}
    if len(read) != 1:
        return tag_values(None, "")
    [(profile, tags)] = read.items()
    return tag_values(tags, profile)


def _process_registry() -> CollectorRegistry:
    """This process's metrics, or every gunicorn process's in multiprocess mode."""
    directory = services().metrics_multiprocess_dir
    if directory is None:
        return API_REGISTRY
    registry = CollectorRegistry()  # per scrape, as prometheus_client's multiprocess docs say
    MultiProcessCollector(registry, path=directory)
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition of the API's metrics."""
    body = generate_latest(_process_registry()) + generate_latest(services().metrics_registry)
    return Response(body, content_type=CONTENT_TYPE_LATEST)
