"""Retention over HTTP on SQLite and Postgres with real Redis: expires_after on upload, expired things
answer 404 saying so (before and after the purge), and the purge removes only what finished and expired,
PURGE_CHUNK rows per transaction. Each test has a database of its own, so the purge's counts are exact."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.batches.lifecycle import check_batch
from app.batches.models import Batch, StoredFile
from app.db import db_session
from app.models import Job, JobStatus, Tombstone, utcnow
from app.retention import TOMBSTONE_KEEP
from app.services import services
from app.settings import SettingsError, load_settings
from tests.support.apps import STORAGES, app_config, insert_queued_job
from tests.support.batches import claim, create_batch, error_of, ingest, request_line, run, upload
from tests.support.keys import add_key
from tests.support.services import IDLE_REDIS_DB, empty_database, flushed_redis_url
from workers.retention import PurgeReport, purge_context, purge_expired
from workers.tasks import lifecycle_context

HOUR = 3600
ANCHOR, SECONDS = "expires_after[anchor]", "expires_after[seconds]"
LONG_AGO = timedelta(days=2)  # older than every period these tests set
RETENTION = {
    "RETENTION_JOBS_S": HOUR,
    "RETENTION_FILES_S": HOUR,
    "RETENTION_BATCH_OUTPUTS_S": HOUR,
    "RETENTION_BATCHES_S": HOUR,
    "PURGE_CHUNK": 2,
}


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request, tmp_path, "gptoss_retention") as url:
        yield url


@pytest.fixture
def app(
    test_dir: Path, profiles_file: Path, fresh_database_url: str, redis_base_url: str, file_storage: str
) -> Iterator[Flask]:
    redis_url = flushed_redis_url(redis_base_url, IDLE_REDIS_DB)
    config = {**app_config(test_dir, profiles_file, fresh_database_url, redis_url), **RETENTION}
    app = create_app({**config, "FILE_STORAGE": file_storage})
    yield app
    services(app).db_engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def upload_expiring(client: FlaskClient, **fields: str) -> Any:
    content = io.BytesIO((request_line("a") + "\n").encode())
    data = {"purpose": "batch", "file": (content, "in.jsonl"), **fields}
    return client.post("/v1/files", data=data, content_type="multipart/form-data")


def backdate(app: Flask, model: type[Any], row_id: str, **columns: Any) -> None:
    """Move a row's times into the past (as if it had been there for LONG_AGO)."""
    with app.app_context(), db_session() as session:
        session.execute(sa.update(model).where(model.id == row_id).values(**columns))
        session.commit()


def purge(app: Flask) -> PurgeReport:
    with app.app_context():
        return purge_expired(purge_context(app))


def finished_job(app: Flask, status: JobStatus = JobStatus.SUCCEEDED) -> str:
    with app.app_context(), db_session() as session:
        job_id = insert_queued_job(session, "latency_first", {"prompt": "hi"}).id
    run(app, job_id, status, "done")
    return job_id


def ids_in(app: Flask, model: type[Any]) -> set[str]:
    with app.app_context(), db_session() as session:
        return set(session.scalars(sa.select(model.id)))


# expires_after on upload


def test_an_upload_with_expires_after_shows_when_it_expires(client: FlaskClient) -> None:
    fields = {ANCHOR: "created_at", SECONDS: "7200"}
    file = upload_expiring(client, **fields).get_json()
    assert file["expires_at"] == file["created_at"] + 7200
    assert client.get(f"/v1/files/{file['id']}").get_json()["expires_at"] == file["expires_at"]
    plain = upload_expiring(client).get_json()  # no expires_after: RETENTION_FILES_S after the upload
    assert plain["expires_at"] == plain["created_at"] + HOUR


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({ANCHOR: "last_active_at", SECONDS: "3600"}, ANCHOR),
        ({ANCHOR: "created_at", SECONDS: "3599"}, SECONDS),
        ({ANCHOR: "created_at", SECONDS: "2592001"}, SECONDS),
        ({ANCHOR: "created_at", SECONDS: "an hour"}, SECONDS),
        ({ANCHOR: "created_at"}, SECONDS),
        ({SECONDS: "3600"}, ANCHOR),
    ],
)
def test_a_bad_expires_after_is_a_400_naming_the_field(
    app: Flask, client: FlaskClient, fields: dict[str, str], param: str
) -> None:
    error = error_of(upload_expiring(client, **fields), 400)
    assert (error["param"], error["code"]) == (param, "invalid_expires_after")
    assert ids_in(app, StoredFile) == set()  # nothing stored


def test_openai_allows_an_hour_to_thirty_days(client: FlaskClient) -> None:
    for seconds in (3600, 2592000):
        fields = {ANCHOR: "created_at", SECONDS: str(seconds)}
        file = upload_expiring(client, **fields).get_json()
        assert file["expires_at"] == file["created_at"] + seconds


# expired things answer 404, before and after the purge


def test_expired_things_answer_404_saying_so_before_and_after_the_purge(
    app: Flask, client: FlaskClient
) -> None:
    job_id = finished_job(app)
    file_id = upload(client, (request_line("a") + "\n").encode()).get_json()["id"]
    batch = create_batch(client, ["{bad"])  # fails at validation: a finished batch
    ingest(app, batch["id"])
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200  # not yet expired
    backdate(app, Job, job_id, finished_at=utcnow() - LONG_AGO)
    backdate(app, StoredFile, file_id, expires_at=utcnow() - timedelta(seconds=1))
    backdate(app, Batch, batch["id"], failed_at=utcnow() - LONG_AGO)

    def expired(path: str, code: str, kind: str, row_id: str) -> None:
        error = error_of(client.get(path), 404)
        assert error["code"] == code
        assert error["message"].startswith(f"{kind} {row_id} expired at 20"), error["message"]

    def all_expired() -> None:
        expired(f"/v1/jobs/{job_id}", "job_expired", "Job", job_id)
        expired(f"/v1/jobs/{job_id}/events", "job_expired", "Job", job_id)
        expired(f"/v1/files/{file_id}", "file_expired", "File", file_id)
        expired(f"/v1/files/{file_id}/content", "file_expired", "File", file_id)
        expired(f"/v1/batches/{batch['id']}", "batch_expired", "Batch", batch["id"])

    fresh_job, fresh_file = finished_job(app), upload(client, b"{}\n").get_json()["id"]
    all_expired()  # the purge has not run: past its expiry is already gone
    assert [job["id"] for job in client.get("/v1/jobs").get_json()["data"]] == [fresh_job]
    assert [file["id"] for file in client.get("/v1/files").get_json()["data"]] == [
        fresh_file,
        batch["input_file_id"],
    ]
    assert job_id not in [job["id"] for job in client.get("/v1/jobs").get_json()["data"]]
    assert file_id not in [file["id"] for file in client.get("/v1/files").get_json()["data"]]
    assert client.get("/v1/batches").get_json()["data"] == []
    refused = error_of(client.post("/v1/batches", json={**batch_body(), "input_file_id": file_id}), 400)
    assert (refused["param"], refused["code"]) == ("input_file_id", "file_expired")
    assert error_of(client.get("/v1/jobs/job_0123456789ab0123456789abcdef"), 404)["code"] == "job_not_found"

    report = purge(app)
    assert (report.jobs, report.files, report.batches) == (1, 1, 1)
    assert not services(app).files.exists(file_id)
    all_expired()  # purged: the tombstones answer the same

    with app.app_context(), db_session() as session:  # a tombstone is kept TOMBSTONE_KEEP, then purged
        session.execute(sa.update(Tombstone).values(purged_at=utcnow() - TOMBSTONE_KEEP))
        session.commit()
    assert purge(app).tombstones == 3
    assert error_of(client.get(f"/v1/jobs/{job_id}"), 404)["code"] == "job_not_found"


def batch_body() -> dict[str, Any]:
    return {"endpoint": "/v1/chat/completions", "completion_window": "24h"}


def test_an_expired_response_says_so(app: Flask, client: FlaskClient) -> None:
    with app.app_context(), db_session() as session:
        job_id = insert_queued_job(session, "latency_first", {"prompt": "hi", "response": {"store": True}}).id
    run(app, job_id, JobStatus.SUCCEEDED, "done")
    backdate(app, Job, job_id, finished_at=utcnow() - LONG_AGO)
    response_id = "resp_" + job_id.removeprefix("job_")
    error = error_of(client.get(f"/v1/responses/{response_id}"), 404)
    assert error["code"] == "response_expired"
    assert error["message"].startswith(f"Response {response_id} expired at ")


# the purge


@pytest.mark.parametrize("file_storage", STORAGES)
def test_the_purge_removes_only_what_finished_and_expired(app: Flask, client: FlaskClient) -> None:
    old = utcnow() - LONG_AGO
    expired_jobs = [finished_job(app, status) for status in (JobStatus.SUCCEEDED, JobStatus.FAILED)]
    recent_job = finished_job(app)
    with app.app_context(), db_session() as session:
        queued = insert_queued_job(session, "latency_first", {"prompt": "hi"}).id
        running = insert_queued_job(session, "latency_first", {"prompt": "hi"}).id
    claim(app, running)
    for job_id in (*expired_jobs, queued, running):  # however old, unfinished jobs stay
        backdate(app, Job, job_id, created_at=old, finished_at=old if job_id in expired_jobs else None)
    backdate(app, Job, running, started_at=old)

    # an in-progress batch whose input file and one finished line have expired: all kept until it ends
    batch = create_batch(client, [request_line("r0"), request_line("r1")])
    ingest(app, batch["id"])
    with app.app_context(), db_session() as session:
        of_batch = sa.select(Job.id).where(Job.batch_id == batch["id"]).order_by(Job.batch_line)
        lines = list(session.scalars(of_batch))
    run(app, lines[0], JobStatus.SUCCEEDED, "zero")
    backdate(app, Job, lines[0], finished_at=old)
    backdate(app, StoredFile, batch["input_file_id"], created_at=old)
    backdate(app, Batch, batch["id"], created_at=old)
    # a finished batch, its input file and output files long expired
    ended = create_batch(client, ["{bad"])
    ingest(app, ended["id"])
    backdate(app, Batch, ended["id"], failed_at=old)
    backdate(app, StoredFile, ended["input_file_id"], created_at=old)
    fresh_file = upload(client, b"{}\n").get_json()["id"]

    report = purge(app)

    assert (report.jobs, report.batches, report.files) == (2, 1, 1)
    assert ids_in(app, Job) == {recent_job, queued, running, *lines}
    assert ids_in(app, Batch) == {batch["id"]}
    assert ids_in(app, StoredFile) == {batch["input_file_id"], fresh_file}
    assert services(app).files.exists(batch["input_file_id"])
    assert not services(app).files.exists(ended["input_file_id"])
    assert client.get(f"/v1/batches/{batch['id']}").get_json()["status"] == "in_progress"
    assert ids_in(app, Tombstone) == {*expired_jobs, ended["id"], ended["input_file_id"]}

    run(app, lines[1], JobStatus.SUCCEEDED, "one")  # the batch ends; then its line and input go too
    with app.app_context():
        check_batch(lifecycle_context(app), batch["id"])
    done = client.get(f"/v1/batches/{batch['id']}").get_json()
    assert done["status"] == "completed"
    report = purge(app)
    assert (report.jobs, report.batches, report.files) == (1, 0, 1)  # line r0 and the input file
    assert ids_in(app, StoredFile) == {fresh_file, done["output_file_id"]}  # outputs: an hour from now


def test_the_purge_deletes_in_transactions_of_purge_chunk_rows(app: Flask) -> None:
    job_ids = [finished_job(app) for _ in range(5)]
    for job_id in job_ids:
        backdate(app, Job, job_id, finished_at=utcnow() - LONG_AGO)
    events: list[str] = []
    engine = services(app).db_engine

    def seen(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("DELETE FROM jobs"):
            events.append("delete jobs")

    sa.event.listen(engine, "before_cursor_execute", seen)
    sa.event.listen(engine, "commit", lambda _connection: events.append("commit"))
    report = purge(app)
    assert report.jobs == 5 and report.transactions == 3  # 2 + 2 + 1 (PURGE_CHUNK is 2)
    assert events == ["delete jobs", "commit"] * 3  # one DELETE per transaction, each committed
    assert ids_in(app, Job) == set()


def test_nothing_expires_by_default(test_dir: Path, profiles_file: Path, fresh_database_url: str) -> None:
    app = create_app(app_config(test_dir, profiles_file, fresh_database_url, "redis://127.0.0.1:9/0"))
    job_id = finished_job(app)
    backdate(app, Job, job_id, finished_at=utcnow() - timedelta(days=3650))
    assert app.test_client().get(f"/v1/jobs/{job_id}").status_code == 200
    assert not purge(app)
    assert ids_in(app, Job) == {job_id}
    services(app).db_engine.dispose()


def test_celery_beat_runs_the_purge_on_the_batch_worker(app: Flask) -> None:
    celery_app = app.extensions["celery"]
    entry = celery_app.conf.beat_schedule["purge-expired"]
    assert entry == {
        "task": "workers.retention.purge",
        "schedule": 3600.0,
        "options": {"queue": "batches", "expires": 3600.0},
    }
    assert "workers.retention" in celery_app.conf.include
    off = create_app({**app.config, "PURGE_INTERVAL_S": 0})
    assert "purge-expired" not in off.extensions["celery"].conf.beat_schedule
    services(off).db_engine.dispose()


def test_retention_settings_read_seconds_and_refuse_negative_ones() -> None:
    assert load_settings({"RETENTION_JOBS_S": ""}).retention.jobs_s == 0
    assert load_settings({"RETENTION_FILES_S": "86400"}).retention.files_s == 86400
    with pytest.raises(SettingsError, match="GPTOSS_RETENTION_BATCHES_S"):
        load_settings({"RETENTION_BATCHES_S": -1})


def test_an_expired_thing_says_so_to_its_own_key_only(app: Flask) -> None:
    alice, bob = add_key(app, "alice"), add_key(app, "bob")
    job_id = alice.post("/v1/jobs", json={"prompt": "hi"}).get_json()["id"]
    run(app, job_id, JobStatus.SUCCEEDED, "done")
    backdate(app, Job, job_id, finished_at=utcnow() - LONG_AGO)
    for purged in (False, True):  # past its expiry, then a tombstone
        assert error_of(alice.get(f"/v1/jobs/{job_id}"), 404)["code"] == "job_expired", purged
        assert error_of(bob.get(f"/v1/jobs/{job_id}"), 404)["code"] == "job_not_found", purged
        if not purged:
            assert purge(app).jobs == 1
    with app.app_context(), db_session() as session:
        assert session.get(Tombstone, job_id).owner == alice.key_id  # type: ignore[union-attr]
