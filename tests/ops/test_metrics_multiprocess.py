"""The API's /metrics under gunicorn with several worker processes (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from app.ops.private_redis import free_port
from tests.support.paths import REPO_ROOT
from tests.support.prometheus_text import value
from tests.support.services import migrate

MULTIPROCESS_REDIS_DB = 8


def test_api_metrics_add_up_over_gunicorn_worker_processes(
    tmp_path: Path, test_dir: Path, profiles_file: Path, redis_base_url: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'gptoss.db'}"
    migrate(database_url)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = os.environ | {
        "GPTOSS_PROFILES": str(profiles_file),
        "DATABASE_URL": database_url,
        "REDIS_URL": f"{redis_base_url}/{MULTIPROCESS_REDIS_DB}",
        "GPTOSS_DATA_DIR": str(test_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONPATH": str(REPO_ROOT),
    }
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}", "app:create_app()",
    ]  # fmt: skip
    with open(tmp_path / "gunicorn.log", "wb") as log:
        server = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        answered, deadline = 0, time.monotonic() + 60
        while answered == 0:
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not answer"
            try:
                answered += httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                time.sleep(0.2)
        with ThreadPoolExecutor(8) as pool:  # concurrent clients keep both sync workers busy
            responses = list(pool.map(lambda _: httpx.get(f"{base}/healthz", timeout=10), range(60)))
        statuses = [response.status_code for response in responses]
        assert statuses == [200] * 60

        text = httpx.get(f"{base}/metrics", timeout=10).text
        assert value(text, "gptoss_api_requests_total", route="/healthz", status="200") == 61
        pids = {path.name.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}
        assert len(pids) == 2  # both processes answered some
        assert value(text, "gptoss_queue_depth", profile="latency_first") == 0  # read live, once
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
