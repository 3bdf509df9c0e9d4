"""Real worker processes: start, stop, wait for them; the `pipeline` fixture (API -> Redis -> workers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.services import services
from tests.support.apps import app_config
from tests.support.paths import REPO_ROOT
from tests.support.services import WORKER_REDIS_DB, flushed_redis_url

FINISHED = {"succeeded", "failed", "cancelled"}

# The random tiny model's greedy path depends on the prompt, and a prompt holds its date: a fixed date
# keeps a job that must run to max_tokens doing so whatever day the tests run (today's stopped one at 88).
TEST_DATE = "2026-12-05"


@dataclass
class Pipeline:
    """The API wired to real worker processes (one per profile) through Redis."""

    app: Flask
    client: FlaskClient
    env: dict[str, str]

    def submit(self, **body: Any) -> dict[str, Any]:
        response = self.client.post("/v1/jobs", json={"current_date": TEST_DATE, **body})
        assert response.status_code == 202, response.get_json()
        return response.get_json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client.get(f"/v1/jobs/{job_id}").get_json()

    def wait_until(self, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while not done(job := self.job(job_id)):
            assert time.monotonic() < deadline, f"timed out; job is {job}"
            time.sleep(0.02)
        return job

    def wait_finished(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_until(job_id, lambda job: job["status"] in FINISHED, timeout)


def stack_env(profiles_file: Path, database_url: str, redis_url: str, data_dir: Path) -> dict[str, str]:
    """The environment a test's worker runs in: this process's, with the test stack's settings."""
    return {
        **os.environ,
        "GPTOSS_PROFILES": str(profiles_file),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GPTOSS_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(REPO_ROOT),
    }


def start_worker(profile: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m workers.start <profile>`, exactly as the Procfile starts it; no /metrics unless `env`
    names a GPTOSS_WORKER_METRICS_PORT (a `make run` on this machine may hold the default ports)."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.start", profile, "--loglevel", "INFO"],
            cwd=REPO_ROOT,
            env={"GPTOSS_WORKER_METRICS_PORT": "0", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def refused_worker(profile: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a worker that must refuse to serve `profile` and wait until it exits (the test fails if it
    still runs after 60 s)."""
    worker = start_worker(profile, env, log_path)
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        stop_worker(worker)
        pytest.fail(f"the worker kept running:\n{log_path.read_text()[-3000:]}")
    return worker


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM (warm shutdown), then SIGKILL the whole process group if it lingers."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def wait_for_workers(app: Flask, workers: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    """Until /readyz says each profile of `workers` has a live worker whose model has loaded (or a worker
    exits)."""
    client, deadline = app.test_client(), time.monotonic() + 90
    while not profiles_ready(client.get("/readyz").get_json(), list(workers)):
        for profile, worker in workers.items():
            if worker.poll() is not None:
                raise RuntimeError(
                    f"{profile} worker exited:\n{(logs / f'{profile}.log').read_text()[-3000:]}"
                )
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not become ready in 90 s")
        time.sleep(0.2)


def every_profile_ready(readiness: dict[str, Any]) -> bool:
    """Whether a /readyz body says the API and every profile are ready (a worker serves each)."""
    return profiles_ready(readiness, list(readiness["profiles"]))


def profiles_ready(readiness: dict[str, Any], profiles: list[str]) -> bool:
    """Whether a /readyz body says the API and these profiles are ready (a worker serves each)."""
    return readiness["status"] == "ready" and all(readiness["profiles"][p] == "ready" for p in profiles)


def worker_answers_ping(app: Flask, workers: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    """Until each worker <profile>@<host> answers a Celery ping (or exits, or 90 s pass): for a stack
    whose profiles file names profiles nobody serves, where /readyz stays 503."""
    deadline = time.monotonic() + 90
    for profile, worker in workers.items():
        name = f"{profile}@{socket.gethostname()}"
        while not app.extensions["celery"].control.ping(destination=[name], timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} is not up:\n{(logs / f'{profile}.log').read_text()[-3000:]}")


Ready = Callable[[Flask, dict[str, subprocess.Popen[bytes]], Path], None]


@contextmanager
def live_workers(
    logs: Path,
    profiles_file: Path,
    database_url: str,
    redis_url: str,
    data_dir: Path,
    profiles: tuple[str, ...],
    *,
    env: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    api_data_dir: Path | None = None,
    ready: Ready = wait_for_workers,
) -> Iterator[tuple[Flask, dict[str, str]]]:
    """The API (not served; its DATA_DIR api_data_dir, else data_dir) and one real worker process per
    profile on a flushed Redis db, until `ready`; yields (app, the workers' env); stops the workers and
    flushes Redis afterwards."""
    redis.Redis.from_url(redis_url).flushdb()
    env = stack_env(profiles_file, database_url, redis_url, data_dir) | (env or {})
    workers = {name: start_worker(name, env, logs / f"{name}.log") for name in profiles}
    api_config = app_config(api_data_dir or data_dir, profiles_file, database_url, redis_url)
    app = create_app(api_config | (config or {}))
    try:
        ready(app, workers, logs)
        yield app, env
    finally:
        for worker in workers.values():
            stop_worker(worker)
        services(app).db_engine.dispose()
        redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture(scope="session")
def pipeline(
    test_dir: Path, profiles_file: Path, tiny_model_dir: Path, database_url: str, redis_base_url: str
) -> Iterator[Pipeline]:
    """One worker process per profile for the whole session (per database backend)."""
    redis_url = flushed_redis_url(redis_base_url, WORKER_REDIS_DB)
    logs = test_dir / f"logs-{sa.make_url(database_url).get_backend_name()}"
    logs.mkdir(exist_ok=True)
    with live_workers(
        logs, profiles_file, database_url, redis_url, test_dir, ("latency_first", "quality_first")
    ) as (app, env):
        yield Pipeline(app, app.test_client(), env)
