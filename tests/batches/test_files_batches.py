"""Files and batches over HTTP on SQLite and Postgres with real Redis; ingest and checks run in-process.
The tests that touch file bytes run on both file storages (local folder, database)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app.batches.lifecycle import check_batch
from app.batches.models import Batch
from app.batches.results import response_body
from app.db import db_session
from app.jobs.cancel import cancel_key
from app.models import Job, JobStatus, utcnow
from app.queue import job_queue
from app.services import services
from engine.prompt import today_utc
from tests.support.apps import STORAGES
from tests.support.batches import (
    batch_app,
    claim,
    create_batch,
    error_of,
    finish,
    ingest,
    jsonl,
    private_redis,
    request_line,
    run,
    stored_ids,
    upload,
)
from workers.tasks import lifecycle_context


@pytest.fixture(scope="module")
def idle_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis no worker consumes: ingest and checks are called directly."""
    with private_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def app(
    test_dir: Path, profiles_file: Path, database_url: str, idle_redis_url: str, file_storage: str
) -> Iterator[Flask]:
    redis_url = idle_redis_url
    redis.Redis.from_url(redis_url).flushdb()
    app = batch_app(
        test_dir, profiles_file, database_url, redis_url, BATCH_INSERT_CHUNK=2, FILE_STORAGE=file_storage
    )
    yield app
    services(app).db_engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def jobs_of(app: Flask, batch_id: str) -> list[Job]:
    with app.app_context(), db_session() as session:
        return list(session.scalars(sa.select(Job).where(Job.batch_id == batch_id).order_by(Job.batch_line)))


def check(app: Flask, batch_id: str, **kwargs: Any) -> dict[str, Any]:
    with app.app_context():
        check_batch(lifecycle_context(app), batch_id, **kwargs)
    return app.test_client().get(f"/v1/batches/{batch_id}").get_json()


# files


@pytest.mark.parametrize("file_storage", STORAGES)
def test_a_file_is_uploaded_read_listed_and_deleted(app: Flask, client: FlaskClient) -> None:
    data = (request_line("a") + "\n").encode()
    response = upload(client, data, filename="../../etc/passwd.jsonl")
    assert response.status_code == 200, response.get_json()
    file = response.get_json()
    assert file["id"].startswith("file-") and file["object"] == "file"
    assert (file["bytes"], file["filename"], file["purpose"], file["status"]) == (
        len(data), "passwd.jsonl", "batch", "processed",
    )  # fmt: skip
    with services(app).files.open(file["id"]) as stored:  # under the server's id, never the uploaded name
        assert stored.read() == data
    assert client.get(f"/v1/files/{file['id']}").get_json() == file
    assert client.get(f"/v1/files/{file['id']}/content").get_data() == data
    listed = client.get("/v1/files?purpose=batch&limit=1").get_json()
    assert listed["data"] == [file] and listed["first_id"] == file["id"]
    deleted = client.delete(f"/v1/files/{file['id']}").get_json()
    assert deleted == {"id": file["id"], "object": "file", "deleted": True}
    assert file["id"] not in stored_ids(app)
    assert error_of(client.get(f"/v1/files/{file['id']}"), 404)["code"] == "file_not_found"
    error_of(client.get(f"/v1/files/{file['id']}/content"), 404)


def test_file_list_pages_in_both_orders(client: FlaskClient) -> None:
    ids = [upload(client, b"x\n", filename=f"f{i}.jsonl").get_json()["id"] for i in range(3)]
    newest = client.get(f"/v1/files?limit=2&after={ids[2]}").get_json()
    assert [f["id"] for f in newest["data"]][:2] == [ids[1], ids[0]]
    oldest = client.get(f"/v1/files?order=asc&after={ids[0]}&limit=1").get_json()
    assert [f["id"] for f in oldest["data"]] == [ids[1]] and oldest["has_more"] is True


@pytest.mark.parametrize("file_storage", STORAGES)
def test_upload_refuses_a_wrong_purpose_a_missing_file_and_too_many_bytes(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert error_of(upload(client, b"x", purpose="fine-tune"), 400)["param"] == "purpose"
    no_file = client.post("/v1/files", data={"purpose": "batch"}, content_type="multipart/form-data")
    assert error_of(no_file, 400)["param"] == "file"
    settings = services(app).settings  # as if the app had started with GPTOSS_MAX_UPLOAD_BYTES=1000
    monkeypatch.setattr(
        services(app), "settings", replace(settings, batches=replace(settings.batches, max_upload_bytes=1000))
    )
    before = stored_ids(app)
    error_of(upload(client, b"x" * (2 * 1024 * 1024)), 413)  # refused by length, before reading
    error_of(upload(client, b"x" * 1001), 413)  # within the multipart allowance, refused once stored
    assert stored_ids(app) == before
    assert upload(client, b"x" * 1000).status_code == 200


# batch creation


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"endpoint": "/v1/embeddings"}, 400, "endpoint"),
        ({"completion_window": "48h"}, 400, "completion_window"),
        ({"input_file_id": "file-000000000000000000000000"}, 400, "input_file_id"),
        ({"metadata": {"k": 1}}, 400, "metadata.k"),
        ({"extra": True}, 400, "extra"),
    ],
)
def test_bad_batch_bodies_name_the_field(client: FlaskClient, change: dict, status: int, param: str) -> None:
    file_id = upload(client, b"x\n").get_json()["id"]
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **change,
    }
    assert error_of(client.post("/v1/batches", json=body), status)["param"] == param


def test_a_batch_is_validating_at_once_with_the_openai_shape(client: FlaskClient) -> None:
    batch = create_batch(client, [request_line("a")], metadata={"project": "x"})
    assert batch["id"].startswith("batch_") and batch["object"] == "batch"
    assert (batch["status"], batch["endpoint"], batch["completion_window"]) == (
        "validating", "/v1/chat/completions", "24h",
    )  # fmt: skip
    assert batch["expires_at"] - batch["created_at"] == 24 * 3600
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert batch["metadata"] == {"project": "x"} and batch["errors"] is None
    expected_keys = {
        "id", "object", "endpoint", "errors", "input_file_id", "completion_window", "status",
        "output_file_id", "error_file_id", "created_at", "in_progress_at", "expires_at", "finalizing_at",
        "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at", "request_counts",
        "metadata",
    }  # fmt: skip
    assert set(batch) == expected_keys
    assert client.get(f"/v1/batches/{batch['id']}").get_json() == batch


def test_a_file_with_bad_lines_fails_the_batch_with_line_numbers_and_no_jobs(
    app: Flask, client: FlaskClient
) -> None:
    lines = [
        request_line("a"),
        "{oops",
        request_line("a"),
        request_line("d", model="gpt-4o"),
        request_line("e"),
    ]
    batch = create_batch(client, lines)
    assert ingest(app, batch["id"]) == "failed"
    failed = client.get(f"/v1/batches/{batch['id']}").get_json()
    assert failed["status"] == "failed" and failed["failed_at"] is not None
    assert failed["errors"]["object"] == "list"
    errors = [(e["line"], e["code"], e["param"]) for e in failed["errors"]["data"]]
    assert errors == [(2, "invalid_json_line", None), (3, "duplicate_custom_id", "custom_id"),
                      (4, "model_not_found", "body.model")]  # fmt: skip
    assert jobs_of(app, batch["id"]) == []
    assert failed["request_counts"] == {"total": 0, "completed": 0, "failed": 0}


@pytest.mark.parametrize("file_storage", STORAGES)
def test_the_input_of_a_running_batch_cannot_be_deleted(app: Flask, client: FlaskClient) -> None:
    batch = create_batch(client, [request_line("a")])
    error = error_of(client.delete(f"/v1/files/{batch['input_file_id']}"), 409)
    assert error["code"] == "file_in_use" and batch["id"] in error["message"]
    services(app).files.delete([batch["input_file_id"]])  # its bytes gone anyway
    assert ingest(app, batch["id"]) == "failed"
    errors = client.get(f"/v1/batches/{batch['id']}").get_json()["errors"]["data"]
    assert [e["code"] for e in errors] == ["file_not_found"]


def test_ingest_creates_and_enqueues_one_job_per_line_in_chunks(app: Flask, client: FlaskClient) -> None:
    batch = create_batch(client, [request_line(f"r{i}", max_tokens=5 + i) for i in range(5)])
    assert ingest(app, batch["id"]) == "in_progress"
    jobs = jobs_of(app, batch["id"])
    assert [(j.custom_id, j.batch_line, j.status, j.request["max_tokens"]) for j in jobs] == [
        (f"r{i}", i + 1, "queued", 5 + i) for i in range(5)
    ]
    # the profile's sampling defaults and the ingest's date are stored, as for a submitted job
    assert {(j.request["temperature"], j.request["reasoning_effort"]) for j in jobs} == {(0.0, "medium")}
    assert all(j.request["current_date"] == today_utc() for j in jobs)
    batch_queue = job_queue("latency_first", batch["id"], {})  # the batch lane, the batch's bucket
    assert batch_queue.startswith("latency_first.batch")
    assert redis.Redis.from_url(app.config["REDIS_URL"]).llen(batch_queue) == 5
    shown = client.get(f"/v1/batches/{batch['id']}").get_json()
    assert shown["status"] == "in_progress" and shown["in_progress_at"] is not None
    assert shown["request_counts"] == {"total": 5, "completed": 0, "failed": 0}
    assert ingest(app, batch["id"]) == "in_progress"  # a second delivery creates nothing more
    assert len(jobs_of(app, batch["id"])) == 5


def test_batch_jobs_get_the_queued_event_and_log_line_of_single_jobs(
    app: Flask, client: FlaskClient, capfd: pytest.CaptureFixture[str]
) -> None:
    batch = create_batch(client, [request_line(f"q{i}") for i in range(3)])
    capfd.readouterr()
    assert ingest(app, batch["id"]) == "in_progress"
    jobs = jobs_of(app, batch["id"])
    logged = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if '"event":"job.queued"' in line
    ]
    assert sorted(line["job_id"] for line in logged) == sorted(job.id for job in jobs)
    assert all(line["profile"] == "latency_first" for line in logged)
    for job in jobs:  # the same first event a POST /v1/jobs job gets (app/jobs/enqueue.py)
        first = services(app).events.read_after(job.id)[0]
        assert (first.type, first.data) == ("queued", {"id": job.id, "profile": "latency_first"})


def test_ingest_resumes_after_a_crash_without_duplicates(app: Flask, client: FlaskClient) -> None:
    batch = create_batch(client, [request_line(f"r{i}") for i in range(5)])
    from workers import tasks as batch_tasks

    real_context = batch_tasks.ingest_context
    sent: list[str] = []

    def enqueue_then_crash(jobs: Any) -> None:
        sent.extend(job.job_id for job in jobs)
        raise ConnectionError("broker went away")

    with app.app_context():
        context = real_context(app)
        context.enqueue_jobs = enqueue_then_crash
        with pytest.raises(ConnectionError):
            batch_tasks.ingest_batch_now(context, batch["id"])
    assert len(jobs_of(app, batch["id"])) == 2  # the first chunk was committed
    assert ingest(app, batch["id"]) == "in_progress"
    jobs = jobs_of(app, batch["id"])
    assert [j.batch_line for j in jobs] == [1, 2, 3, 4, 5]
    batch_queue = job_queue("latency_first", batch["id"], {})
    assert redis.Redis.from_url(app.config["REDIS_URL"]).llen(batch_queue) == 5  # the first chunk again


@pytest.mark.parametrize("file_storage", STORAGES)
def test_live_counts_then_output_and_error_files_in_input_order(app: Flask, client: FlaskClient) -> None:
    batch = create_batch(client, [request_line(f"r{i}") for i in range(5)])
    ingest(app, batch["id"])
    jobs = jobs_of(app, batch["id"])
    run(app, jobs[2].id, JobStatus.SUCCEEDED, "two")
    run(app, jobs[1].id, JobStatus.FAILED, error="RuntimeError: boom")
    shown = check(app, batch["id"])
    assert shown["status"] == "in_progress"
    assert shown["request_counts"] == {"total": 5, "completed": 1, "failed": 1}
    run(app, jobs[0].id, JobStatus.SUCCEEDED, "zero")
    run(app, jobs[3].id, JobStatus.SUCCEEDED, "three")
    assert client.post(f"/v1/jobs/{jobs[4].id}/cancel").get_json()["status"] == "cancelled"  # just this one
    done = check(app, batch["id"])
    assert done["status"] == "completed"
    assert done["finalizing_at"] is not None and done["completed_at"] is not None
    assert done["request_counts"] == {"total": 5, "completed": 3, "failed": 2}
    output = jsonl(client, done["output_file_id"])
    answers = [
        (line["custom_id"], line["response"]["body"]["choices"][0]["message"]["content"]) for line in output
    ]
    assert answers == [("r0", "zero"), ("r2", "two"), ("r3", "three")]
    first = output[0]
    assert first["id"].startswith("batch_req_") and first["error"] is None
    assert (first["response"]["status_code"], first["response"]["request_id"]) == (200, jobs[0].id)
    body = first["response"]["body"]
    assert (body["object"], body["model"], body["choices"][0]["finish_reason"]) == (
        "chat.completion",
        "tiny",
        "stop",
    )
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    error_line, cancelled_line = jsonl(client, done["error_file_id"])
    assert error_line["custom_id"] == "r1" and error_line["response"]["status_code"] == 500
    assert "boom" in error_line["response"]["body"]["error"]["message"]
    assert (cancelled_line["custom_id"], cancelled_line["error"]["code"]) == ("r4", "request_cancelled")
    output_file = client.get(f"/v1/files/{done['output_file_id']}").get_json()
    assert output_file["purpose"] == "batch_output"
    assert check(app, batch["id"]) == done  # a second check changes nothing


def test_one_check_at_a_time_finalizes_a_batch(app: Flask, client: FlaskClient) -> None:
    """Checks of an ended batch arrive together (the watch its last message asks for, the timed watch, the
    reconciler); each wrote the result files, four at once at the end of a 20,000-line batch. A check
    that finds another finalizing leaves the batch to it; once that one is gone, the next check finalizes."""
    from app.batches.lease import FINALIZE_KEY_PREFIX, lease_key

    batch = create_batch(client, [request_line(f"r{i}") for i in range(2)])
    ingest(app, batch["id"])
    for job in jobs_of(app, batch["id"]):
        run(app, job.id, JobStatus.SUCCEEDED, "done")
    key, files = lease_key(batch["id"], FINALIZE_KEY_PREFIX), stored_ids(app)
    assert services(app).redis.set(key, "1", ex=60)  # another check is writing the files
    with app.app_context():
        assert check_batch(lifecycle_context(app), batch["id"]) is False
    shown = client.get(f"/v1/batches/{batch['id']}").get_json()
    assert shown["status"] == "in_progress" and shown["output_file_id"] is None
    assert stored_ids(app) == files  # no result file was written
    services(app).redis.delete(key)  # it died (its lease expired) or it ended
    assert check(app, batch["id"])["status"] == "completed"
    assert services(app).redis.exists(key) == 0  # released


def test_a_batch_is_finalized_while_redis_is_down(app: Flask, client: FlaskClient) -> None:
    """No lease can be taken then: the check finalizes without one (a second finalizer's update loses)."""
    batch = create_batch(client, [request_line("r0")])
    ingest(app, batch["id"])
    run(app, jobs_of(app, batch["id"])[0].id, JobStatus.SUCCEEDED, "done")
    context = replace(lifecycle_context(app), redis_client=redis.Redis(port=1, socket_connect_timeout=0.2))
    with app.app_context():
        assert check_batch(context, batch["id"]) is True
    assert client.get(f"/v1/batches/{batch['id']}").get_json()["status"] == "completed"


def test_cancel_keeps_finished_results_and_stops_the_rest(app: Flask, client: FlaskClient) -> None:
    batch = create_batch(client, [request_line(f"r{i}") for i in range(5)])
    ingest(app, batch["id"])
    jobs = jobs_of(app, batch["id"])
    run(app, jobs[0].id, JobStatus.SUCCEEDED, "done before the cancel")
    claim(app, jobs[1].id)
    cancelling = client.post(f"/v1/batches/{batch['id']}/cancel").get_json()
    assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] is not None
    assert [j.status for j in jobs_of(app, batch["id"])] == ["succeeded", "running", "cancelled", "cancelled",
                                                               "cancelled"]  # fmt: skip
    assert services(app).redis.get(cancel_key(jobs[1].id)) == b"1"  # the worker's signal
    assert check(app, batch["id"])["status"] == "cancelling"  # the running job has not stopped yet
    assert client.post(f"/v1/batches/{batch['id']}/cancel").get_json()["status"] == "cancelling"
    finish(app, jobs[1].id, JobStatus.CANCELLED, "partial")
    cancelled = check(app, batch["id"])
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None
    assert cancelled["request_counts"] == {"total": 5, "completed": 1, "failed": 4}
    assert [line["custom_id"] for line in jsonl(client, cancelled["output_file_id"])] == ["r0"]
    errors = jsonl(client, cancelled["error_file_id"])
    assert [(e["custom_id"], e["error"]["code"], e["response"]) for e in errors] == [
        (f"r{i}", "batch_cancelled", None) for i in range(1, 5)
    ]
    assert client.post(f"/v1/batches/{batch['id']}/cancel").get_json()["status"] == "cancelled"


def test_the_unfinished_probe_after_each_line_is_one_index_seek(app: Flask, client: FlaskClient) -> None:
    """The worker asks after every line whether its batch has lines left; on batch_id's index alone that
    walked every finished line first (quadratic over a batch), on (batch_id, status) it seeks."""
    from app.batches.store import has_unfinished_jobs

    batch = create_batch(client, [request_line(f"r{i}") for i in range(3)])
    ingest(app, batch["id"])
    jobs = jobs_of(app, batch["id"])
    with app.app_context(), db_session() as session:
        assert has_unfinished_jobs(session, batch["id"])
        run(app, jobs[0].id, JobStatus.SUCCEEDED, "one")
        claim(app, jobs[1].id)
        run(app, jobs[2].id, JobStatus.FAILED, "boom")
        assert has_unfinished_jobs(session, batch["id"])  # the running one
        finish(app, jobs[1].id, JobStatus.CANCELLED, "partial")
        assert not has_unfinished_jobs(session, batch["id"])
        found = sa.inspect(session.connection()).get_indexes("jobs")
        indexes = {index["name"]: index["column_names"] for index in found}
        assert indexes.get("ix_jobs_batch_id_status") == ["batch_id", "status"]
        assert "ix_jobs_batch_id" not in indexes  # the composite index serves batch_id alone too
        if session.bind is not None and session.bind.dialect.name == "sqlite":
            probe = "SELECT id FROM jobs WHERE batch_id = 'b' AND status IN ('queued', 'running') LIMIT 1"
            plan = " ".join(str(row) for row in session.execute(sa.text(f"EXPLAIN QUERY PLAN {probe}")))
            assert "ix_jobs_batch_id_status (batch_id=? AND status=?)" in plan


def test_cancel_while_validating_creates_no_jobs(app: Flask, client: FlaskClient) -> None:
    batch = create_batch(client, [request_line("a")])
    assert client.post(f"/v1/batches/{batch['id']}/cancel").get_json()["status"] == "cancelling"
    assert ingest(app, batch["id"]) == "cancelling"
    assert jobs_of(app, batch["id"]) == []
    cancelled = check(app, batch["id"])
    assert (cancelled["status"], cancelled["output_file_id"], cancelled["error_file_id"]) == (
        "cancelled",
        None,
        None,
    )


def test_an_ended_batch_cannot_be_cancelled(app: Flask, client: FlaskClient) -> None:
    batch = create_batch(client, ["{bad"])
    ingest(app, batch["id"])
    error = error_of(client.post(f"/v1/batches/{batch['id']}/cancel"), 409)
    assert error["code"] == "batch_not_cancellable" and "failed" in error["message"]
    assert error_of(client.post("/v1/batches/batch_nope/cancel"), 404)["code"] == "batch_not_found"
    assert error_of(client.get("/v1/batches/batch_nope"), 404)["code"] == "batch_not_found"


def test_expiry_returns_what_finished_and_marks_the_rest_expired(app: Flask, client: FlaskClient) -> None:
    batch = create_batch(client, [request_line(f"r{i}") for i in range(3)])
    ingest(app, batch["id"])
    jobs = jobs_of(app, batch["id"])
    run(app, jobs[0].id, JobStatus.SUCCEEDED, "in time")
    claim(app, jobs[1].id)
    later = utcnow() + timedelta(hours=25)
    finalizing = check(app, batch["id"], now=later)
    assert finalizing["status"] == "finalizing" and finalizing["expired_at"] is not None
    assert services(app).redis.get(cancel_key(jobs[1].id)) == b"1"
    finish(app, jobs[1].id, JobStatus.CANCELLED)
    expired = check(app, batch["id"], now=later)
    assert expired["status"] == "expired"
    assert expired["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    assert [line["custom_id"] for line in jsonl(client, expired["output_file_id"])] == ["r0"]
    errors = jsonl(client, expired["error_file_id"])
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("r1", "batch_expired"),
        ("r2", "batch_expired"),
    ]


def test_batches_list_newest_first_with_live_counts(app: Flask, client: FlaskClient) -> None:
    with app.app_context(), db_session() as session:
        session.execute(sa.delete(Batch))
        session.commit()
    ids = [create_batch(client, [request_line("a")])["id"] for _ in range(3)]
    ingest(app, ids[0])
    page = client.get("/v1/batches?limit=2").get_json()
    assert [b["id"] for b in page["data"]] == [ids[2], ids[1]] and page["has_more"] is True
    rest = client.get(f"/v1/batches?after={page['last_id']}").get_json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert rest["data"][0]["request_counts"]["total"] == 1
    assert error_of(client.get("/v1/batches?limit=0"), 400)["param"] == "limit"


def test_redis_down_at_create_gives_503_and_leaves_no_batch(
    test_dir: Path, profiles_file: Path, database_url: str, client: FlaskClient
) -> None:
    file_id = upload(client, (request_line("a") + "\n").encode()).get_json()["id"]
    down = batch_app(test_dir, profiles_file, database_url, "redis://127.0.0.1:9/0")
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    with down.app_context(), db_session() as session:
        before = session.scalar(sa.select(sa.func.count()).select_from(Batch))
    assert error_of(down.test_client().post("/v1/batches", json=body), 503)["code"] == "queue_unavailable"
    with down.app_context(), db_session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Batch)) == before
    services(down).db_engine.dispose()


def test_an_output_line_carries_reasoning_under_both_keys() -> None:
    job = Job(
        id="job_x", profile="latency_first", request={}, request_hash="", task_id="t",
        content="Hello", reasoning="Greet back.", finish_reason="stop", created_at=utcnow(),
    )  # fmt: skip
    message = response_body(job)["choices"][0]["message"]
    assert (message["content"], message["reasoning"], message["reasoning_content"]) == (
        "Hello", "Greet back.", "Greet back.",
    )  # fmt: skip


def test_a_responses_line_answers_as_a_response_with_its_calls() -> None:
    call = {"id": "call_1", "name": "get_weather", "arguments": "{}"}
    job = Job(
        id="job_y", profile="p", request={"response": {"model": "m"}}, request_hash="", task_id="t",
        status="succeeded", content="", reasoning="Need it.", finish_reason="tool_calls", tool_calls=[call],
        prompt_tokens=4, completion_tokens=6, reasoning_tokens=3, created_at=utcnow(),
    )  # fmt: skip
    body = response_body(job)
    assert (body["object"], body["id"], body["status"]) == ("response", "resp_y", "completed")
    assert [item["type"] for item in body["output"]] == ["reasoning", "function_call"]
    assert body["output"][1]["call_id"] == "call_1"
    assert body["usage"]["output_tokens_details"] == {"reasoning_tokens": 3}
