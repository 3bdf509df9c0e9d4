"""A worker killed mid-job: when it comes back, the job it left `running` runs again (nothing is lost)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from app import create_app
from app.services import services
from tests.support.apps import TEST_MAX_TOKENS, app_config
from tests.support.paths import REPO_ROOT
from tests.support.pipeline import start_worker, stop_worker
from tests.support.services import migrate

RECOVERY_REDIS_DB = 10


def test_a_killed_workers_running_job_is_requeued_when_it_restarts(
    tmp_path: Path, test_dir: Path, profiles_file: Path, tiny_model_dir: Path, redis_base_url: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'gptoss.db'}"
    migrate(database_url)
    redis_url = f"{redis_base_url}/{RECOVERY_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    app = create_app(app_config(test_dir, profiles_file, database_url, redis_url))
    client = app.test_client()
    env = os.environ | {
        "GPTOSS_PROFILES": str(profiles_file),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GPTOSS_DATA_DIR": str(test_dir),
        "PYTHONPATH": str(REPO_ROOT),
    }

    def job_when(done: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not done(job := client.get(f"/v1/jobs/{job_id}").get_json()):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        return job

    body = {"messages": [{"role": "user", "content": "hello"}], "profile": "quality_first"}
    job_id = client.post("/v1/jobs", json=body | {"max_tokens": TEST_MAX_TOKENS}).get_json()["id"]
    worker = start_worker("quality_first", env, tmp_path / "first.log")
    try:
        job_when(lambda job: job["first_token_at"] is not None)
        os.killpg(worker.pid, signal.SIGKILL)  # no warm shutdown: the job is left `running`
        worker.wait()
        assert client.get(f"/v1/jobs/{job_id}").get_json()["status"] == "running"

        worker = start_worker("quality_first", env, tmp_path / "second.log")
        again = job_when(lambda job: job["attempts"] == 2 and job["status"] != "queued")
        assert again["worker"].startswith("quality_first@")
        client.post(f"/v1/jobs/{job_id}/cancel")  # no need to wait for all the tokens
        assert job_when(lambda job: job["finished_at"] is not None)["status"] in {"cancelled", "succeeded"}
        assert "requeued 1 job(s)" in (tmp_path / "second.log").read_text()
    finally:
        stop_worker(worker)
        services(app).db_engine.dispose()
        redis.Redis.from_url(redis_url).flushdb()
