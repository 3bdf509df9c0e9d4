"""Settings are read once at start into one typed object; a value that cannot be read stops the start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from app.settings import DEFAULTS, Settings, SettingsError, load_settings
from tests.support.paths import REPO_ROOT


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GPTOSS_RATE_LIMIT_PER_MIN", "lots", "a whole number"),
        ("GPTOSS_GATE_RATE", "fast", "a number"),
        ("GPTOSS_HEARTBEAT_TTL_S", "1.5", "a whole number"),
        ("GPTOSS_WORKER_METRICS_PORT", "x", "a whole number"),
    ],
)
def test_a_bad_env_value_stops_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        create_app({"DATA_DIR": str(tmp_path)})
    assert str(raised.value) == f"{variable}={value!r}: expected {expected}"


def test_env_values_are_typed_and_the_unprefixed_urls_win(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GPTOSS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GPTOSS_MAX_STREAMS_PER_CLIENT", "3")
    monkeypatch.setenv("GPTOSS_API_KEYS", "k1, k2")
    monkeypatch.setenv("GPTOSS_REDIS_URL", "redis://prefixed:6379/0")
    monkeypatch.setenv("REDIS_URL", "redis://unprefixed:6379/0")
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h/db")
    settings = load_settings()
    assert settings.reliability.max_streams_per_client == 3
    assert settings.reliability.api_keys == ("k1", "k2") and settings.gate.api_key == "k1"
    assert settings.redis_url == "redis://unprefixed:6379/0"
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.batches.files_dir == tmp_path.resolve() / "files"


def test_every_default_is_readable(tmp_path: Path) -> None:
    settings = Settings.from_config({**DEFAULTS, "DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'gptoss.db'}"
    assert settings.cache.enabled and settings.observability.worker_metrics_port == 9101


def test_a_worker_whose_metrics_port_is_taken_does_not_start(profiles_file: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        base = holder.getsockname()[1] - 1  # quality_first, the second profile, adds 1
        env = {**os.environ, "GPTOSS_PROFILES": str(profiles_file), "GPTOSS_WORKER_METRICS_PORT": str(base)}
        started = subprocess.run(
            [sys.executable, "-m", "workers.start", "quality_first"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert started.returncode == 2
    assert f"metrics port 127.0.0.1:{base + 1} cannot be used" in started.stderr
    assert "GPTOSS_WORKER_METRICS_PORT" in started.stderr


def test_each_profiles_worker_gets_its_own_metrics_port_from_the_base() -> None:
    observability = load_settings({"WORKER_METRICS_PORT": 9300}).observability
    assert observability.metrics_port_for("latency_first", ["latency_first", "quality_first"]) == 9300
    assert observability.metrics_port_for("quality_first", ["latency_first", "quality_first"]) == 9301
    assert load_settings({"WORKER_METRICS_PORT": 0}).observability.metrics_port_for("quality_first", []) == 0
