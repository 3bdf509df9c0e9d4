"""GPTOSS_MULTI_HOST=1: a process that would only work on one host refuses to start, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from app.settings import SettingsError, load_settings
from tests.support.paths import REPO_ROOT

SHARED = {
    "MULTI_HOST": 1,
    "DATABASE_URL": "postgresql://gptoss@10.0.0.2/gptoss",
    "REDIS_URL": "redis://10.0.0.3:6379/0",
}


def refusal(**config: object) -> str:
    with pytest.raises(SettingsError) as raised:
        load_settings({**SHARED, **config})
    return str(raised.value)


def test_a_multi_host_process_refuses_sqlite_naming_database_url(tmp_path: Path) -> None:
    message = refusal(DATABASE_URL=f"sqlite:///{tmp_path / 'gptoss.db'}")
    assert message.startswith("GPTOSS_MULTI_HOST=1 but DATABASE_URL is SQLite")
    # the default too: no DATABASE_URL is SQLite under the data folder
    with pytest.raises(SettingsError, match="DATABASE_URL is SQLite"):
        create_app({"MULTI_HOST": 1, "DATA_DIR": str(tmp_path), "DATABASE_URL": None,
                    "REDIS_URL": SHARED["REDIS_URL"]})  # fmt: skip


@pytest.mark.parametrize(
    "redis_url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://localhost:6380/1",
        "redis://[::1]:6379/0",
        "unix:///tmp/redis.sock",
    ],
)
def test_a_multi_host_process_refuses_this_hosts_own_redis(redis_url: str) -> None:
    message = refusal(REDIS_URL=redis_url)
    assert message.startswith(f"GPTOSS_MULTI_HOST=1 but REDIS_URL={redis_url} is this host's own")


def test_a_multi_host_worker_needs_an_explicit_metrics_host_unless_its_metrics_are_off() -> None:
    message = refusal(PROFILE="latency_first")
    assert "GPTOSS_WORKER_METRICS_HOST is unset" in message
    assert load_settings({**SHARED, "PROFILE": "latency_first", "WORKER_METRICS_PORT": 0}).multi_host
    chosen = load_settings({**SHARED, "PROFILE": "latency_first", "WORKER_METRICS_HOST": "10.0.0.4"})
    assert chosen.observability.worker_metrics_host == "10.0.0.4"
    assert load_settings(SHARED).observability.worker_metrics_host == "127.0.0.1"  # the API: not its concern


def test_a_single_host_keeps_its_defaults(tmp_path: Path) -> None:
    settings = load_settings({"DATA_DIR": str(tmp_path), "PROFILE": "latency_first"})
    assert not settings.multi_host and settings.database_url.startswith("sqlite:///")
    assert settings.observability.worker_metrics_host == "127.0.0.1"


def multi_host_env(**env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return {**environ, "GPTOSS_MULTI_HOST": "1", "DATABASE_URL": str(SHARED["DATABASE_URL"]),
            "REDIS_URL": str(SHARED["REDIS_URL"]), **env}  # fmt: skip


def test_a_multi_host_worker_without_a_metrics_host_does_not_start(profiles_file: Path) -> None:
    started = subprocess.run(
        [sys.executable, "-m", "workers.start", "latency_first"],
        cwd=REPO_ROOT, env=multi_host_env(GPTOSS_PROFILES=str(profiles_file)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 2
    assert "workers.start: GPTOSS_MULTI_HOST=1 but GPTOSS_WORKER_METRICS_HOST is unset" in started.stderr


def test_a_multi_host_api_without_keys_refuses_an_outside_bind(profiles_file: Path, tmp_path: Path) -> None:
    started = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--bind", "0.0.0.0:1", "app:create_app()"],
        cwd=REPO_ROOT, env=multi_host_env(GPTOSS_PROFILES=str(profiles_file), GPTOSS_DATA_DIR=str(tmp_path)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 1
    assert "Error: GPTOSS_MULTI_HOST=1 but the API would bind 0.0.0.0:1 without API keys" in started.stderr


def test_a_multi_host_api_on_sqlite_does_not_start(profiles_file: Path, tmp_path: Path) -> None:
    env = multi_host_env(GPTOSS_PROFILES=str(profiles_file), GPTOSS_DATA_DIR=str(tmp_path))
    env.pop("DATABASE_URL")
    started = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:1", "app:create_app()"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 1
    assert "Error: GPTOSS_MULTI_HOST=1 but DATABASE_URL is SQLite" in started.stderr
