"""Fixtures and helpers for the API under test: its data dir, profiles on the tiny model, its config."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import orm

from app import create_app
from app.jobs.store import request_hash
from app.models import Job
from app.services import services
from tests.support.services import IDLE_REDIS_DB, flushed_redis_url

# the five tags of a job no engine ran: results written by a test standing in for a worker
FAKE_TAGS = {
    "engine": "test",
    "model_id": "tiny",
    "model_size": "20b",
    "gpu_mode": "pipeline",
    "profile": "latency_first",
}
TEST_MAX_TOKENS = 1024  # tiny model: a 1024-token job runs for seconds


@pytest.fixture(scope="session")
def test_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gptoss")


@pytest.fixture(scope="session")
def profiles_file(test_dir: Path) -> Path:
    return write_tiny_profiles(test_dir)


def write_tiny_profiles(folder: Path) -> Path:
    """Both profiles on the tiny model in folder/tiny-gptoss; quality_first runs one job at a time (a busy
    worker is easy)."""
    model_dir = folder / "tiny-gptoss"
    path = folder / "profiles.toml"
    path.write_text(
        f'[profiles.latency_first]\nmodel = "{model_dir}"\nmodel_size = "20b"\ngpu_mode = "pipeline"\n'
        f"max_batch = 4\nmax_tokens = {TEST_MAX_TOKENS}\ntemperature = 0.0\n\n"
        f'[profiles.quality_first]\nmodel = "{model_dir}"\nmodel_size = "120b"\ngpu_mode = "tensor"\n'
        f"max_batch = 1\nmax_tokens = {TEST_MAX_TOKENS}\ntemperature = 0.0\n"
    )
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(test_dir: Path) -> Path:
    """The tiny random-weight gpt-oss model the profiles file points at, written once."""
    from engine.tiny import save_tiny_gptoss

    return save_tiny_gptoss(test_dir / "tiny-gptoss")


def app_config(test_dir: Path, profiles_file: Path, database_url: str, redis_url: str) -> dict[str, Any]:
    return {
        "TESTING": True,
        "PROFILES": str(profiles_file),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DATA_DIR": str(test_dir),
        "READY_TIMEOUT_S": 0.5,
        "CACHE_MAX_ENTRIES": 0,  # tests repeat requests and expect workers to run them; cache tests opt in
    }


@contextmanager
def api_app(config: dict[str, Any]) -> Iterator[Flask]:
    """create_app(config), its DB connections closed afterwards."""
    app = create_app(config)
    try:
        yield app
    finally:
        services(app).db_engine.dispose()


@pytest.fixture
def file_storage() -> str:
    """GPTOSS_FILE_STORAGE of the apps the batch and retention tests build; a test runs on both with
    @pytest.mark.parametrize("file_storage", STORAGES)."""
    return "local"


STORAGES = ["local", "database"]


@pytest.fixture
def idle_app(test_dir: Path, profiles_file: Path, database_url: str, redis_base_url: str) -> Iterator[Flask]:
    """The API on a queue no worker consumes: jobs stay queued."""
    redis_url = flushed_redis_url(redis_base_url, IDLE_REDIS_DB)
    with api_app(app_config(test_dir, profiles_file, database_url, redis_url)) as app:
        yield app


@pytest.fixture
def idle_client(idle_app: Flask) -> FlaskClient:
    return idle_app.test_client()


def insert_queued_job(session: orm.Session, profile: str, request: dict[str, Any], task_id: str = "t") -> Job:
    """A queued job row with this (already valid) request, as the submit path stores one, no message sent."""
    job = Job(profile=profile, request=request, request_hash=request_hash(request), task_id=task_id)
    session.add(job)
    session.commit()
    return job
