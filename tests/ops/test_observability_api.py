"""The API's side of observability without workers: /v1/stats from stored rows, /metrics, job logs."""

from __future__ import annotations

import json
import random
import re
import statistics
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from flask import Flask

from app import create_app
from app.models import Job, JobStatus, utcnow
from app.ops.served_models import announce_served_model
from app.ops.stats import percentile
from app.services import services
from tests.support.apps import app_config
from tests.support.paths import REPO_ROOT
from tests.support.prometheus_text import FIVE_TAGS, series, value
from tests.support.services import empty_database

API_REDIS_DB = 8  # no worker consumes it: submitted jobs stay queued
TAGS = {"engine": "transformers-cb", "model_id": "tiny-gptoss", "model_size": "20b", "gpu_mode": "cpu"}


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty migrated database of its own, so counts are exact."""
    with empty_database(request, tmp_path, "gptoss_obs") as url:
        yield url


@pytest.fixture
def api(test_dir: Path, profiles_file: Path, fresh_database_url: str, redis_base_url: str) -> Iterator[Flask]:
    redis_url = f"{redis_base_url}/{API_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    app = create_app(
        app_config(test_dir, profiles_file, fresh_database_url, redis_url) | {"STATS_MAX_JOBS": 40}
    )
    yield app
    services(app).db_engine.dispose()
    redis.Redis.from_url(redis_url).flushdb()


def stored_jobs(now: datetime) -> list[dict[str, Any]]:
    """45 finished and unfinished jobs with varied timings; 5 of them two days old."""
    rng = random.Random(7)
    statuses = [JobStatus.SUCCEEDED] * 6 + [JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.RUNNING]
    jobs = []
    for i in range(45):
        created = now - (timedelta(days=2, minutes=i) if i < 5 else timedelta(minutes=45 - i))
        status = JobStatus.QUEUED if i == 44 else statuses[i % len(statuses)]
        started = None if status is JobStatus.QUEUED else created + timedelta(seconds=rng.uniform(0, 20))
        timed = status in (JobStatus.SUCCEEDED, JobStatus.CANCELLED)  # failed ones failed before a token
        ttft = rng.uniform(0.05, 3) if timed else None
        jobs.append(
            {
                "id": f"job_{i:012x}{0:016x}",  # ids are time-ordered: newest = highest
                "profile": "quality_first" if i % 4 == 0 else "latency_first",
                "status": status,
                "created_at": created,
                "started_at": started,
                "ttft_s": ttft,
                "e2e_s": ttft + rng.uniform(0.5, 30) if ttft is not None else None,
                "completion_tokens": rng.randint(1, 500) if ttft is not None else None,
            }
        )
    return jobs


def insert(app: Flask, jobs: list[dict[str, Any]]) -> None:
    with services(app).sessions() as session:
        for job in jobs:
            tags = {f"tag_{k}": v for k, v in (TAGS | {"profile": job["profile"]}).items()}
            session.add(Job(**job, **tags, request={}, request_hash="-", task_id="-"))
        session.commit()


def expected_stats(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures recomputed independently of app/ops/stats.py (statistics.quantiles, inclusive)."""

    def p50_p95(values: list[float]) -> tuple[float, float]:
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        return cuts[49], cuts[94]

    timed = [j for j in jobs if j["ttft_s"] is not None]
    rates = [
        (j["completion_tokens"] - 1) / (j["e2e_s"] - j["ttft_s"]) for j in timed if j["completion_tokens"] > 1
    ]
    succeeded = sum(j["status"] == "succeeded" for j in jobs)
    failed = sum(j["status"] == "failed" for j in jobs)
    return {
        "count": len(jobs),
        "by_status": {s.value: sum(j["status"] == s for j in jobs) for s in JobStatus},
        "error_rate": failed / (succeeded + failed),
        "queue_wait_s": p50_p95(
            [(j["started_at"] - j["created_at"]).total_seconds() for j in jobs if j["started_at"]]
        ),
        "ttft_s": p50_p95([j["ttft_s"] for j in timed]),
        "e2e_s": p50_p95([j["e2e_s"] for j in timed]),
        "decode_tokens_per_s": p50_p95(rates),
    }


def assert_stats(body: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
    expected = expected_stats(jobs)
    assert body["count"] == expected["count"]
    assert body["by_status"] == expected["by_status"]
    assert body["error_rate"] == pytest.approx(expected["error_rate"])
    for figure in ("queue_wait_s", "ttft_s", "e2e_s", "decode_tokens_per_s"):
        p50, p95 = expected[figure]
        assert (body[figure]["p50"], body[figure]["p95"]) == (
            pytest.approx(p50, abs=1e-5),
            pytest.approx(p95, abs=1e-5),
        )


def test_stats_match_the_stored_jobs_in_a_window_and_profile(api: Flask) -> None:
    now = utcnow()
    jobs = stored_jobs(now)
    insert(api, jobs)
    client = api.test_client()
    day_ago = now - timedelta(days=1)
    recent_latency = [j for j in jobs if j["profile"] == "latency_first" and j["created_at"] >= day_ago]

    query = {"profile": "latency_first", "since": day_ago.isoformat()}  # "+00:00" needs URL encoding
    by_iso = client.get("/v1/stats", query_string=query).get_json()
    assert_stats(by_iso, recent_latency)
    assert by_iso["truncated"] is False and by_iso["profile"] == "latency_first"
    by_unix = client.get("/v1/stats", query_string=query | {"since": day_ago.timestamp()}).get_json()
    assert by_unix == by_iso

    everything = client.get("/v1/stats").get_json()  # 45 jobs, STATS_MAX_JOBS 40: the newest 40
    assert everything["truncated"] is True
    assert_stats(everything, sorted(jobs, key=lambda j: j["id"])[-40:])


def test_stats_count_tool_calls_and_the_invalid_ones(api: Flask) -> None:
    now = utcnow()
    good = {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
    bad = {
        "id": "call_2",
        "name": "get_weather",
        "arguments": "{",
        "error": "the arguments are not valid JSON",
    }
    jobs = [
        {"id": f"job_{i:012x}{0:016x}", "profile": "latency_first", "status": JobStatus.SUCCEEDED,
         "created_at": now, "tool_calls": calls}
        for i, calls in enumerate([[good], [bad], None, [good]])
    ]  # fmt: skip
    insert(api, jobs)
    body = api.test_client().get("/v1/stats").get_json()
    assert body["tool_calls"] == {"jobs": 3, "calls": 3, "invalid": 1}


def test_stats_reject_bad_parameters_naming_the_field(api: Flask) -> None:
    client = api.test_client()
    for query, param in [("since=yesterday", "since"), ("profile=nope", "profile"), ("limit=5", "limit")]:
        response = client.get(f"/v1/stats?{query}")
        assert response.status_code == 400, query
        assert response.get_json()["error"]["param"] == param
    assert client.get("/v1/stats?since=2024-01-01").get_json()["count"] == 0


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([10.0, 0.0], 0.95) == pytest.approx(9.5)


def job_lines(stderr: str) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in stderr.splitlines() if line.startswith("{") and '"event":"job.' in line
    ]


def test_api_logs_and_counts_queued_and_cancelled_jobs(api: Flask, capfd: pytest.CaptureFixture[str]) -> None:
    client = api.test_client()
    before = client.get("/metrics").get_data(as_text=True)
    announce_served_model(services(api).redis, "latency_first", TAGS | {"profile": "latency_first"})
    job_id = client.post("/v1/jobs", json={"prompt": "hi", "max_tokens": 4}).get_json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel").get_json()["status"] == "cancelled"
    assert client.get("/nope").status_code == 404

    lines = [line for line in job_lines(capfd.readouterr().err) if line["job_id"] == job_id]
    assert [line["event"] for line in lines] == ["job.queued", "job.cancelled"]
    assert {k: lines[0][k] for k in FIVE_TAGS} == TAGS | {"profile": "latency_first"}  # as announced
    assert {k: lines[1][k] for k in FIVE_TAGS} == dict.fromkeys(FIVE_TAGS, "") | {"profile": "latency_first"}

    response = client.get("/metrics")
    assert response.content_type.startswith("text/plain")
    after = response.get_data(as_text=True)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    never_ran = {"status": "cancelled", "profile": "latency_first", "model_id": "", "engine": ""}
    assert delta("gptoss_jobs_finished_total", **never_ran) == 1
    assert delta("gptoss_api_requests_total", method="POST", route="/v1/jobs", status="202") == 1
    submitted = {"profile": "latency_first", "model_id": TAGS["model_id"], "engine": TAGS["engine"]}
    assert delta("gptoss_api_requests_total", route="/v1/jobs", status="202", **submitted) == 1  # its tags
    assert delta("gptoss_api_requests_total", route="unmatched", profile="") == 1  # no model: empty tags
    assert (
        delta("gptoss_api_requests_total", method="POST", route="/v1/jobs/<job_id>/cancel", status="200") == 1
    )
    assert delta("gptoss_api_requests_total", method="GET", route="unmatched", status="404") == 1
    assert delta("gptoss_api_request_duration_seconds_count", method="POST", route="/v1/jobs") == 1
    # The revoked task stays in Redis until a worker discards it; nothing consumes this db.
    depth = {s.labels["profile"]: s for s in series(after, "gptoss_queue_depth")}
    assert depth["latency_first"].value == 1 and depth["quality_first"].value == 0
    assert depth["latency_first"].labels == TAGS | {"profile": "latency_first"}
    assert set(depth["quality_first"].labels) == FIVE_TAGS and depth["quality_first"].labels["model_id"] == ""


def exported_metric_names(api_text: str) -> set[str]:
    """Every sample name the API and a worker can export (families from their TYPE lines)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from workers.metrics import WORKER_REGISTRY, EngineLoadCollector

    no_engines = CollectorRegistry()
    no_engines.register(EngineLoadCollector(SimpleNamespace(loaded_engines=list)))  # type: ignore[arg-type]
    text = api_text + (generate_latest(WORKER_REGISTRY) + generate_latest(no_engines)).decode()
    histogram_suffixes = ("_bucket", "_sum", "_count")
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):  # counters are typed under their _total name
            _, _, name, kind = line.split()
            names |= {name + suffix for suffix in histogram_suffixes} if kind == "histogram" else {name}
    return names


def test_the_dashboard_queries_only_metrics_that_exist(api: Flask) -> None:
    exported = exported_metric_names(api.test_client().get("/metrics").get_data(as_text=True))
    dashboard = json.loads((REPO_ROOT / "deploy" / "grafana" / "gptoss-batch.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queries += [variable.get("definition", "") for variable in dashboard["templating"]["list"]]
    used = {name for query in queries for name in re.findall(r"gptoss_\w+", query)}
    assert len(used) >= 10 and used <= exported, used - exported
    assert {"profile", "model_id"} <= {variable["name"] for variable in dashboard["templating"]["list"]}


def test_a_submit_reads_the_served_tags_once_for_the_cache_and_the_log(
    test_dir: Path,
    profiles_file: Path,
    fresh_database_url: str,
    redis_base_url: str,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis_url = f"{redis_base_url}/{API_REDIS_DB}"
    config = app_config(test_dir, profiles_file, fresh_database_url, redis_url) | {"CACHE_MAX_ENTRIES": 100}
    api = create_app(config)
    client_redis = services(api).redis
    client_redis.flushdb()
    announce_served_model(client_redis, "latency_first", TAGS | {"profile": "latency_first"})
    assert services(api).cached_jobs is not None  # the cache reads them too
    reads: list[object] = []
    real_mget = client_redis.mget

    def counted_mget(keys: object, *args: object) -> object:
        reads.append(keys)
        return real_mget(keys, *args)

    monkeypatch.setattr(client_redis, "mget", counted_mget)
    client = api.test_client()
    job_id = client.post("/v1/jobs", json={"prompt": "once", "max_tokens": 4}).get_json()["id"]
    assert len(reads) == 1
    lines = [line for line in job_lines(capfd.readouterr().err) if line["job_id"] == job_id]
    assert {k: lines[0][k] for k in FIVE_TAGS} == TAGS | {"profile": "latency_first"}
    client_redis.flushdb()
    services(api).db_engine.dispose()
