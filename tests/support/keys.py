"""Fixtures of the team tests: an API on a database of its own (SQLite and Postgres), with an admin key
in GPTOSS_API_KEYS and stored keys made as `gptoss keys add` makes them, each test's under its own names.

A database of its own: once it holds a key, every request needs one, which other tests' apps must not see.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.db import db_session
from app.keys import store as key_store
from app.keys.caller import env_key_id
from tests.support.apps import api_app, app_config
from tests.support.services import IDLE_REDIS_DB, empty_database, flushed_redis_url

ENV_ADMIN_KEY = "sk-env-admin-for-tests"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def keys_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of this test module alone."""
    name = "gptoss_" + request.module.__name__.rsplit(".", 1)[-1]
    with empty_database(request, tmp_path_factory.mktemp("keys"), name) as url:
        yield url


class KeyClient:
    """The test client sending one API key."""

    def __init__(self, client: FlaskClient, key: str, key_id: str) -> None:
        self.client, self.key, self.key_id = client, key, key_id

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        return getattr(self.client, method)(path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self._call("get", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self._call("post", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self._call("delete", path, **kwargs)


@dataclass
class Team:
    """Two ordinary keys, a stored admin key and the env admin key, on one app."""

    app: Flask
    alice: KeyClient
    bob: KeyClient
    admin: KeyClient  # stored with --admin
    env_admin: KeyClient  # GPTOSS_API_KEYS


def add_key(app: Flask, name: str, admin: bool = False) -> KeyClient:
    """Store a key as `gptoss keys add` does; a client that sends it."""
    with app.app_context(), db_session() as session:
        row, secret = key_store.add_key(session, name, admin)
    return KeyClient(app.test_client(), secret, row.id)


@pytest.fixture
def keyed_config(test_dir: Path, profiles_file: Path, keys_database_url: str, redis_base_url: str) -> dict:
    redis_url = flushed_redis_url(redis_base_url, IDLE_REDIS_DB)  # no worker: jobs stay queued
    return {**app_config(test_dir, profiles_file, keys_database_url, redis_url), "API_KEYS": ENV_ADMIN_KEY}


@pytest.fixture
def team(keyed_config: dict) -> Iterator[Team]:
    with api_app(keyed_config) as app:
        suffix = secrets.token_hex(4)  # names of this test alone, in the module's database
        yield Team(
            app=app,
            alice=add_key(app, f"alice-{suffix}"),
            bob=add_key(app, f"bob-{suffix}"),
            admin=add_key(app, f"ops-{suffix}", admin=True),
            env_admin=KeyClient(app.test_client(), ENV_ADMIN_KEY, env_key_id(ENV_ADMIN_KEY)),
        )
