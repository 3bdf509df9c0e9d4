"""The API's /metrics under gunicorn with several worker processes (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.gunicorn import gunicorn_api
from tests.support.prometheus_text import value

MULTIPROCESS_REDIS_DB = 8


def test_api_metrics_add_up_over_gunicorn_worker_processes(
    tmp_path: Path, profiles_file: Path, redis_base_url: str
) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    redis_url = f"{redis_base_url}/{MULTIPROCESS_REDIS_DB}"
    with gunicorn_api(
        tmp_path, profiles_file, redis_url, workers=2, threads=1, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)
    ) as base:
        with ThreadPoolExecutor(8) as pool:  # concurrent clients keep both sync workers busy
            responses = list(pool.map(lambda _: httpx.get(f"{base}/healthz", timeout=10), range(60)))
        statuses = [response.status_code for response in responses]
        assert statuses == [200] * 60

        text = httpx.get(f"{base}/metrics", timeout=10).text
        assert value(text, "gptoss_api_requests_total", route="/healthz", status="200") == 61
        pids = {path.name.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}
        assert len(pids) == 2  # both processes answered some
        assert value(text, "gptoss_queue_depth", profile="latency_first") == 0  # read live, once


def test_the_shipped_shape_runs_several_workers_and_shares_their_metrics_in_the_data_dir(
    tmp_path: Path, profiles_file: Path, redis_base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    shared = tmp_path / "api-metrics"  # gunicorn_api's GPTOSS_DATA_DIR is tmp_path
    shared.mkdir()
    (shared / "counter_999999.db").write_bytes(b"a killed run's file")  # wiped at start, not counted
    redis_url = f"{redis_base_url}/{MULTIPROCESS_REDIS_DB}"
    env = {"WEB_CONCURRENCY": "2"}
    with gunicorn_api(tmp_path, profiles_file, redis_url, workers=None, threads=1, **env) as base:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(lambda _: httpx.get(f"{base}/healthz", timeout=10).status_code, range(40))
            )
        assert statuses == [200] * 40
        text = httpx.get(f"{base}/metrics", timeout=10).text
        assert value(text, "gptoss_api_requests_total", route="/healthz", status="200") == 41
        pids = {path.name.rsplit("_", 1)[1] for path in shared.glob("counter_*.db")}
        assert len(pids) == 2 and "999999.db" not in pids
    assert not shared.exists()  # removed when gunicorn exits
