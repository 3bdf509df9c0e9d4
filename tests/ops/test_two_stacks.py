"""Two whole stacks on one machine, side by side, each started as `make run` starts one (the private-Redis
wrapper, then honcho over the unedited Procfile) and set apart by documented variables alone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.ops.private_redis import free_port
from tests.support.paths import REPO_ROOT
from tests.support.prometheus_text import value
from tests.support.services import flushed_redis_url, migrate

STACK_REDIS_DBS = (1, 2)
PROFILES = ("latency_first", "quality_first")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Stack:
    url: str
    metrics_base: int
    flower_port: int
    log: Path


def free_port_pair() -> int:
    """A free port whose next port is free too (the two profiles' worker metrics)."""
    while True:
        port = free_port()
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


@contextmanager
def stack(folder: Path, profiles_file: Path, redis_url: str) -> Iterator[Stack]:
    """One stack as `make run` runs it, until the block ends (then SIGTERM to all of it)."""
    data_dir = folder / "data"
    data_dir.mkdir(parents=True)
    migrate(f"sqlite:///{data_dir / 'gptoss.db'}")
    port, metrics_base, flower_port = free_port(), free_port_pair(), free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "GPTOSS_DATA_DIR": str(data_dir),
        "REDIS_URL": redis_url,
        "GPTOSS_WORKER_METRICS_PORT": str(metrics_base),
        "FLOWER_PORT": str(flower_port),
        "GPTOSS_PROFILES": str(profiles_file),
        "GPTOSS_GATE_SCHEDULE_S": "0",
        "GPTOSS_GATE_API_URL": f"http://127.0.0.1:{port}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("DATABASE_URL", None)
    honcho = str(Path(sys.executable).parent / "honcho")
    command = [sys.executable, "-m", "app.ops.private_redis", honcho, "start", "--port", str(port)]
    log = folder / "stack.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield Stack(f"http://127.0.0.1:{port}", metrics_base, flower_port, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_ready(running: Stack, deadline: float) -> None:
    while True:
        try:
            if httpx.get(f"{running.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, running.log.read_text()[-4000:]
        time.sleep(0.5)


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
            wait_ready(each, deadline)
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
