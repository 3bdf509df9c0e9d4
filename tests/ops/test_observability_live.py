"""Observability end to end with a real worker per profile: /metrics of workers and API, /v1/stats,
the workers' JSON job lines, Flower behind basic auth, and /readyz following the workers' heartbeats."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.models import Job
from app.services import services
from tests.support.apps import TEST_MAX_TOKENS, app_config, insert_queued_job
from tests.support.live_server import serve
from tests.support.paths import REPO_ROOT
from tests.support.pipeline import FINISHED, start_worker, stop_worker, wait_for_workers
from tests.support.ports import fresh_port
from tests.support.prometheus_server import label_values, prometheus, query
from tests.support.prometheus_text import FIVE_TAGS, samples, series, value
from tests.support.services import migrate

OBSERVED_REDIS_DB = 7
PROFILES = ("latency_first", "quality_first")
HELLO = [{"role": "user", "content": "hello"}]
TINY = {"engine": "transformers-cb", "model_id": "tiny-gptoss", "gpu_mode": "cpu"}


@dataclass
class Observed:
    """The API and one worker per profile, each worker with its own /metrics port."""

    app: Flask
    client: FlaskClient
    env: dict[str, str]
    workers: dict[str, subprocess.Popen[bytes]]
    metrics_ports: dict[str, int]
    folder: Path

    def start(self, profile: str) -> subprocess.Popen[bytes]:
        base = self.metrics_ports[profile] - PROFILES.index(profile)  # each profile adds its index
        env = self.env | {"GPTOSS_WORKER_METRICS_PORT": str(base)}
        self.workers[profile] = start_worker(profile, env, self.folder / f"{profile}.log")
        return self.workers[profile]

    def submit(self, **body: Any) -> str:
        response = self.client.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.get_json()
        return response.get_json()["id"]

    def submit_unchecked(self, **request: Any) -> str:
        """Queue a job past the API's checks (like one accepted before a config change); it fails."""
        import uuid

        from app.db import db_session

        task_id = str(uuid.uuid4())
        with self.app.app_context(), db_session() as session:
            job = insert_queued_job(
                session, "latency_first", {"profile": "latency_first", **request}, task_id
            )
            services(self.app).queue.enqueue(job.id, "latency_first", task_id, "latency_first")
            return job.id

    def wait(self, job_id: str, done: Callable[[dict], bool], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not done(job := self.client.get(f"/v1/jobs/{job_id}").get_json()):
            assert time.monotonic() < deadline, f"timed out; job is {job}"
            time.sleep(0.05)
        return job

    def worker_metrics(self, profile: str) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_ports[profile]}/metrics", timeout=10).text

    def rows(self) -> list[Job]:
        with services(self.app).sessions() as session:
            return list(session.scalars(sa.select(Job)))


@pytest.fixture(scope="module")
def observed(
    tmp_path_factory: pytest.TempPathFactory,
    test_dir: Path,
    profiles_file: Path,
    tiny_model_dir: Path,
    redis_base_url: str,
) -> Iterator[Observed]:
    folder = tmp_path_factory.mktemp("observability")
    database_url = f"sqlite:///{folder / 'gptoss.db'}"
    migrate(database_url)
    redis_url = f"{redis_base_url}/{OBSERVED_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    env = os.environ | {
        "GPTOSS_PROFILES": str(profiles_file),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GPTOSS_DATA_DIR": str(test_dir),
        "GPTOSS_HEARTBEAT_INTERVAL_S": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    app = create_app(app_config(test_dir, profiles_file, database_url, redis_url))
    observed = Observed(app, app.test_client(), env, {}, {p: fresh_port() for p in PROFILES}, folder)
    try:
        for profile in PROFILES:
            observed.start(profile)
        wait_for_workers(app, observed.workers, folder)
        yield observed
    finally:
        with ThreadPoolExecutor(len(PROFILES)) as pool:  # warm shutdowns take seconds: overlap them
            list(pool.map(stop_worker, observed.workers.values()))
        services(app).db_engine.dispose()
        redis.Redis.from_url(redis_url).flushdb()


@dataclass
class JobMix:
    api_metrics_before: str
    api_metrics_while_queued: str
    submitted: int  # jobs created; all but the one queued past the API went through POST /v1/jobs


@pytest.fixture(scope="module")
def job_mix(observed: Observed) -> JobMix:
    """Succeeded, failed and cancelled jobs on both profiles, one of them cancelled while queued."""
    before = observed.client.get("/metrics").get_data(as_text=True)
    ids = [observed.submit(messages=HELLO, max_tokens=8) for _ in range(3)]
    ids.append(observed.submit_unchecked(prompt="x" * 4200, max_tokens=8))  # over the context: fails
    # quality_first runs one job at a time: a long one, then one that waits in the queue.
    running = observed.submit(messages=HELLO, profile="quality_first", max_tokens=TEST_MAX_TOKENS)
    observed.wait(running, lambda job: job["first_token_at"] is not None)
    waiting = observed.submit(messages=HELLO, profile="quality_first", max_tokens=8)
    while_queued = observed.client.get("/metrics").get_data(as_text=True)
    assert observed.client.post(f"/v1/jobs/{waiting}/cancel").get_json()["status"] == "cancelled"
    observed.client.post(f"/v1/jobs/{running}/cancel")
    ids += [running, waiting, observed.submit(messages=HELLO, profile="quality_first", max_tokens=8)]
    for job_id in ids:
        observed.wait(job_id, lambda job: job["status"] in FINISHED)
    return JobMix(before, while_queued, len(ids))


def test_worker_metrics_carry_the_five_tags_and_match_the_database(
    observed: Observed, job_mix: JobMix
) -> None:
    rows = observed.rows()
    assert {row.status for row in rows} == {"succeeded", "failed", "cancelled"}
    for profile in PROFILES:
        text = observed.worker_metrics(profile)
        ran = [row for row in rows if (row.worker_hostname or "").startswith(f"{profile}@")]
        tags = ran[0].tags()
        assert tags is not None and tags | TINY == tags and tags["profile"] == profile
        assert all(row.tags() == tags for row in ran)  # failed jobs too: the engine they failed on
        for sample in samples(text):
            if sample.name.startswith("gptoss_"):
                assert set(sample.labels) - {"status", "le"} == FIVE_TAGS, sample
                assert {k: sample.labels[k] for k in FIVE_TAGS} == tags, sample

        for status in ("succeeded", "failed", "cancelled"):
            expected = sum(row.status == status for row in ran)
            assert value(text, "gptoss_jobs_finished_total", status=status) == expected, (profile, status)
        timed = [row for row in ran if row.ttft_s is not None]
        assert value(text, "gptoss_time_to_first_token_seconds_count") == len(timed)
        assert value(text, "gptoss_time_to_first_token_seconds_sum") == pytest.approx(
            sum(r.ttft_s for r in timed)
        )
        assert value(text, "gptoss_e2e_latency_seconds_sum") == pytest.approx(sum(r.e2e_s or 0 for r in ran))
        waits = [(row.started_at - row.created_at).total_seconds() for row in ran if row.started_at]
        assert value(text, "gptoss_queue_wait_seconds_count") == len(ran)
        assert value(text, "gptoss_queue_wait_seconds_sum") == pytest.approx(sum(waits))
        assert value(text, "gptoss_prompt_tokens_total") == sum(row.prompt_tokens or 0 for row in ran)
        completion = sum(row.completion_tokens or 0 for row in ran)
        assert value(text, "gptoss_completion_tokens_total") == completion
        assert 0 < value(text, "gptoss_inter_token_latency_seconds_count") <= completion - len(timed)
        assert [s.value for s in series(text, "gptoss_batch_running_requests")] == [0]
        assert [s.value for s in series(text, "gptoss_batch_waiting_requests")] == [0]
        assert series(text, "gptoss_engine_load_seconds")[0].value > 0


def test_api_metrics_count_requests_queue_depth_and_cancels_before_a_worker(
    observed: Observed, job_mix: JobMix
) -> None:
    after = observed.client.get("/metrics").get_data(as_text=True)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(job_mix.api_metrics_before, name, **labels)

    assert (
        delta("gptoss_api_requests_total", method="POST", route="/v1/jobs", status="202")
        == job_mix.submitted - 1
    )
    assert delta("gptoss_api_requests_total", method="GET", route="/v1/jobs/<job_id>", status="200") > 0
    never_ran = {"status": "cancelled", "profile": "quality_first", "model_id": ""}
    assert (
        delta("gptoss_jobs_finished_total", **never_ran)
        == 1
        == sum(row.status == "cancelled" and row.started_at is None for row in observed.rows())
    )
    depth = {s.labels["profile"]: s for s in series(job_mix.api_metrics_while_queued, "gptoss_queue_depth")}
    assert depth["quality_first"].value == 1  # the job waiting behind the long one
    assert depth["quality_first"].labels | TINY == depth["quality_first"].labels  # as the worker announced
    assert [s.value for s in series(after, "gptoss_queue_depth")] == [0, 0]


def test_stats_match_the_stored_jobs(observed: Observed, job_mix: JobMix) -> None:
    rows = observed.rows()
    stats = observed.client.get("/v1/stats").get_json()
    assert stats["count"] == len(rows) and stats["truncated"] is False
    assert {k: v for k, v in stats["by_status"].items() if v} == {
        status: sum(row.status == status for row in rows) for status in {row.status for row in rows}
    }
    failed, succeeded = (sum(row.status == s for row in rows) for s in ("failed", "succeeded"))
    assert stats["error_rate"] == pytest.approx(failed / (failed + succeeded))
    ttfts = [row.ttft_s for row in rows if row.ttft_s is not None]
    cuts = statistics.quantiles(ttfts, n=100, method="inclusive")
    assert (stats["ttft_s"]["p50"], stats["ttft_s"]["p95"]) == (
        pytest.approx(cuts[49], abs=1e-5),  # the API rounds to microseconds
        pytest.approx(cuts[94], abs=1e-5),
    )
    assert stats["ttft_s"]["samples"] == len(ttfts)
    waits = [(row.started_at - row.created_at).total_seconds() for row in rows if row.started_at]
    assert stats["queue_wait_s"]["p95"] == pytest.approx(
        statistics.quantiles(waits, n=100, method="inclusive")[94], abs=1e-5
    )
    quality = observed.client.get("/v1/stats?profile=quality_first").get_json()
    assert quality["count"] == sum(row.profile == "quality_first" for row in rows)


def test_workers_log_one_json_line_per_job_transition(observed: Observed, job_mix: JobMix) -> None:
    rows = observed.rows()
    for profile in PROFILES:
        text = (observed.folder / f"{profile}.log").read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith('{"ts"')]
        for row in rows:
            if not (row.worker_hostname or "").startswith(f"{profile}@"):
                continue
            events = [line for line in lines if line["job_id"] == row.id]
            assert [line["event"] for line in events] == ["job.started", f"job.{row.status}"], events
            assert all({k: line[k] for k in FIVE_TAGS} == row.tags() for line in events)
            assert events[-1]["worker"] == row.worker_hostname


def test_flower_lists_both_workers_behind_basic_auth(observed: Observed) -> None:
    port = fresh_port()
    env = observed.env | {"FLOWER_BASIC_AUTH": "ops:s3cret"}
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "make_celery",
        "flower",
        "--address=127.0.0.1",
        f"--port={port}",
    ]
    with open(observed.folder / "flower.log", "wb") as log:
        flower = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}/api/workers?refresh=1"
    try:
        deadline, names = time.monotonic() + 60, set()
        while {name.split("@")[0] for name in names} != set(PROFILES):
            assert flower.poll() is None, (observed.folder / "flower.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"flower saw {names}"
            time.sleep(0.3)
            try:
                response = httpx.get(url, auth=("ops", "s3cret"), timeout=10)
            except httpx.TransportError:  # not listening yet
                continue
            names = set(response.json()) if response.status_code == 200 else set()
        assert httpx.get(url, timeout=10).status_code == 401
        assert httpx.get(url, auth=("ops", "wrong"), timeout=10).status_code == 401
    finally:
        stop_worker(flower)  # its process group: SIGTERM, then SIGKILL


def test_a_profile_is_503_while_it_has_no_worker_and_200_when_it_is_back(observed: Observed) -> None:
    deadline = time.monotonic() + 60  # the heartbeat says "loading" until the model is in
    while True:
        ready = observed.client.get("/readyz").get_json()["checks"]
        beat = ready["worker_heartbeats"]["latency_first"][0]
        if beat["state"] == "serving" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert beat["name"].startswith("latency_first@") and beat["model_id"] == "tiny-gptoss"
    assert beat["state"] == "serving" and beat["age_s"] < 5 and beat["pid"] > 0

    stop_worker(observed.workers["quality_first"])  # warm shutdown removes its heartbeat at once
    response = observed.client.get("/readyz?profile=quality_first")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["workers"]["quality_first"] == [] and checks["workers"]["latency_first"]
    api = observed.client.get("/readyz")  # the API itself stays ready: a load balancer keeps the node
    assert api.status_code == 200
    assert api.get_json()["profiles"] == {"latency_first": "ready", "quality_first": "not_ready"}
    assert observed.client.get("/readyz?profile=latency_first").status_code == 200

    observed.start("quality_first")
    seen_loading, deadline = False, time.monotonic() + 90
    while (response := observed.client.get("/readyz?profile=quality_first")).status_code != 200:  # loading
        beats = response.get_json()["checks"]["worker_heartbeats"]["quality_first"]
        seen_loading = seen_loading or any(beat["state"] == "loading" for beat in beats)
        assert time.monotonic() < deadline and observed.workers["quality_first"].poll() is None
        time.sleep(0.1)
    assert seen_loading  # the worker was up, its model loading, and /readyz said 503 meanwhile
    beats = response.get_json()["checks"]["worker_heartbeats"]["quality_first"]
    assert beats and all(beat["state"] == "serving" for beat in beats)
    assert observed.client.get("/readyz").get_json()["profiles"]["quality_first"] == "ready"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the shipped dashboard, variables set to All."""
    dashboard = json.loads((REPO_ROOT / "deploy" / "grafana" / "gptoss-batch.json").read_text())
    pairs = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]
    filled = [
        (title, expr.replace("$profile", ".*").replace("$model_id", ".*").replace("$__rate_interval", "5m"))
        for title, expr in pairs
    ]
    return filled


def test_a_real_prometheus_scrapes_the_stack_and_every_dashboard_query_has_data(
    observed: Observed, job_mix: JobMix, tmp_path: Path
) -> None:
    workers = [f"127.0.0.1:{observed.metrics_ports[profile]}" for profile in PROFILES]
    with serve(observed.app) as api_url:
        scrape = [
            {"job_name": "gptoss-api", "static_configs": [{"targets": [api_url.removeprefix("http://")]}]},
            {"job_name": "gptoss-workers", "static_configs": [{"targets": workers}]},
        ]  # the job names of deploy/prometheus.yml
        with prometheus(tmp_path, scrape) as url:
            deadline = time.monotonic() + 30
            while sum(float(r["value"][1]) for r in query(url, "up")) < 3:
                assert time.monotonic() < deadline, query(url, "up")
                time.sleep(0.5)
            # a mixed run while Prometheus watches: answers on both profiles, a failure, a cancel
            ids = [
                observed.submit(messages=HELLO, profile=p, max_tokens=8) for p in PROFILES for _ in range(2)
            ]
            ids.append(observed.submit_unchecked(prompt="x" * 4200, max_tokens=8))  # over the context: fails
            for job_id in ids:
                observed.wait(job_id, lambda job: job["status"] in FINISHED)
            time.sleep(3)  # a few scrapes after the last job
            empty = [(title, expr) for title, expr in dashboard_queries() if not query(url, expr)]
            assert empty == []
            nan = [
                (title, expr)
                for title, expr in dashboard_queries()
                if all(r["value"][1] == "NaN" for r in query(url, expr))
            ]
            assert nan == []
            assert sorted(label_values(url, "profile", "gptoss_queue_depth")) == sorted(PROFILES)
            models = label_values(url, "model_id", "gptoss_engine_load_seconds")
            assert models and all(models)
            error_rate = query(url, dashboard_queries()[1][1])
            assert 0 < float(error_rate[0]["value"][1]) < 1  # the failure counts, the answers too
