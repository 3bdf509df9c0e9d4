"""Fault tests: named worker processes started, killed and restarted at will, on one DB and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from app import create_app
from app.jobs.events import events_key
from app.ops.heartbeats import live_workers
from app.services import services
from tests.support.apps import app_config
from tests.support.paths import REPO_ROOT
from tests.support.pipeline import FINISHED, TEST_DATE
from tests.support.services import migrate

# Short enough that a test sees redelivery, heartbeat expiry and recovery within seconds.
FAST_RECOVERY = {
    "VISIBILITY_TIMEOUT_S": 8,  # an unacked task is redelivered after this (> a test job's first token)
    "HEARTBEAT_INTERVAL_S": 0.5,
    "HEARTBEAT_TTL_S": 2,  # a worker silent this long is gone
    "WORKER_METRICS_PORT": 0,  # several workers of one profile on one machine
}


def worker_env(config: dict[str, Any]) -> dict[str, str]:
    """The environment a worker process reads its config from (GPTOSS_<KEY>, DATABASE_URL, REDIS_URL)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for key, value in config.items():
        if key in ("DATABASE_URL", "REDIS_URL"):
            env[key] = str(value)
        elif key != "TESTING":
            env[f"GPTOSS_{key}"] = str(value)
    return env


@dataclass
class Cluster:
    """The API (in-process) and named worker processes sharing its database and Redis."""

    app: Flask
    env: dict[str, str]
    logs: Path
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)

    # workers

    def start(self, name: str, profile: str = "latency_first") -> None:
        """`python -m workers.start <profile> --name <name>@faults`, as the Procfile runs it."""
        command = [sys.executable, "-m", "workers.start", profile, "--loglevel", "INFO"]
        self.start_process(name, [*command, "--name", f"{name}@faults"])

    def start_process(self, name: str, command: list[str]) -> None:
        """Any process of the deployment (a worker, the batch worker, celery beat), logging to <name>.log."""
        self.starts[name] = self.starts.get(name, 0) + 1
        with open(self.log_path(name), "ab") as log:
            self.workers[name] = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, *names: str, timeout: float = 90) -> None:
        """Until each worker's current process says (in its heartbeat) that its model is loaded."""
        client, deadline = self.redis(), time.monotonic() + timeout
        while True:
            beats = {beat.name: beat for beat in live_workers(client)}
            pids = {f"{name}@faults": self.workers[name].pid for name in names}
            if all(name in beats and (beats[name].pid, bool(beats[name].model_id)) == (pid, True)
                   for name, pid in pids.items()):  # fmt: skip
                return
            for name in names:
                assert self.workers[name].poll() is None, self.log(name)[-3000:]
            assert time.monotonic() < deadline, f"workers {names} not ready"
            time.sleep(0.1)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        os.killpg(self.workers[name].pid, sig)

    def stop(self, name: str) -> None:
        worker = self.workers.pop(name, None)
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def log(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    # jobs

    def submit(self, **body: Any) -> str:
        response = self.app.test_client().post("/v1/jobs", json={"current_date": TEST_DATE, **body})
        assert response.status_code == 202, response.get_json()
        return str(response.get_json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.app.test_client().get(f"/v1/jobs/{job_id}").get_json())

    def wait_until(self, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while not done(job := self.job(job_id)):
            assert time.monotonic() < deadline, f"timed out; job is {job}"
            time.sleep(0.05)
        return job

    def wait_finished(self, job_id: str, timeout: float = 90) -> dict[str, Any]:
        return self.wait_until(job_id, lambda job: job["status"] in FINISHED, timeout)

    def terminal_events(self, job_id: str) -> list[str]:
        entries = self.redis().xrange(events_key(job_id))
        types = [fields[b"type"].decode() for _, fields in entries]  # type: ignore[union-attr]
        return [t for t in types if t in ("done", "error", "cancelled")]

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.app.config["REDIS_URL"])


@pytest.fixture(scope="module")
def cluster_factory(tmp_path_factory: pytest.TempPathFactory, test_dir: Path, profiles_file: Path,
                    tiny_model_dir: Path) -> Iterator[Callable[..., Cluster]]:  # fmt: skip
    """Builds clusters on a fresh SQLite database; stops their workers at the end of the module."""
    built: list[Cluster] = []

    def build(redis_url: str, **config: Any) -> Cluster:
        folder = tmp_path_factory.mktemp("cluster")
        database_url = f"sqlite:///{folder / 'gptoss.db'}"
        migrate(database_url)
        settings = {**app_config(test_dir, profiles_file, database_url, redis_url), **FAST_RECOVERY, **config}
        cluster = Cluster(create_app(settings), worker_env(settings), folder)
        built.append(cluster)
        return cluster

    yield build
    for cluster in built:
        for name in list(cluster.workers):
            cluster.stop(name)
        services(cluster.app).db_engine.dispose()
