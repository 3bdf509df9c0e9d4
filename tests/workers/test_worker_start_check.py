"""A worker whose profile cannot work on this machine stops at start: non-zero, the reason in its log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app import create_app
from app.services import services
from tests.support.apps import app_config
from tests.support.pipeline import refused_worker, stack_env
from tests.support.services import IDLE_REDIS_DB, flushed_redis_url, migrate

BAD_PROFILES = """
[profiles.latency_first]
model = "demo"
model_size = "135m"
gpu_mode = "pipeline"
max_batch = 2
max_tokens = 64

[profiles.quality_first]
model = "{missing}"
model_size = "120b"
gpu_mode = "tensor"
max_batch = 8
max_tokens = 2048
allow_demo = false
"""


def test_a_worker_whose_model_is_missing_and_demo_not_allowed_exits_with_the_reason(
    tmp_path: Path, redis_base_url: str
) -> None:
    missing = tmp_path / "models" / "gpt-oss-120b"
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(BAD_PROFILES.format(missing=missing))
    database_url = f"sqlite:///{tmp_path / 'gptoss.db'}"
    migrate(database_url)
    redis_url = flushed_redis_url(redis_base_url, IDLE_REDIS_DB)
    env = stack_env(profiles, database_url, redis_url, tmp_path / "data")
    worker = refused_worker("quality_first", env, tmp_path / "worker.log")
    log = (tmp_path / "worker.log").read_text()
    assert worker.returncode != 0, log
    assert (
        f'profiles.toml [profiles.quality_first] model = "{missing}": no such directory, .gguf file or '
        "cached model id on this machine; nothing is downloaded, and the demo model may not stand in: "
        "allow_demo is false for profile quality_first"
    ) in log
    assert "celery" not in log.lower()  # it stopped before Celery: it never took a job
    with pytest.raises(ProcessLookupError):
        os.killpg(worker.pid, 0)  # nothing of its process group is left
    app = create_app(app_config(tmp_path / "api", profiles, database_url, redis_url))
    try:
        readiness = app.test_client().get("/readyz?profile=quality_first")
        assert readiness.status_code == 503 and readiness.get_json()["status"] == "not_ready"
    finally:
        services(app).db_engine.dispose()
