"""A file's whole life on both file storages (GPTOSS_FILE_STORAGE local and database), on SQLite and
Postgres: upload, download, a batch reading it, its output and error files, delete, the retention purge;
the database storage reading one chunk at a time; `gptoss storage copy-to-database`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.batches.lifecycle import check_batch
from app.batches.models import FileChunk, StoredFile
from app.batches.storage import CHUNK_BYTES, DatabaseStorage
from app.db import db_session
from app.models import Job, JobStatus, utcnow
from app.services import services
from app.settings import DEFAULTS, Settings, SettingsError
from cli.main import main as gptoss
from tests.support.apps import STORAGES, app_config
from tests.support.batches import error_of, ingest, jsonl, request_line, run, stored_ids, upload
from tests.support.services import IDLE_REDIS_DB, empty_database, flushed_redis_url
from workers.retention import purge_context, purge_expired
from workers.tasks import lifecycle_context

HOUR = 3600
LINES = 60
WORDS = "storage " * 5000  # 40 kB a line: the input file is about 2.4 MB, three chunks


@pytest.fixture
def app(
    test_dir: Path, profiles_file: Path, database_url: str, redis_base_url: str, file_storage: str
) -> Iterator[Flask]:
    redis_url = flushed_redis_url(redis_base_url, IDLE_REDIS_DB)
    config = {**app_config(test_dir, profiles_file, database_url, redis_url), "FILE_STORAGE": file_storage}
    app = create_app({**config, "RETENTION_BATCH_OUTPUTS_S": HOUR})
    yield app
    services(app).db_engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def chunk_rows(app: Flask, file_id: str) -> int:
    with app.app_context(), db_session() as session:
        return session.scalar(sa.select(sa.func.count()).where(FileChunk.file_id == file_id)) or 0


def batch_jobs(app: Flask, batch_id: str) -> list[str]:
    with app.app_context(), db_session() as session:
        query = sa.select(Job.id).where(Job.batch_id == batch_id).order_by(Job.batch_line)
        return list(session.scalars(query))


@pytest.mark.parametrize("file_storage", STORAGES)
def test_a_file_of_several_chunks_lives_its_whole_life_in_either_storage(
    app: Flask, client: FlaskClient, file_storage: str
) -> None:
    data = "".join(request_line(f"r{i}", WORDS) + "\n" for i in range(LINES)).encode()
    assert len(data) > 2 * CHUNK_BYTES
    file = upload(client, data).get_json()
    assert file["bytes"] == len(data)
    content = client.get(f"/v1/files/{file['id']}/content")
    assert content.get_data() == data and content.content_length == len(data)
    assert chunk_rows(app, file["id"]) == (3 if file_storage == "database" else 0)

    batch = client.post(
        "/v1/batches",
        json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    ).get_json()
    assert ingest(app, batch["id"]) == "in_progress"  # read line by line across the chunks' seams
    jobs = batch_jobs(app, batch["id"])
    assert len(jobs) == LINES
    long_answer = "answer " * 100_000  # two output lines of 700 kB: an output file of two chunks
    run(app, jobs[0], JobStatus.SUCCEEDED, long_answer)
    run(app, jobs[1], JobStatus.SUCCEEDED, long_answer)
    run(app, jobs[2], JobStatus.FAILED, error="RuntimeError: boom")
    client.post(f"/v1/batches/{batch['id']}/cancel")
    with app.app_context():
        check_batch(lifecycle_context(app), batch["id"])
    done = client.get(f"/v1/batches/{batch['id']}").get_json()
    assert done["status"] == "cancelled"

    output = jsonl(client, done["output_file_id"])
    assert [line["custom_id"] for line in output] == ["r0", "r1"]
    assert output[0]["response"]["body"]["choices"][0]["message"]["content"] == long_answer
    output_file = client.get(f"/v1/files/{done['output_file_id']}").get_json()
    raw_output = client.get(f"/v1/files/{done['output_file_id']}/content").get_data()
    assert output_file["bytes"] == len(raw_output) > CHUNK_BYTES
    errors = jsonl(client, done["error_file_id"])
    assert [line["custom_id"] for line in errors] == [f"r{i}" for i in range(2, LINES)]
    assert json.loads(raw_output.splitlines()[1])["custom_id"] == "r1"

    assert client.delete(f"/v1/files/{file['id']}").get_json()["deleted"] is True
    assert file["id"] not in stored_ids(app)
    error_of(client.get(f"/v1/files/{file['id']}/content"), 404)

    with app.app_context(), db_session() as session:  # the output file's retention has passed
        long_ago = utcnow() - timedelta(days=2)
        query = (
            sa.update(StoredFile).where(StoredFile.id == done["output_file_id"]).values(created_at=long_ago)
        )
        session.execute(query)
        session.commit()
    with app.app_context():
        purge_expired(purge_context(app))
    assert done["output_file_id"] not in stored_ids(app)
    assert done["error_file_id"] in stored_ids(app)  # not expired yet
    assert chunk_rows(app, done["output_file_id"]) == 0


def test_the_database_storage_streams_a_file_a_chunk_at_a_time(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    storage = DatabaseStorage(engine)
    data = b"".join(b"line %d\n" % i for i in range(400_000))  # about 4.5 MB
    pieces = (data[start : start + 100_000] for start in range(0, len(data), 100_000))
    file_id = "file-" + "ab" * 12
    try:
        assert storage.write(file_id, pieces) == len(data)
        with storage.open(file_id) as content:
            assert content.readline() == b"line 0\n"
            assert content.raw.seq == 1  # one chunk fetched, not the whole file
            assert b"line 0\n" + content.read() == data
    finally:
        storage.delete([file_id])
        engine.dispose()
    assert not storage.exists(file_id)
    with pytest.raises(FileNotFoundError):
        storage.open(file_id)


def test_the_database_storage_keeps_an_empty_file_and_nothing_of_a_failed_write(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    storage = DatabaseStorage(engine)
    empty, failed = "file-" + "cd" * 12, "file-" + "ef" * 12

    def broken() -> Iterator[bytes]:
        yield b"x" * (2 * CHUNK_BYTES)
        raise ConnectionError("the client went away")

    try:
        assert storage.write(empty, []) == 0
        with storage.open(empty) as content:
            assert content.read() == b""
        with pytest.raises(ConnectionError):
            storage.write(failed, broken())
        assert not storage.exists(failed)
    finally:
        storage.delete([empty, failed])
        engine.dispose()


def test_the_file_storage_setting_is_local_or_database(tmp_path: Path) -> None:
    def storage_of(value: str | None) -> str:
        chosen = {"FILE_STORAGE": value} if value is not None else {}
        return Settings.from_config({**DEFAULTS, "DATA_DIR": str(tmp_path), **chosen}).batches.file_storage

    assert (storage_of(None), storage_of("Database")) == ("local", "database")
    with pytest.raises(SettingsError, match="GPTOSS_FILE_STORAGE='s3': expected local or database"):
        storage_of("s3")


# switching a deployment


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request, tmp_path, "gptoss_storage") as url:
        yield url


def test_copy_to_database_moves_a_local_deployments_files(
    tmp_path: Path,
    profiles_file: Path,
    fresh_database_url: str,
    redis_base_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    redis_url = flushed_redis_url(redis_base_url, IDLE_REDIS_DB)
    config = app_config(tmp_path, profiles_file, fresh_database_url, redis_url)
    big = bytes(range(256)) * (CHUNK_BYTES // 100)  # 2.6 MB of every byte value
    local = create_app(config)
    with local.test_client() as client:
        ids = [upload(client, data).get_json()["id"] for data in (big, b"{}\n", b"gone\n")]
    services(local).files.delete([ids[2]])  # a row whose bytes were lost before the switch
    services(local).db_engine.dispose()
    monkeypatch.setenv("DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("GPTOSS_DATA_DIR", str(tmp_path))

    assert gptoss(["storage", "copy-to-database"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"copied 2 files ({len(big) + 3} bytes) into the database; 0 were there already")
    assert f"{ids[2]}: no bytes under" in err
    assert gptoss(["storage", "copy-to-database"]) == 0  # again: nothing left to copy
    assert "copied 0 files (0 bytes) into the database; 2 were there already" in capsys.readouterr().out

    switched = create_app({**config, "FILE_STORAGE": "database"})
    with switched.test_client() as client:
        assert client.get(f"/v1/files/{ids[0]}/content").get_data() == big
        assert client.get(f"/v1/files/{ids[1]}/content").get_data() == b"{}\n"
        assert client.get(f"/v1/files/{ids[2]}/content").status_code == 404
    services(switched).db_engine.dispose()
