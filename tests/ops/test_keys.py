"""`gptoss keys add|list|revoke`: named keys with roles in the database, only their sha256 stored; a
revoked key gets 401; with stored keys and no GPTOSS_API_KEYS, every client needs a key."""

from __future__ import annotations

import hashlib
import importlib.util
import secrets
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask

from app.auth import KEYS_RECHECK_S
from app.keys.models import ApiKey
from app.services import services
from cli.main import main as gptoss
from tests.support.apps import api_app
from tests.support.keys import ENV_ADMIN_KEY
from tests.support.paths import REPO_ROOT

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, keys_database_url: str) -> str:
    """`gptoss keys` finds the database as the API does: DATABASE_URL."""
    monkeypatch.setenv("DATABASE_URL", keys_database_url)
    return keys_database_url


@pytest.fixture
def env_keyed_app(keyed_config: dict[str, Any]) -> Iterator[Flask]:
    with api_app(keyed_config) as app:
        yield app


def keys_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    assert gptoss(["keys", *args]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def unique(name: str) -> str:
    """A name of this test alone in the module's database."""
    return f"{name}-{secrets.token_hex(3)}"


def test_add_prints_the_key_once_and_stores_only_its_hash(
    cli_env: str, env_keyed_app: Flask, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique("carol")
    out, err = keys_cli(capsys, "add", name)
    secret = out.strip()
    assert secret.startswith("sk-gptoss-") and len(secret) > 40 and "\n" not in secret
    assert name in err and "cannot be shown again" in err and secret not in err
    engine = sa.create_engine(cli_env)
    with engine.connect() as connection:
        [row] = connection.execute(sa.select(ApiKey.__table__).where(ApiKey.name == name)).mappings()
        assert row["key_hash"] == hashlib.sha256(secret.encode()).hexdigest() and row["admin"] is False
        for table in ("api_keys", "jobs"):  # the secret is nowhere in the database, in no column
            for stored in connection.execute(sa.text(f"SELECT * FROM {table}")):
                assert all(secret not in str(value) for value in stored)
    engine.dispose()
    listed, _ = keys_cli(capsys, "list")
    assert secret not in listed
    [line] = [line for line in listed.splitlines() if line.startswith(name + "\t")]
    assert line.split("\t")[1:3] == [row["id"], "user"] and "revoked" not in line

    client = env_keyed_app.test_client()
    job = client.post("/v1/jobs", json=HELLO, headers=bearer(secret))
    assert job.status_code == 202
    assert client.get(f"/v1/jobs/{job.get_json()['id']}", headers=bearer(secret)).status_code == 200


def test_a_revoked_key_gets_401_and_its_name_stays_taken(
    cli_env: str, env_keyed_app: Flask, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique("dave")
    secret = keys_cli(capsys, "add", name, "--admin")[0].strip()
    assert "\tadmin\t" in keys_cli(capsys, "list")[0]
    client = env_keyed_app.test_client()
    assert client.get("/v1/jobs", headers=bearer(secret)).status_code == 200
    out, _ = keys_cli(capsys, "revoke", name)
    assert out.startswith(f"revoked {name}\t")
    time.sleep(KEYS_RECHECK_S)  # how long the API may trust what it read of the keys table
    refused = client.get("/v1/jobs", headers=bearer(secret))
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "invalid_api_key"
    listed = [line for line in keys_cli(capsys, "list")[0].splitlines() if line.startswith(name + "\t")]
    assert "revoked 20" in listed[0]
    with pytest.raises(SystemExit, match="revoked already"):
        gptoss(["keys", "revoke", name])
    with pytest.raises(SystemExit, match="exists already"):
        gptoss(["keys", "add", name])
    with pytest.raises(SystemExit, match="no key named"):
        gptoss(["keys", "revoke", unique("nobody")])
    for bad in ("", "two words", "-flag", "x" * 65, "tab\there"):
        with pytest.raises(SystemExit, match="a key name is 1 to 64 letters"):
            gptoss(["keys", "add", "--", bad])
    assert client.get("/v1/jobs", headers=bearer(ENV_ADMIN_KEY)).status_code == 200  # env keys still work


def test_stored_keys_alone_turn_single_user_mode_off_until_the_last_is_revoked(
    cli_env: str, keyed_config: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with api_app({**keyed_config, "API_KEYS": ""}) as app:
        engine = services(app).db_engine
        with engine.begin() as connection:  # this module's database: start with no active key
            connection.execute(sa.update(ApiKey).values(revoked_at=sa.func.now()))
        client = app.test_client()
        assert client.get("/v1/jobs").status_code == 200  # no keys: a local client, single-user mode
        name = unique("erin")
        secret = keys_cli(capsys, "add", name)[0].strip()
        time.sleep(KEYS_RECHECK_S)
        missing = client.get("/v1/jobs")  # a local client too needs a key now
        assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "missing_api_key"
        assert client.get("/v1/jobs", headers=bearer(secret)).status_code == 200
        remote = client.get("/v1/jobs", headers=bearer(secret), environ_base={"REMOTE_ADDR": "192.0.2.7"})
        assert remote.status_code == 200
        keys_cli(capsys, "revoke", name)
        time.sleep(KEYS_RECHECK_S)
        assert client.get("/v1/jobs").status_code == 200  # no active key left: single-user mode again
        remote = client.get("/v1/jobs", environ_base={"REMOTE_ADDR": "192.0.2.7"})
        assert remote.get_json()["error"]["code"] == "api_keys_not_configured"


def test_keys_on_a_database_that_is_not_there_exit_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:9/gone")
    with pytest.raises(SystemExit, match="gptoss keys: the database cannot be used"):
        gptoss(["keys", "list"])


def test_migration_0007_goes_down_and_up_again(cli_env: str) -> None:
    config = AlembicConfig(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", cli_env)
    config.attributes["configure_logger"] = False
    engine = sa.create_engine(cli_env)
    try:
        command.downgrade(config, "0006")
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            assert "api_keys" not in inspector.get_table_names()
            assert "owner" not in {column["name"] for column in inspector.get_columns("jobs")}
        command.upgrade(config, "head")
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            for table in ("jobs", "files", "batches"):
                assert "owner" in {column["name"] for column in inspector.get_columns(table)}
            assert {"id", "name", "key_hash", "admin", "revoked_at"} <= {
                column["name"] for column in inspector.get_columns("api_keys")
            }
    finally:
        engine.dispose()


class FakeArbiter:
    """What gunicorn's on_starting hook reads and sets of its arbiter."""

    def __init__(self, bind: list[str]) -> None:
        self.cfg = SimpleNamespace(
            bind=bind, workers=1, set=lambda name, value: setattr(self.cfg, name, value)
        )
        self.log = SimpleNamespace(warning=lambda *args: None)


def test_gunicorn_serves_other_machines_once_the_database_holds_a_key(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("gunicorn_conf", REPO_ROOT / "gunicorn.conf.py")
    assert spec is not None and spec.loader is not None
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    monkeypatch.delenv("GPTOSS_API_KEYS", raising=False)
    engine = sa.create_engine(cli_env)
    with engine.begin() as connection:
        connection.execute(sa.update(ApiKey).values(revoked_at=sa.func.now()))
    engine.dispose()
    arbiter = FakeArbiter(["0.0.0.0:8123"])
    conf.on_starting(arbiter)
    assert arbiter.cfg.bind == ["127.0.0.1:8123"]
    keys_cli(capsys, "add", unique("frank"))
    arbiter = FakeArbiter(["0.0.0.0:8123"])
    conf.on_starting(arbiter)
    assert arbiter.cfg.bind == ["0.0.0.0:8123"]
