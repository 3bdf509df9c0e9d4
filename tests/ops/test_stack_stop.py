"""The whole stack under its supervisor: a stop lets a running job finish, one process's crash restarts
that process only, and a supervisor killed hard takes every process of the stack with it."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.support.pipeline import every_profile_ready
from tests.support.services import flushed_redis_url
from tests.support.stack import stack

STACK_REDIS_DB = 1
pytestmark = pytest.mark.slow


@pytest.fixture
def demo_profiles(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """latency_first on the demo model (slow enough on a CPU for a job to be running at the stop)."""
    path = tmp_path / "profiles.toml"
    path.write_text(
        '[profiles.latency_first]\nmodel = "demo"\nmodel_size = "20b"\ngpu_mode = "pipeline"\n'
        "max_batch = 2\nmax_tokens = 512\ntemperature = 0.0\n\n"
        f'[profiles.quality_first]\nmodel = "{tiny_model_dir}"\nmodel_size = "120b"\ngpu_mode = "tensor"\n'
        "max_batch = 1\nmax_tokens = 64\ntemperature = 0.0\n"
    )
    return path


def test_a_stop_lets_the_running_job_finish_and_leaves_no_process(
    tmp_path: Path, demo_profiles: Path, redis_base_url: str
) -> None:
    redis_url = flushed_redis_url(redis_base_url, STACK_REDIS_DB)
    with stack(tmp_path / "stack", demo_profiles, redis_url, GPTOSS_STOP_GRACE_S="120") as running:
        running.wait_ready()
        body = {"prompt": "Tell me a long story about the sea.", "max_tokens": 48, "temperature": 0}
        job = httpx.post(f"{running.url}/v1/jobs", json=body).json()
        deadline = time.monotonic() + 60
        while httpx.get(f"{running.url}/v1/jobs/{job['id']}").json()["first_token_at"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        running.process.send_signal(signal.SIGTERM)  # as Ctrl-C or a deploy does
        assert running.process.wait(timeout=150) == 0
        with sqlite3.connect(running.data_dir / "gptoss.db") as db:
            status, tokens = db.execute(
                "SELECT status, completion_tokens FROM jobs WHERE id = ?", (job["id"],)
            ).fetchone()
        assert (status, tokens) == ("succeeded", 48)  # it ran to its end inside the grace period
        assert "still runs after the grace period" not in running.log.read_text()
        time.sleep(1)
        assert running.processes() == []


def test_a_crash_restarts_one_process_and_a_supervisor_killed_hard_leaves_none(
    tmp_path: Path, profiles_file: Path, tiny_model_dir: Path, redis_base_url: str
) -> None:
    redis_url = flushed_redis_url(redis_base_url, STACK_REDIS_DB)
    with stack(tmp_path / "stack", profiles_file, redis_url) as running:
        running.wait_ready()
        beats = [pid for pid, command in running.processes() if "beat" in command and "celery" in command]
        assert len(beats) == 1
        os.kill(beats[0], signal.SIGKILL)  # one process crashes
        deadline = time.monotonic() + 30
        while not (
            again := [p for p, c in running.processes() if "beat" in c and "celery" in c and p != beats[0]]
        ):
            assert time.monotonic() < deadline, running.log.read_text()[-3000:]
            time.sleep(0.2)
        readiness = httpx.get(f"{running.url}/readyz", timeout=5).json()
        assert every_profile_ready(readiness), readiness  # the rest kept running
        supervisor = [
            pid for pid, command in running.processes()
            if "app.ops.supervisor" in command and "app.ops.private_redis" not in command
        ]  # fmt: skip
        assert len(supervisor) == 1 and again
        os.kill(supervisor[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while left := [c for p, c in running.processes() if p != running.process.pid]:
            assert time.monotonic() < deadline, f"still running after the supervisor died: {left}"
            time.sleep(0.5)
