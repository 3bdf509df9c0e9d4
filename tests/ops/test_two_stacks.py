"""Two whole stacks on one machine, side by side, each started as `make run` starts one (the private-Redis
wrapper, then the supervisor over the unedited Procfile) and set apart by documented variables alone."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support.prometheus_text import value
from tests.support.services import flushed_redis_url
from tests.support.stack import Stack, stack

STACK_REDIS_DBS = (1, 2)
PROFILES = ("latency_first", "quality_first")

pytestmark = pytest.mark.slow


def answer(running: Stack, profile: str) -> dict:
    body = {"prompt": "hi", "profile": profile, "max_tokens": 4}
    job = httpx.post(f"{running.url}/v1/jobs", json=body).json()
    deadline = time.monotonic() + 60
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = httpx.get(f"{running.url}/v1/jobs/{job['id']}").json()
    return job


def test_two_stacks_run_side_by_side_set_apart_by_documented_variables(
    tmp_path: Path, profiles_file: Path, tiny_model_dir: Path, redis_base_url: str
) -> None:
    with ExitStack() as stacks:
        urls = [flushed_redis_url(redis_base_url, db) for db in STACK_REDIS_DBS]
        running = [
            stacks.enter_context(stack(tmp_path / f"stack{i}", profiles_file, url))
            for i, url in enumerate(urls)
        ]
        deadline = time.monotonic() + 180
        for each in running:
            each.wait_ready(max(1.0, deadline - time.monotonic()))
        for each in running:
            jobs = [answer(each, profile) for profile in PROFILES]
            assert [job["status"] for job in jobs] == ["succeeded", "succeeded"], jobs
            for index, (profile, job) in enumerate(zip(PROFILES, jobs, strict=True)):
                metrics = httpx.get(f"http://127.0.0.1:{each.metrics_base + index}/metrics", timeout=10).text
                assert value(metrics, "gptoss_jobs_finished_total", profile=profile, status="succeeded") == 1
                assert job["worker"].startswith(f"{profile}@")
            assert httpx.get(f"http://127.0.0.1:{each.flower_port}/", timeout=10).status_code in (200, 401)
        # each stack ran its own jobs only: its database holds the two it was sent
        for each in running:
            listed = httpx.get(f"{each.url}/v1/jobs").json()["data"]
            assert len(listed) == 2
